#include "gateway/client/sse.hpp"

#include <charconv>

namespace segue::client {

std::vector<sse_event> sse_parser::feed(std::string_view chunk) {
    std::vector<sse_event> out;
    for (std::size_t i = 0; i < chunk.size(); ++i) {
        const char c = chunk[i];
        if (skip_lf_) {
            skip_lf_ = false;
            if (c == '\n')
                continue;
        }
        if (c == '\r' || c == '\n') {
            skip_lf_ = c == '\r';
            line(buffer_, out);
            buffer_.clear();
            continue;
        }
        buffer_.push_back(c);
    }
    return out;
}

void sse_parser::line(std::string_view l, std::vector<sse_event>& out) {
    if (l.empty()) {
        // A blank line dispatches the event (an event with no data is dropped, per the spec).
        if (has_data_)
            out.push_back({last_id_, type_.empty() ? "message" : type_, data_});
        type_.clear();
        data_.clear();
        has_data_ = false;
        return;
    }
    if (l.front() == ':')
        return;
    std::string_view field = l;
    std::string_view value;
    if (auto colon = l.find(':'); colon != std::string_view::npos) {
        field = l.substr(0, colon);
        value = l.substr(colon + 1);
        if (!value.empty() && value.front() == ' ')
            value.remove_prefix(1);
    }
    if (field == "event") {
        type_ = value;
    } else if (field == "data") {
        if (has_data_)
            data_.push_back('\n');
        data_.append(value);
        has_data_ = true;
    } else if (field == "id") {
        if (value.find('\0') == std::string_view::npos)
            last_id_ = value;
    } else if (field == "retry") {
        long ms = 0;
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
        if (ec == std::errc() && p == value.data() + value.size() && ms >= 0)
            retry_ms_ = ms;
    }
}

}  // namespace segue::client
