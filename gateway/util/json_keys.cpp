#include "gateway/util/json_keys.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <set>
#include <vector>

namespace segue::util {

namespace {

namespace json = boost::json;
using error_code = boost::system::error_code;

// A SAX handler that keeps the keys of each open object and stops at the first repeat.
struct key_handler {
    static constexpr std::size_t max_object_size = std::size_t(-1);
    static constexpr std::size_t max_array_size = std::size_t(-1);
    static constexpr std::size_t max_key_size = std::size_t(-1);
    static constexpr std::size_t max_string_size = std::size_t(-1);

    std::vector<std::set<std::string, std::less<>>> objects;  // innermost last
    std::string key;                                          // the key being read
    std::optional<std::string> duplicate;

    bool on_document_begin(error_code&) { return true; }
    bool on_document_end(error_code&) { return true; }
    bool on_object_begin(error_code&) {
        objects.emplace_back();
        return true;
    }
    bool on_object_end(std::size_t, error_code&) {
        objects.pop_back();
        return true;
    }
    bool on_array_begin(error_code&) { return true; }
    bool on_array_end(std::size_t, error_code&) { return true; }
    bool on_key_part(json::string_view s, std::size_t, error_code&) {
        key.append(s.data(), s.size());
        return true;
    }
    bool on_key(json::string_view s, std::size_t, error_code& ec) {
        key.append(s.data(), s.size());
        auto& keys = objects.back();
        if (!keys.contains(key)) {
            keys.insert(key);
            key.clear();
            return true;
        }
        // Stop here: the parse ends with an error, and `duplicate` says why.
        duplicate = std::move(key);
        ec = json::error::extra_data;
        return false;
    }
    bool on_string_part(json::string_view, std::size_t, error_code&) { return true; }
    bool on_string(json::string_view, std::size_t, error_code&) { return true; }
    bool on_number_part(json::string_view, error_code&) { return true; }
    bool on_int64(std::int64_t, json::string_view, error_code&) { return true; }
    bool on_uint64(std::uint64_t, json::string_view, error_code&) { return true; }
    bool on_double(double, json::string_view, error_code&) { return true; }
    bool on_bool(bool, error_code&) { return true; }
    bool on_null(error_code&) { return true; }
    bool on_comment_part(json::string_view, error_code&) { return true; }
    bool on_comment(json::string_view, error_code&) { return true; }
};

}  // namespace

std::optional<std::string> duplicate_json_key(std::string_view text) {
    json::parse_options opts;
    opts.allow_invalid_utf8 = true;  // as the request parsers: the fields' own checks name it
    opts.max_depth = 64;
    json::basic_parser<key_handler> p(opts);
    error_code ec;
    p.write_some(false, text.data(), text.size(), ec);
    return std::move(p.handler().duplicate);
}

}  // namespace segue::util
