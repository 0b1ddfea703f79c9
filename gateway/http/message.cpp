#include "gateway/http/message.hpp"

namespace segue::http {

std::string_view context::path() const {
    auto t = target();
    auto q = t.find('?');
    return q == std::string_view::npos ? t : t.substr(0, q);
}

std::string_view context::query() const {
    auto t = target();
    auto q = t.find('?');
    return q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
}

std::string_view context::param(std::string_view name) const {
    for (const auto& [k, v] : params_)
        if (k == name)
            return v;
    return {};
}

}  // namespace segue::http
