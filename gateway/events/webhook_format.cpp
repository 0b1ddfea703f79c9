#include "gateway/events/webhook_format.hpp"

#include <stdexcept>

namespace segue::events {

void webhook_formats::add(std::string name, formatter f) {
    if (name.empty() || !f)
        throw std::invalid_argument("a webhook format needs a name and a formatter");
    if (formats_.contains(name))
        throw std::invalid_argument("webhook format '" + name + "' registered twice");
    formats_.emplace(std::move(name), std::move(f));
}

const formatter* webhook_formats::find(std::string_view name) const {
    auto it = formats_.find(name);
    return it == formats_.end() ? nullptr : &it->second;
}

}  // namespace segue::events
