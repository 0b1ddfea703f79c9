// The non-template half of the schema machinery (schema.hpp): scalar codecs, ${VAR}
// substitution, "did you mean" suggestions, the YAML emitter and the Markdown renderer.

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/schema.hpp"

namespace segue::config {
namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

void skip_spaces(std::string_view s, std::size_t& i) {
    while (i < s.size() && s[i] == ' ')
        ++i;
}

// Digits at s[i...] as an unsigned number; false when there are none or on overflow.
bool read_number(std::string_view s, std::size_t& i, std::uint64_t& out, bool& overflow) {
    std::size_t start = i;
    while (i < s.size() && is_digit(s[i]))
        ++i;
    if (i == start)
        return false;
    auto [p, ec] = std::from_chars(s.data() + start, s.data() + i, out);
    overflow = ec == std::errc::result_out_of_range;
    return true;
}

// Optimal string alignment distance (a transposition counts as one edit), case-insensitive.
std::size_t edit_distance(std::string_view a_in, std::string_view b_in) {
    std::string a = lower(a_in), b = lower(b_in);
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i)
        d[i][0] = i;
    for (std::size_t j = 0; j <= b.size(); ++j)
        d[0][j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    }
    return d[a.size()][b.size()];
}

std::string yaml_double_quoted(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\r':
                out += "\\r";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

std::string scalar_repr(const yaml_node& n) {
    if (n.quoted || n.text.empty())
        return yaml_double_quoted(n.text);
    return n.text;
}

std::string key_repr(const std::string& key) {
    static const std::vector<std::string_view> null_like = {"~", "null", "Null", "NULL"};
    bool plain = !key.empty() && (is_alpha(key[0]) || is_digit(key[0]) || key[0] == '_') &&
                 std::all_of(key.begin(), key.end(),
                             [](char c) {
                                 return is_alpha(c) || is_digit(c) || c == '_' || c == '-' ||
                                        c == '.' || c == '/';
                             }) &&
                 std::find(null_like.begin(), null_like.end(), key) == null_like.end();
    return plain ? key : yaml_double_quoted(key);
}

void emit_sequence(const yaml_node& n, int indent, std::string& out);

void emit_mapping(const yaml_node& n, int indent, std::string& out) {
    std::string pad(indent, ' ');
    for (const auto& e : n.entries) {
        out += pad + key_repr(e.key) + ":";
        const yaml_node& v = e.value;
        switch (v.type) {
            case yaml_node::kind::null:
                out += " ~\n";
                break;
            case yaml_node::kind::scalar:
                out += " " + scalar_repr(v) + "\n";
                break;
            case yaml_node::kind::mapping:
                if (v.entries.empty()) {
                    out += " {}\n";
                } else {
                    out += "\n";
                    emit_mapping(v, indent + 2, out);
                }
                break;
            case yaml_node::kind::sequence:
                if (v.items.empty()) {
                    out += " []\n";
                } else {
                    out += "\n";
                    emit_sequence(v, indent + 2, out);
                }
                break;
        }
    }
}

void emit_sequence(const yaml_node& n, int indent, std::string& out) {
    std::string pad(indent, ' ');
    for (const auto& item : n.items) {
        switch (item.type) {
            case yaml_node::kind::null:
                out += pad + "- ~\n";
                break;
            case yaml_node::kind::scalar:
                out += pad + "- " + scalar_repr(item) + "\n";
                break;
            case yaml_node::kind::mapping:
                if (item.entries.empty()) {
                    out += pad + "- {}\n";
                } else {
                    // The first key goes on the dash line: "- name: a\n  key: b".
                    std::string block;
                    emit_mapping(item, indent + 2, block);
                    out += pad + "- " + block.substr(static_cast<std::size_t>(indent) + 2);
                }
                break;
            case yaml_node::kind::sequence:
                if (item.items.empty()) {
                    out += pad + "- []\n";
                } else {
                    out += pad + "-\n";
                    emit_sequence(item, indent + 2, out);
                }
                break;
        }
    }
}

std::string markdown_cell(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == '|')
            out += "\\|";
        else if (c == '\n')
            out += ' ';
        else
            out += c;
    }
    return out;
}

// host:port or [v6]:port; returns the error, or fills `out`.
std::optional<std::string> split_host_port(std::string_view text, host_port& out) {
    const std::string example = " (e.g. 127.0.0.1:8080 or [::1]:8080; port 0 picks a free port)";
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos)
            return "missing ']' after the IPv6 address" + example;
        host = text.substr(1, close - 1);
        std::string_view rest = text.substr(close + 1);
        if (rest.empty() || rest.front() != ':')
            return "expected a :port after the IPv6 address" + example;
        port = rest.substr(1);
        bool ok = host.find(':') != std::string_view::npos &&
                  std::all_of(host.begin(), host.end(), [](char c) {
                      return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.' ||
                             c == '%' || is_alpha(c) || is_digit(c);
                  });
        if (!ok)
            return detail::quote(host) + " is not an IPv6 address";
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos)
            return detail::quote(text) + " is not host:port" + example;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            return "an IPv6 address must be in brackets, e.g. [::1]:8080";
        if (host.empty())
            return "the host is empty (use 0.0.0.0:PORT to listen on every interface)";
        bool ok = std::all_of(host.begin(), host.end(), [](char c) {
            return is_alpha(c) || is_digit(c) || c == '.' || c == '-' || c == '_';
        });
        if (!ok)
            return detail::quote(host) + " is not a valid host name or IPv4 address";
    }
    auto n = detail::parse_unsigned(port);
    if (!n || port.size() > 5 || *n > 65535)
        return "the port must be a number from 0 to 65535, got " + detail::quote(port);
    out.host = std::string(host);
    out.port = static_cast<std::uint16_t>(*n);
    return std::nullopt;
}

}  // namespace

std::string emit_yaml(const yaml_node& root) {
    std::string out;
    switch (root.type) {
        case yaml_node::kind::null:
            return "~\n";
        case yaml_node::kind::scalar:
            return scalar_repr(root) + "\n";
        case yaml_node::kind::mapping:
            if (root.entries.empty())
                return "{}\n";
            emit_mapping(root, 0, out);
            return out;
        case yaml_node::kind::sequence:
            if (root.items.empty())
                return "[]\n";
            emit_sequence(root, 0, out);
            return out;
    }
    return out;
}

std::optional<host_port> parse_host_port(std::string_view text) {
    host_port out;
    if (split_host_port(text, out))
        return std::nullopt;
    return out;
}

namespace detail {

std::string join_key(const std::string& parent, std::string_view key) {
    return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

int line_at(const yaml_node& node, std::string_view path) {
    const yaml_node* at = &node;
    int line = node.line;
    std::size_t i = 0;
    while (i < path.size()) {
        if (path[i] == '.') {
            ++i;
            continue;
        }
        if (path[i] == '[') {  // a list index
            const auto close = path.find(']', i);
            if (close == std::string_view::npos || at->type != yaml_node::kind::sequence)
                return line;
            std::size_t n = 0;
            for (auto c : path.substr(i + 1, close - i - 1))
                n = n * 10 + static_cast<std::size_t>(c - '0');
            if (n >= at->items.size())
                return line;
            at = &at->items[n];
            line = at->line ? at->line : line;
            i = close + 1;
            continue;
        }
        const auto end = path.find_first_of(".[", i);
        const auto key = path.substr(i, end == std::string_view::npos ? path.npos : end - i);
        if (at->type != yaml_node::kind::mapping)
            return line;
        const yaml_entry* found = nullptr;
        for (const auto& e : at->entries)
            if (e.key == key)
                found = &e;
        if (!found)
            return line;
        line = found->line ? found->line : line;
        at = &found->value;
        i = end == std::string_view::npos ? path.size() : end;
    }
    return line;
}

std::string join_index(const std::string& parent, std::size_t index) {
    return parent + "[" + std::to_string(index) + "]";
}

std::string_view type_name(value_kind k) {
    switch (k) {
        case value_kind::boolean:
            return "bool";
        case value_kind::integer:
            return "integer";
        case value_kind::number:
            return "number";
        case value_kind::string:
            return "string";
        case value_kind::secret:
            return "secret string";
        case value_kind::duration:
            return "duration";
        case value_kind::byte_size:
            return "byte size";
        case value_kind::enumeration:
            return "enum";
    }
    return "value";
}

std::string_view type_with_article(value_kind k) {
    switch (k) {
        case value_kind::boolean:
            return "true or false";
        case value_kind::integer:
            return "an integer";
        case value_kind::number:
            return "a number";
        case value_kind::string:
            return "a string";
        case value_kind::secret:
            return "a string";
        case value_kind::duration:
            return "a duration";
        case value_kind::byte_size:
            return "a byte size";
        case value_kind::enumeration:
            return "a single value";
    }
    return "a value";
}

std::string_view node_with_article(yaml_node::kind k) {
    switch (k) {
        case yaml_node::kind::null:
            return "an empty value";
        case yaml_node::kind::scalar:
            return "a single value";
        case yaml_node::kind::sequence:
            return "a list";
        case yaml_node::kind::mapping:
            return "a mapping";
    }
    return "something else";
}

std::string quote(std::string_view text) {
    return "'" + std::string(text) + "'";
}

std::string code(std::string_view text) {
    return "`" + std::string(text) + "`";
}

std::optional<std::string> scalar_text(const yaml_node& node, const std::string& path,
                                       value_kind expected, load_context& ctx) {
    if (node.type != yaml_node::kind::scalar) {
        std::string message = "expected " + std::string(type_with_article(expected)) + ", got " +
                              std::string(node_with_article(node.type));
        if (node.type == yaml_node::kind::null &&
            (expected == value_kind::string || expected == value_kind::secret))
            message += " (write \"\" for an empty string)";
        ctx.error(node.line, path, std::move(message));
        return std::nullopt;
    }
    // ${VAR} / ${VAR:-default} from the environment; $${ is a literal ${.
    const std::string& in = node.text;
    std::string out;
    bool ok = true;
    for (std::size_t i = 0; i < in.size();) {
        if (in.compare(i, 3, "$${") == 0) {
            out += "${";
            i += 3;
            continue;
        }
        if (in.compare(i, 2, "${") != 0) {
            out += in[i++];
            continue;
        }
        auto close = in.find('}', i + 2);
        if (close == std::string::npos) {
            ctx.error(node.line, path, "unterminated ${ (write $${ for a literal ${)");
            return std::nullopt;
        }
        std::string_view inner(in.data() + i + 2, close - i - 2);
        std::optional<std::string_view> fallback;
        if (auto sep = inner.find(":-"); sep != std::string_view::npos) {
            fallback = inner.substr(sep + 2);
            inner = inner.substr(0, sep);
        }
        bool valid_name = !inner.empty() && !is_digit(inner[0]) &&
                          std::all_of(inner.begin(), inner.end(), [](char c) {
                              return is_alpha(c) || is_digit(c) || c == '_';
                          });
        if (!valid_name) {
            ctx.error(node.line, path,
                      "invalid environment variable name " + quote(inner) +
                          " in ${...} (letters, digits and _; write $${ for a literal ${)");
            ok = false;
        } else {
            std::optional<std::string> value;
            if (ctx.env && *ctx.env)
                value = (*ctx.env)(std::string(inner));
            // As in the shell, :- also replaces a variable that is set but empty.
            if (value && !(fallback && value->empty())) {
                out += *value;
            } else if (fallback) {
                out += *fallback;
            } else {
                ctx.error(node.line, path,
                          "environment variable " + std::string(inner) + " is not set (use ${" +
                              std::string(inner) + ":-default} to give a default)");
                ok = false;
            }
        }
        i = close + 1;
    }
    if (!ok)
        return std::nullopt;
    return out;
}

std::optional<std::string> closest(std::string_view word, const std::vector<std::string>& options) {
    std::optional<std::string> best;
    std::size_t best_distance = 3;
    for (const auto& option : options) {
        std::size_t d = edit_distance(word, option);
        // A truncated or extended name ("warning" for "warn") also counts as close.
        std::string w = lower(word), o = lower(option);
        if (std::min(w.size(), o.size()) >= 3 && (w.starts_with(o) || o.starts_with(w)))
            d = std::min<std::size_t>(d, 2);
        // Short words need a closer match, or "lvl" would suggest "log".
        if (d < best_distance && d <= std::max<std::size_t>(1, word.size() / 2)) {
            best = option;
            best_distance = d;
        }
    }
    return best;
}

std::string unknown_key_message(std::string_view key, const std::vector<std::string>& siblings,
                                const std::vector<std::string>& known_paths) {
    std::string message = "unknown setting";
    if (auto guess = closest(key, siblings))
        return message + " (did you mean " + quote(*guess) + "?)";
    // The right name in the wrong section, e.g. max_body_bytes under server.
    std::vector<std::string> elsewhere;
    for (const auto& path : known_paths) {
        auto dot = path.rfind('.');
        std::string_view last = dot == std::string::npos ? std::string_view(path)
                                                         : std::string_view(path).substr(dot + 1);
        if (last == key)
            elsewhere.push_back(path);
    }
    if (!elsewhere.empty()) {
        message += " here (did you mean ";
        for (std::size_t i = 0; i < elsewhere.size() && i < 3; ++i)
            message += (i ? " or " : "") + quote(elsewhere[i]);
        return message + "?)";
    }
    if (siblings.empty())
        return message + " (nothing can be set here)";
    message += "; expected one of: ";
    for (std::size_t i = 0; i < siblings.size(); ++i)
        message += (i ? ", " : "") + siblings[i];
    return message;
}

std::optional<bool> parse_bool(std::string_view text) {
    std::string t = lower(text);
    if (t == "true" || t == "yes" || t == "on")
        return true;
    if (t == "false" || t == "no" || t == "off")
        return false;
    return std::nullopt;
}

std::optional<std::int64_t> parse_signed(std::string_view text) {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc() || p != text.data() + text.size())
        return std::nullopt;
    return v;
}

std::optional<std::uint64_t> parse_unsigned(std::string_view text) {
    std::uint64_t v = 0;
    // from_chars rejects a leading '-' for unsigned types, as wanted.
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc() || p != text.data() + text.size())
        return std::nullopt;
    return v;
}

std::optional<double> parse_double(std::string_view text) {
    double v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc() || p != text.data() + text.size() || !std::isfinite(v))
        return std::nullopt;
    return v;
}

std::optional<duration> parse_duration(std::string_view text, std::string& error) {
    const std::string hint = " (e.g. 250ms, 10s, 5m, 2h or 1m30s)";
    if (text == "0")
        return duration::zero();
    constexpr auto max_ms = static_cast<std::uint64_t>(std::numeric_limits<duration::rep>::max());
    std::uint64_t total = 0;
    std::uint64_t last_scale = 0;  // parts come largest unit first, each unit once
    std::size_t i = 0;
    skip_spaces(text, i);
    if (i == text.size()) {
        error = "expected a duration, got an empty string" + hint;
        return std::nullopt;
    }
    while (i < text.size()) {
        std::uint64_t n = 0;
        bool overflow = false;
        if (!read_number(text, i, n, overflow)) {
            error = quote(text) + " is not a duration" + hint;
            return std::nullopt;
        }
        skip_spaces(text, i);
        std::size_t unit_start = i;
        while (i < text.size() && is_alpha(text[i]))
            ++i;
        std::string_view unit = text.substr(unit_start, i - unit_start);
        if (unit.empty()) {
            // A bare number is refused: "30" could mean seconds or milliseconds.
            if (text.find_first_not_of("0123456789") == std::string_view::npos)
                error = quote(text) + " has no unit; write e.g. " + std::string(text) +
                        "s for seconds or " + std::string(text) + "ms for milliseconds";
            else
                error = quote(text) + " is not a duration" + hint;
            return std::nullopt;
        }
        std::uint64_t scale = 0;
        if (unit == "ms")
            scale = 1;
        else if (unit == "s")
            scale = 1000;
        else if (unit == "m")
            scale = 60 * 1000;
        else if (unit == "h")
            scale = 60 * 60 * 1000;
        if (scale == 0) {
            error = "unknown duration unit " + quote(unit) + " in " + quote(text) +
                    " (use ms, s, m or h)";
            return std::nullopt;
        }
        if (last_scale != 0 && scale >= last_scale) {
            // "30s1m" or "1m1m": a typo, not a sum (what was meant is not clear).
            error = quote(text) +
                    " is not a duration: its parts must go from the largest unit "
                    "to the smallest, each once" +
                    hint;
            return std::nullopt;
        }
        last_scale = scale;
        if (overflow || n > (max_ms - total) / scale) {
            error = quote(text) + " is too long a duration";
            return std::nullopt;
        }
        total += n * scale;
        skip_spaces(text, i);
    }
    return duration(static_cast<duration::rep>(total));
}

std::optional<std::uint64_t> parse_byte_size(std::string_view text, std::string& error) {
    const std::string hint = " (e.g. 4096, 16KiB, 1MiB or 2GiB)";
    std::size_t i = 0;
    std::uint64_t n = 0;
    bool overflow = false;
    if (!read_number(text, i, n, overflow)) {
        error = quote(text) + " is not a byte size" + hint;
        return std::nullopt;
    }
    skip_spaces(text, i);
    std::string_view unit = text.substr(i);
    std::string u = lower(unit);
    std::uint64_t scale = 0;
    if (u.empty() || u == "b")
        scale = 1;
    else if (u == "kib")
        scale = KiB;
    else if (u == "mib")
        scale = MiB;
    else if (u == "gib")
        scale = GiB;
    else if (u == "tib")
        scale = 1024 * GiB;
    if (scale == 0) {
        static const std::vector<std::string_view> si = {"k", "kb", "m",  "mb", "g",  "gb",
                                                         "t", "tb", "ki", "mi", "gi", "ti"};
        if (std::find(si.begin(), si.end(), u) != si.end())
            error = "ambiguous size unit " + quote(unit) + " in " + quote(text) +
                    ": use KiB, MiB or GiB (powers of 1024) or a plain number of bytes";
        else
            error = quote(text) + " is not a byte size" + hint;
        return std::nullopt;
    }
    if (overflow || n > std::numeric_limits<std::uint64_t>::max() / scale) {
        error = quote(text) + " is too large";
        return std::nullopt;
    }
    return n * scale;
}

std::string format_duration(duration d) {
    auto ms = d.count();
    if (ms == 0)
        return "0s";
    if (ms % (60 * 60 * 1000) == 0)
        return std::to_string(ms / (60 * 60 * 1000)) + "h";
    if (ms % (60 * 1000) == 0)
        return std::to_string(ms / (60 * 1000)) + "m";
    if (ms % 1000 == 0)
        return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

std::string format_byte_size(std::uint64_t bytes) {
    if (bytes == 0)
        return "0";
    if (bytes % GiB == 0)
        return std::to_string(bytes / GiB) + "GiB";
    if (bytes % MiB == 0)
        return std::to_string(bytes / MiB) + "MiB";
    if (bytes % KiB == 0)
        return std::to_string(bytes / KiB) + "KiB";
    return std::to_string(bytes);
}

std::string format_double(double v) {
    char buf[64];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, p);
}

std::optional<std::string> check_host_port(const std::string& text) {
    host_port ignored;
    return split_host_port(text, ignored);
}

std::string render_markdown(const doc_writer& docs) {
    std::string out;
    for (const auto& section : docs.sections) {
        if (section.title.empty() && section.rows.empty())
            continue;
        if (!out.empty())
            out += "\n";
        out += "### " + (section.title.empty() ? std::string("Top level") : code(section.title)) +
               "\n\n";
        if (!section.description.empty())
            out += section.description + "\n\n";
        if (section.rows.empty())
            continue;
        out += "| Setting | Type | Default | Allowed | Description |\n";
        out += "| --- | --- | --- | --- | --- |\n";
        for (const auto& row : section.rows) {
            out += "| " + code(row.name) + " | " + markdown_cell(row.type) + " | " +
                   markdown_cell(row.default_value) + " | " + markdown_cell(row.allowed) + " | " +
                   markdown_cell(row.description) + " |\n";
        }
    }
    return out;
}

}  // namespace detail
}  // namespace segue::config
