#include "gateway/core/model.hpp"

#include <array>
#include <utility>

namespace segue::core {
namespace {

template <class E, std::size_t N>
std::string_view name_of(const std::array<std::pair<E, std::string_view>, N>& table, E v) {
    for (const auto& [e, n] : table)
        if (e == v)
            return n;
    return "unknown";
}

template <class E, std::size_t N>
std::optional<E> parse_of(const std::array<std::pair<E, std::string_view>, N>& table,
                          std::string_view s) {
    for (const auto& [e, n] : table)
        if (n == s)
            return e;
    return std::nullopt;
}

constexpr std::array<std::pair<task_status, std::string_view>, 7> task_statuses{{
    {task_status::queued, "queued"},
    {task_status::submitted, "submitted"},
    {task_status::running, "running"},
    {task_status::succeeded, "succeeded"},
    {task_status::partially_succeeded, "partially_succeeded"},
    {task_status::failed, "failed"},
    {task_status::canceled, "canceled"},
}};
constexpr std::array<std::pair<output_status, std::string_view>, 4> output_statuses{{
    {output_status::pending, "pending"},
    {output_status::ready, "ready"},
    {output_status::failed, "failed"},
    {output_status::canceled, "canceled"},
}};
constexpr std::array<std::pair<source_kind, std::string_view>, 3> source_kinds{{
    {source_kind::file, "file"},
    {source_kind::url, "url"},
    {source_kind::clip, "clip"},
}};
constexpr std::array<std::pair<error_class, std::string_view>, 7> error_classes{{
    {error_class::none, "none"},
    {error_class::transient, "transient"},
    {error_class::rate_limited, "rate_limited"},
    {error_class::quota, "quota"},
    {error_class::credential, "credential"},
    {error_class::rejected, "rejected"},
    {error_class::unknown, "unknown"},
}};

}  // namespace

std::string_view to_string(task_status s) noexcept {
    return name_of(task_statuses, s);
}
std::optional<task_status> parse_task_status(std::string_view s) noexcept {
    return parse_of(task_statuses, s);
}
std::string_view to_string(output_status s) noexcept {
    return name_of(output_statuses, s);
}
std::optional<output_status> parse_output_status(std::string_view s) noexcept {
    return parse_of(output_statuses, s);
}
std::string_view to_string(source_kind s) noexcept {
    return name_of(source_kinds, s);
}
std::optional<source_kind> parse_source_kind(std::string_view s) noexcept {
    return parse_of(source_kinds, s);
}
std::string_view to_string(error_class c) noexcept {
    return name_of(error_classes, c);
}
std::optional<error_class> parse_error_class(std::string_view s) noexcept {
    return parse_of(error_classes, s);
}

bool is_terminal(task_status s) noexcept {
    return s == task_status::succeeded || s == task_status::partially_succeeded ||
           s == task_status::failed || s == task_status::canceled;
}

}  // namespace segue::core
