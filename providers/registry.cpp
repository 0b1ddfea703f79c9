#include "providers/registry.hpp"

#include <stdexcept>
#include <string>

#include "providers/musicapi/musicapi.hpp"
#include "providers/musicgpt/musicgpt.hpp"
#include "providers/sandbox/sandbox.hpp"

namespace segue::providers {

boost::asio::awaitable<void> provider::cancel(const task_view&, services&) {
    co_return;
}

std::optional<update> provider::on_webhook(const task_view&, const inbound_webhook&,
                                           std::string& error) const {
    error = "this provider does not take webhooks";
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

std::unique_ptr<registry> make_registry(const config::settings& settings) {
    auto r = std::make_unique<registry>();
    if (settings.providers.sandbox.enabled)
        r->add(std::make_unique<sandbox::sandbox_provider>(settings.providers.sandbox));
    if (settings.providers.musicgpt.enabled)
        r->add(std::make_unique<musicgpt::musicgpt_provider>(settings.providers.musicgpt));
    if (settings.providers.musicapi.enabled)
        r->add(std::make_unique<musicapi::musicapi_provider>(settings.providers.musicapi));
    return r;
}

}  // namespace segue::providers
