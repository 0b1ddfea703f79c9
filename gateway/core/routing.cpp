#include "gateway/core/routing.hpp"

#include <algorithm>
#include <cmath>

#include "providers/provider.hpp"

namespace segue::core {

namespace {

// Why one provider cannot serve a request (the first unmet need, in this order).
enum class unfit { none, not_configured, file, file_link, url, clip, length, outputs };

unfit check(const providers::capabilities* c, const routing_request& req) {
    if (!c)
        return unfit::not_configured;
    switch (req.source) {
        case source_kind::file:
            if (!c->source_file)
                return unfit::file;
            if (c->file_by_public_url && !req.public_url)
                return unfit::file_link;
            break;
        case source_kind::url:
            if (!c->source_url)
                return unfit::url;
            break;
        case source_kind::clip:
            if (!c->source_clip)
                return unfit::clip;
            break;
    }
    if (req.wants_length && !c->length)
        return unfit::length;
    if (req.num_outputs > c->max_outputs)
        return unfit::outputs;
    return unfit::none;
}

std::string in_quotes(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    out += '\'';
    out += s;
    out += '\'';
    return out;
}

std::string outputs_word(int n) {
    return std::to_string(n) + (n == 1 ? " output" : " outputs");
}

// "'<provider>' does not accept file sources"
std::string one_reason(std::string_view provider, unfit u, const providers::capabilities* c,
                       const routing_request& req) {
    const std::string p = in_quotes(provider);
    switch (u) {
        case unfit::none:
            break;
        case unfit::not_configured:
            return p + " is not configured";
        case unfit::file:
            return p + " does not accept file sources";
        case unfit::file_link:
            return p +
                   " takes file sources only by the gateway's link (api.public_base_url is "
                   "not set)";
        case unfit::url:
            return p + " does not accept url sources";
        case unfit::clip:
            return p + " does not accept clip sources";
        case unfit::length:
            return p + " does not support length";
        case unfit::outputs:
            return p + " supports at most " + outputs_word(c ? c->max_outputs : 0) + ", not " +
                   std::to_string(req.num_outputs);
    }
    return p;
}

// The predicate of "no provider in route 'x' ..." when every entry failed the same way.
std::string common_reason(unfit u, const routing_request& req) {
    switch (u) {
        case unfit::none:
            break;
        case unfit::not_configured:
            return "is configured";
        case unfit::file:
        case unfit::file_link:
            return "accepts file sources";
        case unfit::url:
            return "accepts url sources";
        case unfit::clip:
            return "accepts clip sources";
        case unfit::length:
            return "supports length";
        case unfit::outputs:
            return "supports " + outputs_word(req.num_outputs);
    }
    return "can serve this request";
}

void set(std::string* out, std::string text) {
    if (out)
        *out = std::move(text);
}

// A single forced provider (clip owner or pin): [provider] if it can serve the request.
std::vector<std::string> single(const std::string& provider, const routing_request& req,
                                const capability_lookup& caps, std::string_view role,
                                std::string* why_empty) {
    const providers::capabilities* c = caps ? caps(provider) : nullptr;
    const unfit u = check(c, req);
    if (u != unfit::none) {
        set(why_empty, std::string(role) + one_reason(provider, u, c, req));
        return {};
    }
    set(why_empty, {});
    return {provider};
}

bool has_weight(double w) {
    return std::isfinite(w) && w > 0;
}

}  // namespace

routing_request make_routing_request(const extend_request& request) {
    routing_request r;
    r.source = request.source;
    r.clip_provider = request.clip_provider;
    r.num_outputs = request.num_outputs;
    r.wants_length = request.length.has_value();
    r.pinned_provider = request.provider;
    return r;
}

std::vector<std::string> plan_route(const route& r, const routing_request& req,
                                    const capability_lookup& caps, double unit_random,
                                    std::string* why_empty) {
    if (req.source == source_kind::clip) {
        if (req.clip_provider.empty()) {
            set(why_empty, "a clip source must name the provider that owns the clip");
            return {};
        }
        if (req.pinned_provider && *req.pinned_provider != req.clip_provider) {
            set(why_empty, "the clip belongs to provider " + in_quotes(req.clip_provider) +
                               " but the request pins provider " + in_quotes(*req.pinned_provider));
            return {};
        }
        return single(req.clip_provider, req, caps, "the clip's provider: ", why_empty);
    }
    if (req.pinned_provider)
        return single(*req.pinned_provider, req, caps, "the pinned provider: ", why_empty);

    if (r.chain.empty()) {
        set(why_empty, "route " + in_quotes(r.name) + " has no providers");
        return {};
    }

    // The capable entries in chain order, each provider once.
    std::vector<const route_entry*> capable;
    std::vector<std::string> seen;
    std::vector<std::string> reasons;
    std::optional<unfit> same;  // the one reason shared by every skipped entry, if any
    bool mixed = false;
    for (const route_entry& e : r.chain) {
        if (std::find(seen.begin(), seen.end(), e.provider) != seen.end())
            continue;
        seen.push_back(e.provider);
        const providers::capabilities* c = caps ? caps(e.provider) : nullptr;
        const unfit u = check(c, req);
        if (u == unfit::none) {
            capable.push_back(&e);
            continue;
        }
        reasons.push_back(one_reason(e.provider, u, c, req));
        if (!same)
            same = u;
        else if (*same != u)
            mixed = true;
    }
    if (capable.empty()) {
        if (!mixed && same) {
            set(why_empty,
                "no provider in route " + in_quotes(r.name) + " " + common_reason(*same, req));
        } else {
            std::string text =
                "no provider in route " + in_quotes(r.name) + " can serve this request (";
            for (std::size_t i = 0; i < reasons.size(); ++i) {
                if (i)
                    text += "; ";
                text += reasons[i];
            }
            text += ')';
            set(why_empty, std::move(text));
        }
        return {};
    }

    // The first pick: weighted among the capable weighted entries, else the first capable.
    std::size_t first = 0;
    double total = 0;
    for (const route_entry* e : capable)
        if (has_weight(e->weight))
            total += e->weight;
    if (total > 0 && std::isfinite(total)) {
        const double u = std::isnan(unit_random) ? 0.0 : std::clamp(unit_random, 0.0, 1.0);
        double cum = 0;
        std::optional<std::size_t> last_weighted;
        std::optional<std::size_t> pick;
        for (std::size_t i = 0; i < capable.size(); ++i) {
            if (!has_weight(capable[i]->weight))
                continue;
            last_weighted = i;
            cum += capable[i]->weight;
            // Compared as a fraction so that evenly spaced draws give exact proportions.
            if (u < cum / total) {
                pick = i;
                break;
            }
        }
        // u == 1 (or rounding at the top end): the last weighted entry.
        first = pick ? *pick : *last_weighted;
    }

    std::vector<std::string> plan;
    plan.reserve(capable.size());
    plan.push_back(capable[first]->provider);
    for (std::size_t i = 0; i < capable.size(); ++i)
        if (i != first)
            plan.push_back(capable[i]->provider);
    set(why_empty, {});
    return plan;
}

}  // namespace segue::core
