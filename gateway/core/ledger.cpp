#include "gateway/core/ledger.hpp"

#include <algorithm>

#include <boost/json.hpp>

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <system_error>

#include "gateway/config/provider_config.hpp"
#include "gateway/core/json.hpp"

namespace segue::core {

namespace json = boost::json;

std::optional<std::int64_t> credits_to_milli(double credits) {
    if (!std::isfinite(credits) || credits < 0 || credits > max_credits)
        return std::nullopt;
    if (credits == 0)  // also -0.0, whose text would carry a sign
        return 0;
    // The shortest fixed-notation text that reads back as `credits`: the decimal the writer
    // meant. At most 13 integer digits (max_credits) and a few hundred fraction digits.
    char buf[400];
    const auto r = std::to_chars(buf, buf + sizeof buf, credits, std::chars_format::fixed);
    if (r.ec != std::errc())
        return std::nullopt;
    const std::string_view text(buf, static_cast<std::size_t>(r.ptr - buf));
    const auto dot = text.find('.');
    const std::string_view whole = text.substr(0, dot);
    const std::string_view frac =
        dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
    std::int64_t milli = 0;
    for (char c : whole)
        milli = milli * 10 + (c - '0');
    for (std::size_t i = 0; i < 3; ++i)
        milli = milli * 10 + (i < frac.size() ? frac[i] - '0' : 0);
    if (frac.size() > 3 && frac[3] >= '5')
        ++milli;
    return milli;
}

double milli_to_credits(std::int64_t milli) {
    return static_cast<double>(milli) / static_cast<double>(milli_per_credit);
}

std::string format_credits(std::int64_t milli) {
    std::string out;
    // Magnitude as unsigned: -INT64_MIN does not fit in int64.
    std::uint64_t mag =
        milli < 0 ? ~static_cast<std::uint64_t>(milli) + 1 : static_cast<std::uint64_t>(milli);
    if (milli < 0)
        out.push_back('-');
    out += std::to_string(mag / 1000);
    std::uint64_t frac = mag % 1000;
    if (frac != 0) {
        char digits[4] = {static_cast<char>('0' + frac / 100),
                          static_cast<char>('0' + frac / 10 % 10),
                          static_cast<char>('0' + frac % 10), '\0'};
        std::string_view d(digits, 3);
        while (d.back() == '0')
            d.remove_suffix(1);
        out.push_back('.');
        out += d;
    }
    return out;
}

json::value credits_value(std::int64_t milli) {
    if (milli % milli_per_credit == 0)
        return json::value(milli / milli_per_credit);
    return json::value(milli_to_credits(milli));
}

std::int64_t share_of(std::int64_t total, int outputs, int index) {
    if (outputs < 1)
        throw std::invalid_argument("share_of: outputs must be at least 1");
    if (index < 1 || index > outputs)
        throw std::invalid_argument("share_of: index must be within 1..outputs");
    if (total < 0)
        throw std::invalid_argument("share_of: negative total");
    const std::int64_t base = total / outputs;
    const std::int64_t remainder = total % outputs;
    return base + (index <= remainder ? 1 : 0);
}

json::object ledger_entry_document(const store::ledger_row& e) {
    json::object o;
    o["id"] = e.id;
    o["kind"] = e.kind;
    o["amount"] = credits_value(e.amount_milli);
    if (!e.task_id.empty()) {
        o["task_id"] = e.task_id;
        if (e.output > 0)
            o["output"] = e.output;
    }
    if (!e.provider.empty())
        o["provider"] = e.provider;
    if (!e.note.empty())
        o["note"] = e.note;
    o["created_at"] = iso8601(e.created_at);
    return o;
}

json::object ledger_totals_document(std::string_view tenant, const store::ledger_balance& b) {
    json::object o;
    o["tenant"] = tenant;
    o["balance"] = credits_value(b.balance);
    o["held"] = credits_value(b.held);
    o["available"] = credits_value(b.available);
    o["captured"] = credits_value(b.captured);
    o["granted"] = credits_value(b.granted);
    o["unit"] = "credits";
    return o;
}

std::int64_t provider_price_milli(const config::settings& settings, std::string_view provider) {
    // Each provider's price is a setting of its own block, declared by its descriptor.
    auto it = settings.providers.find(std::string(provider));
    if (it == settings.providers.end() || !it->second)
        return 0;
    return credits_to_milli(it->second->price()).value_or(0);
}

std::int64_t estimate_hold_milli(const config::settings& settings, std::string_view provider,
                                 int num_outputs) {
    return provider_price_milli(settings, provider) * std::max(1, num_outputs);
}

}  // namespace segue::core
