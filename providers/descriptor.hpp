#pragma once
// A provider descriptor: everything the gateway needs to know about one kind of provider, declared
// in the provider's own folder. Adding a provider is a folder with a descriptor plus one line in
// providers/builtin.cpp; nothing under gateway/ changes.
//
//   name          the provider's name: its config block (providers.<name>), its routes' entries,
//                 its webhook path (/v1/providers/<name>/webhooks/...), its metrics label.
//   settings      its config block: an object_schema of its own settings struct (bounds, docs,
//                 secrets; every block has `enabled` and `price`), feeding loading,
//                 --check-config and the generated reference (config/README.md).
//   price model   credits per output, from its own block (`price`): held when a task is routed
//                 here first, captured per ready output (gateway/core/ledger.cpp asks the block).
//   capabilities  what it can do (source kinds, length, outputs, webhooks, polling, ...): the
//                 provider it builds reports them (provider::caps()); they may depend on its
//                 settings (a webhook secret turns webhooks on).
//   factory       builds the provider from its parsed block, when the block is enabled.
//   compat        optional: a drop-in API in the provider's own shapes (providers/<name>/compat/,
//                 gateway/api/compat.hpp), installed whether or not the provider is enabled: a
//                 request in its shape may be served by any provider.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/config/provider_config.hpp"
#include "providers/provider.hpp"

namespace segue::api {
struct compat_host;
}

namespace segue::providers {

struct descriptor {
    std::string name;
    std::shared_ptr<const config::provider_schema> settings;
    std::function<std::unique_ptr<provider>(const config::provider_config&)> make;
    std::function<void(api::compat_host&)> compat;
};

// A descriptor whose block is the settings struct S (with `bool enabled`, `double price`).
template <class S>
descriptor make_descriptor(std::string name, std::string description,
                           config::object_schema<S> schema,
                           std::function<std::unique_ptr<provider>(const S&)> make) {
    using typed = config::typed_provider_schema<S>;
    descriptor d;
    d.name = name;
    d.settings =
        std::make_shared<const typed>(std::move(name), std::move(description), std::move(schema));
    d.make = [make = std::move(make)](const config::provider_config& c) {
        return make(typed::typed(c));
    };
    return d;
}

using descriptor_list = std::vector<const descriptor*>;

// Whether `url` is an absolute http(s) URL with a host: a provider's base_url ("http://" alone,
// or one naming only a port, would fail every task with a bad_url).
inline bool is_http_url_with_host(std::string_view url) {
    std::string_view rest;
    if (url.starts_with("https://"))
        rest = url.substr(8);
    else if (url.starts_with("http://"))
        rest = url.substr(7);
    else
        return false;
    auto authority = rest.substr(0, rest.find_first_of("/?#"));
    if (const auto at = authority.rfind('@'); at != std::string_view::npos)
        authority.remove_prefix(at + 1);
    return !authority.empty() && authority.front() != ':';
}

// The config layer's view of the descriptors: their settings blocks, in order.
config::provider_catalog settings_catalog(const descriptor_list& descriptors);

}  // namespace segue::providers
