#include "providers/registry.hpp"

#include <stdexcept>
#include <string>

#include "gateway/config/provider_config.hpp"
#include "providers/descriptor.hpp"

namespace segue::providers {

boost::asio::awaitable<void> provider::cancel(const task_view&, services&) {
    co_return;
}

std::optional<update> provider::on_webhook(const task_view&, const inbound_webhook&,
                                           webhook_refusal& refused) const {
    refused.message = "this provider does not take webhooks";
    return std::nullopt;
}

void registry::add(std::unique_ptr<provider> p) {
    if (find(p->name()))
        throw std::invalid_argument("duplicate provider " + std::string(p->name()));
    providers_.push_back(std::move(p));
}

provider* registry::find(std::string_view name) const {
    for (const auto& p : providers_)
        if (p->name() == name)
            return p.get();
    return nullptr;
}

std::vector<provider*> registry::all() const {
    std::vector<provider*> out;
    for (const auto& p : providers_)
        out.push_back(p.get());
    return out;
}

std::unique_ptr<registry> make_registry(const std::vector<const descriptor*>& descriptors,
                                        const config::settings& settings) {
    auto r = std::make_unique<registry>();
    for (const descriptor* d : descriptors) {
        auto it = settings.providers.find(d->name);
        if (it == settings.providers.end() || !it->second || !it->second->enabled())
            continue;
        auto p = d->make(*it->second);
        if (p->name() != d->name)
            throw std::invalid_argument("provider descriptor '" + d->name + "' built '" +
                                        std::string(p->name()) + "'");
        r->add(std::move(p));
    }
    return r;
}

config::provider_catalog settings_catalog(const descriptor_list& descriptors) {
    config::provider_catalog out;
    for (const descriptor* d : descriptors)
        out.push_back(d->settings);
    return out;
}

}  // namespace segue::providers
