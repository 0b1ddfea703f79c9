#pragma once
// The declarative settings schema. Each setting is declared once (in gateway/config/schema.cpp)
// with its name, description, default, bounds, type and secrecy, bound to a struct field by
// member pointer. Loading, validation, the effective-config dump and the Markdown reference are
// all derived from that one declaration, so they cannot disagree.
//
//   object_schema<limits_settings> limits;
//   limits.field("max_header_bytes", &limits_settings::max_header_bytes, "Largest header block.")
//       .byte_size().def(16 * KiB).range(1 * KiB, 1 * MiB);
//   root.object("limits", &settings::limits, std::move(limits), "Per-connection limits.");
//
// Composite settings: object() for a nested mapping, list() for a list of mappings (paths like
// tenants[2].name), map() for a name -> mapping table (paths like routing.routes.main.chain).
// A field whose type is std::vector<scalar> is a list of scalars (e.g. api_keys).
//
// This header is for the config code and its tests; the rest of the gateway uses loader.hpp.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "gateway/config/loader.hpp"
#include "gateway/config/settings.hpp"

namespace segue::config {

// ---- A YAML document, independent of yaml-cpp --------------------------------------------------

struct yaml_entry;

struct yaml_node {
    enum class kind { null, scalar, sequence, mapping };
    kind type = kind::null;
    int line = 0;                     // 1-based; 0 when unknown
    std::string text;                 // scalar text
    bool quoted = false;              // scalar was quoted in the source / is emitted quoted
    std::vector<yaml_node> items;     // sequence items
    std::vector<yaml_entry> entries;  // mapping entries in source order; duplicates are kept
};

struct yaml_entry {
    std::string key;
    int line = 0;
    yaml_node value;
};

// Parses YAML text (yaml-cpp, in loader.cpp). Throws config_error on syntax errors.
yaml_node parse_yaml(std::string_view text, std::string_view source_name);

// Emits block-style YAML; quoted scalars are double-quoted.
std::string emit_yaml(const yaml_node& root);

inline constexpr std::uint64_t KiB = 1024;
inline constexpr std::uint64_t MiB = 1024 * KiB;
inline constexpr std::uint64_t GiB = 1024 * MiB;

enum class value_kind {
    boolean,
    integer,
    number,
    string,
    secret,
    duration,
    byte_size,
    enumeration
};

namespace detail {

struct load_context {
    std::string source;
    const env_lookup* env = nullptr;
    std::vector<std::string> known_paths;  // documented paths, for "did you mean" across sections
    std::vector<diagnostic> errors;

    void error(int line, std::string path, std::string message) {
        errors.push_back({source, line, std::move(path), std::move(message)});
    }
};

struct doc_row {
    std::string name, type, default_value, allowed, description;
};
struct doc_section {
    std::string title, description;
    std::vector<doc_row> rows;
};
struct doc_writer {
    std::vector<doc_section> sections;
    std::size_t begin(std::string title, std::string description) {
        sections.push_back({std::move(title), std::move(description), {}});
        return sections.size() - 1;
    }
};
std::string render_markdown(const doc_writer& docs);

std::string join_key(const std::string& parent, std::string_view key);
// The line of the value at `path` below `node` ("api.default_provider", "tenants[1].api_keys[0]"),
// or of the deepest part of it the document has (a default has no line of its own).
int line_at(const yaml_node& node, std::string_view path);
std::string join_index(const std::string& parent, std::size_t index);
std::string_view type_name(value_kind k);          // "integer", "duration", ...
std::string_view type_with_article(value_kind k);  // "an integer", "a duration", ...
std::string_view node_with_article(yaml_node::kind k);
std::string quote(std::string_view text);  // 'text' for messages
std::string code(std::string_view text);   // `text` for Markdown

// The scalar's text after ${VAR} substitution, or nullopt (errors recorded) when the node is not
// a scalar or a variable is missing.
std::optional<std::string> scalar_text(const yaml_node& node, const std::string& path,
                                       value_kind expected, load_context& ctx);

// "unknown setting (did you mean 'listen'?)"
std::string unknown_key_message(std::string_view key, const std::vector<std::string>& siblings,
                                const std::vector<std::string>& known_paths);
std::optional<std::string> closest(std::string_view word, const std::vector<std::string>& options);

// Scalar codecs. The parsers return nullopt and set `error` on bad input.
std::optional<bool> parse_bool(std::string_view text);
std::optional<std::int64_t> parse_signed(std::string_view text);
std::optional<std::uint64_t> parse_unsigned(std::string_view text);
std::optional<double> parse_double(std::string_view text);
std::optional<duration> parse_duration(std::string_view text, std::string& error);
std::optional<std::uint64_t> parse_byte_size(std::string_view text, std::string& error);
std::string format_duration(duration d);
std::string format_byte_size(std::uint64_t bytes);
std::string format_double(double v);

// Validators usable with .check().
std::optional<std::string> check_host_port(const std::string& text);

template <class V>
struct is_vector : std::false_type {};
template <class V, class A>
struct is_vector<std::vector<V, A>> : std::true_type {};

template <class V>
inline constexpr bool always_false = false;

}  // namespace detail

// The kind a C++ field type maps to; .secret() / .byte_size() refine string / unsigned.
template <class V>
constexpr value_kind natural_kind() {
    if constexpr (std::is_same_v<V, bool>)
        return value_kind::boolean;
    else if constexpr (std::is_enum_v<V>)
        return value_kind::enumeration;
    else if constexpr (std::is_integral_v<V>)
        return value_kind::integer;
    else if constexpr (std::is_floating_point_v<V>)
        return value_kind::number;
    else if constexpr (std::is_same_v<V, std::string>)
        return value_kind::string;
    else if constexpr (std::is_same_v<V, duration>)
        return value_kind::duration;
    else
        static_assert(detail::always_false<V>,
                      "unsupported setting type (use object()/list()/map() for structs)");
}

// Orderable types can have min/max bounds.
template <class V>
inline constexpr bool is_ordered_v =
    (std::is_arithmetic_v<V> && !std::is_same_v<V, bool>) || std::is_same_v<V, duration>;

// How one scalar value is read, checked and written.
template <class V>
struct scalar_spec {
    struct rule {
        std::string doc;  // shown in the "Allowed" column
        std::function<std::optional<std::string>(const V&)> check;
    };

    value_kind kind = natural_kind<V>();
    std::optional<V> min, max;
    std::vector<std::pair<std::string, V>> names;  // enum values
    std::vector<rule> rules;

    std::string format(const V& v) const {
        if constexpr (std::is_same_v<V, bool>) {
            return v ? "true" : "false";
        } else if constexpr (std::is_enum_v<V>) {
            for (const auto& [name, value] : names)
                if (value == v)
                    return name;
            throw std::logic_error("enum setting value has no name in the schema");
        } else if constexpr (std::is_integral_v<V>) {
            if (kind == value_kind::byte_size)
                return detail::format_byte_size(static_cast<std::uint64_t>(v));
            return std::to_string(v);
        } else if constexpr (std::is_floating_point_v<V>) {
            return detail::format_double(v);
        } else if constexpr (std::is_same_v<V, std::string>) {
            return v;
        } else {
            return detail::format_duration(v);
        }
    }

    // Text -> value, including bounds and rules.
    std::optional<V> parse(std::string_view text, std::string& error) const {
        std::optional<V> v = convert(text, error);
        if (!v)
            return v;
        if (auto problem = violation(*v)) {
            error = *problem;
            return std::nullopt;
        }
        return v;
    }

    // Why a value is not allowed, or nullopt. Never echoes string values (they may be secret).
    std::optional<std::string> violation(const V& v) const {
        if constexpr (is_ordered_v<V>) {
            if (min && v < *min)
                return format(v) + " is below the minimum " + format(*min);
            if (max && *max < v)
                return format(v) + " is above the maximum " + format(*max);
        }
        if constexpr (std::is_enum_v<V>) {
            bool named = std::any_of(names.begin(), names.end(),
                                     [&](const auto& n) { return n.second == v; });
            if (!named)
                return std::string("value has no name in the schema");
        }
        for (const auto& r : rules)
            if (auto problem = r.check(v))
                return problem;
        return std::nullopt;
    }

    std::string allowed_doc() const {
        std::string out;
        if constexpr (std::is_enum_v<V>) {
            for (const auto& [name, value] : names)
                out += (out.empty() ? "" : ", ") + detail::code(name);
        }
        if constexpr (is_ordered_v<V>) {
            if (min && max)
                out = detail::code(format(*min)) + " .. " + detail::code(format(*max));
            else if (min)
                out = ">= " + detail::code(format(*min));
            else if (max)
                out = "<= " + detail::code(format(*max));
        }
        for (const auto& r : rules)
            if (!r.doc.empty())
                out += (out.empty() ? "" : "; ") + r.doc;
        return out;
    }

    // A value as shown in docs: strings in YAML double quotes so "" is visible.
    std::string doc_value(const V& v) const {
        if constexpr (std::is_same_v<V, std::string>) {
            if (kind == value_kind::secret && !v.empty())
                return detail::code("\"<redacted>\"");
            return detail::code(emit_inline(v));
        } else {
            return detail::code(format(v));
        }
    }

    yaml_node render(const V& v, bool redact) const {
        yaml_node n;
        n.type = yaml_node::kind::scalar;
        if constexpr (std::is_same_v<V, std::string>) {
            n.quoted = true;
            // An empty secret is shown as "" (it tells the operator it is unset, which is no
            // secret); anything else is hidden.
            n.text = (redact && kind == value_kind::secret && !v.empty()) ? "<redacted>" : v;
            // A literal "${" is written back escaped, so the output loads to the same value.
            for (std::size_t at = 0; (at = n.text.find("${", at)) != std::string::npos; at += 3)
                n.text.insert(at, "$");
        } else {
            n.text = format(v);
        }
        return n;
    }

  private:
    static std::string emit_inline(const std::string& s) {
        yaml_node n;
        n.type = yaml_node::kind::scalar;
        n.quoted = true;
        n.text = s;
        std::string out = emit_yaml(n);
        if (!out.empty() && out.back() == '\n')
            out.pop_back();
        return out;
    }

    template <class Wide>
    std::optional<V> narrow(Wide w, std::string_view text, std::string& error) const {
        // Check declared bounds in the wide type first so the message names them.
        if (min && w < static_cast<Wide>(*min)) {
            error = std::string(text) + " is below the minimum " + format(*min);
            return std::nullopt;
        }
        if (max && static_cast<Wide>(*max) < w) {
            error = std::string(text) + " is above the maximum " + format(*max);
            return std::nullopt;
        }
        if (!std::in_range<V>(w)) {
            error = std::string(text) + " is out of range (" +
                    format(std::numeric_limits<V>::min()) + " .. " +
                    format(std::numeric_limits<V>::max()) + ")";
            return std::nullopt;
        }
        return static_cast<V>(w);
    }

    std::optional<V> convert(std::string_view text, std::string& error) const {
        if constexpr (std::is_same_v<V, bool>) {
            if (auto b = detail::parse_bool(text))
                return *b;
            error = "expected true or false, got " + detail::quote(text);
            return std::nullopt;
        } else if constexpr (std::is_enum_v<V>) {
            std::vector<std::string> options;
            for (const auto& [name, value] : names) {
                if (name == text)
                    return value;
                options.push_back(name);
            }
            error = detail::quote(text) + " is not one of ";
            for (std::size_t i = 0; i < options.size(); ++i)
                error += (i ? ", " : "") + options[i];
            if (auto guess = detail::closest(text, options))
                error += " (did you mean " + detail::quote(*guess) + "?)";
            return std::nullopt;
        } else if constexpr (std::is_integral_v<V>) {
            if (kind == value_kind::byte_size) {
                auto bytes = detail::parse_byte_size(text, error);
                if (!bytes)
                    return std::nullopt;
                return narrow(*bytes, text, error);
            }
            if constexpr (std::is_signed_v<V>) {
                if (auto n = detail::parse_signed(text))
                    return narrow(*n, text, error);
                error = "expected an integer, got " + detail::quote(text);
            } else {
                if (auto n = detail::parse_unsigned(text))
                    return narrow(*n, text, error);
                error = "expected a non-negative integer, got " + detail::quote(text);
            }
            return std::nullopt;
        } else if constexpr (std::is_floating_point_v<V>) {
            if (auto d = detail::parse_double(text))
                return static_cast<V>(*d);
            error = "expected a number, got " + detail::quote(text);
            return std::nullopt;
        } else if constexpr (std::is_same_v<V, std::string>) {
            return std::string(text);
        } else {
            return detail::parse_duration(text, error);
        }
    }
};

// One declared member of a struct T (a scalar, a list of scalars, or a composite).
template <class T>
class member {
  public:
    member(std::string name, std::string description)
        : name_(std::move(name)), description_(std::move(description)) {}
    member(const member&) = delete;
    member& operator=(const member&) = delete;
    virtual ~member() = default;

    const std::string& name() const { return name_; }
    bool is_required() const { return required_; }

    virtual void apply_default(T& target) const = 0;
    virtual void load(const yaml_node& node, T& target, detail::load_context& ctx,
                      const std::string& path) const = 0;
    virtual yaml_node render(const T& source, bool redact) const = 0;
    virtual void document(const std::string& parent, std::size_t section,
                          detail::doc_writer& docs) const = 0;
    // Schema mistakes (a default outside its bounds, an enum without names): for a unit test.
    virtual void self_check(const std::string& parent, std::vector<std::string>& problems) const {}

  protected:
    std::string name_, description_;
    bool required_ = false;
};

// The fluent options shared by single scalars and lists of scalars.
template <class Self, class V>
class scalar_options {
  public:
    Self& min(V v) {
        static_assert(is_ordered_v<V>, "min() needs a number, duration or byte size");
        spec_.min = std::move(v);
        return self();
    }
    Self& max(V v) {
        static_assert(is_ordered_v<V>, "max() needs a number, duration or byte size");
        spec_.max = std::move(v);
        return self();
    }
    Self& range(V lo, V hi) { return min(std::move(lo)).max(std::move(hi)); }
    // Redacted in render_effective() and docs.
    Self& secret() {
        static_assert(std::is_same_v<V, std::string>, "secret() is for strings");
        spec_.kind = value_kind::secret;
        return self();
    }
    // Accepts 16KiB / 1MiB / plain bytes.
    Self& byte_size() {
        static_assert(std::is_integral_v<V> && std::is_unsigned_v<V> && !std::is_same_v<V, bool>,
                      "byte_size() is for unsigned integers");
        spec_.kind = value_kind::byte_size;
        return self();
    }
    // The YAML spelling of each enum value.
    Self& values(std::initializer_list<std::pair<const char*, V>> names) {
        static_assert(std::is_enum_v<V>, "values() is for enums");
        for (const auto& [name, value] : names)
            spec_.names.emplace_back(name, value);
        return self();
    }
    // An extra rule: returns an error message for a bad value; `doc` goes into the docs.
    Self& check(std::string doc, std::function<std::optional<std::string>(const V&)> rule) {
        spec_.rules.push_back({std::move(doc), std::move(rule)});
        return self();
    }

  protected:
    scalar_spec<V> spec_;

  private:
    Self& self() { return static_cast<Self&>(*this); }
};

template <class T, class V>
class scalar_field final : public member<T>, public scalar_options<scalar_field<T, V>, V> {
  public:
    scalar_field(std::string name, V T::*field, std::string description)
        : member<T>(std::move(name), std::move(description)), field_(field) {}

    scalar_field& def(V v) {
        default_ = std::move(v);
        return *this;
    }
    // Must be present in the YAML (meant for items of lists/maps, e.g. a tenant's name).
    scalar_field& required() {
        this->required_ = true;
        return *this;
    }

    void apply_default(T& target) const override { target.*field_ = default_; }

    void load(const yaml_node& node, T& target, detail::load_context& ctx,
              const std::string& path) const override {
        auto text = detail::scalar_text(node, path, this->spec_.kind, ctx);
        if (!text)
            return;
        std::string error;
        if (auto v = this->spec_.parse(*text, error))
            target.*field_ = std::move(*v);
        else
            ctx.error(node.line, path, std::move(error));
    }

    yaml_node render(const T& source, bool redact) const override {
        return this->spec_.render(source.*field_, redact);
    }

    void document(const std::string& parent, std::size_t section,
                  detail::doc_writer& docs) const override {
        docs.sections[section].rows.push_back(
            {detail::join_key(parent, this->name_),
             std::string(detail::type_name(this->spec_.kind)),
             this->required_ ? "required" : this->spec_.doc_value(default_),
             this->spec_.allowed_doc(), this->description_});
    }

    void self_check(const std::string& parent, std::vector<std::string>& problems) const override {
        std::string path = detail::join_key(parent, this->name_);
        if constexpr (std::is_enum_v<V>) {
            if (this->spec_.names.empty())
                problems.push_back(path + ": enum without values()");
        }
        if (this->description_.empty())
            problems.push_back(path + ": no description");
        if (!this->required_)
            if (auto problem = this->spec_.violation(default_))
                problems.push_back(path + ": default: " + *problem);
    }

  private:
    V T::*field_;
    V default_{};
};

template <class T, class V>
class scalar_list_field final : public member<T>,
                                public scalar_options<scalar_list_field<T, V>, V> {
  public:
    scalar_list_field(std::string name, std::vector<V> T::*field, std::string description)
        : member<T>(std::move(name), std::move(description)), field_(field) {}

    scalar_list_field& def(std::vector<V> v) {
        default_ = std::move(v);
        return *this;
    }

    void apply_default(T& target) const override { target.*field_ = default_; }

    void load(const yaml_node& node, T& target, detail::load_context& ctx,
              const std::string& path) const override {
        if (node.type == yaml_node::kind::null)
            return;  // `key:` keeps the default
        if (node.type != yaml_node::kind::sequence) {
            ctx.error(node.line, path,
                      "expected a list, got " + std::string(detail::node_with_article(node.type)));
            return;
        }
        std::vector<V> out;
        bool ok = true;
        for (std::size_t i = 0; i < node.items.size(); ++i) {
            const auto& item = node.items[i];
            std::string item_path = detail::join_index(path, i);
            auto text = detail::scalar_text(item, item_path, this->spec_.kind, ctx);
            if (!text) {
                ok = false;
                continue;
            }
            std::string error;
            if (auto v = this->spec_.parse(*text, error)) {
                out.push_back(std::move(*v));
            } else {
                ctx.error(item.line, item_path, std::move(error));
                ok = false;
            }
        }
        if (ok)
            target.*field_ = std::move(out);
    }

    yaml_node render(const T& source, bool redact) const override {
        yaml_node n;
        n.type = yaml_node::kind::sequence;
        for (const auto& v : source.*field_)
            n.items.push_back(this->spec_.render(v, redact));
        return n;
    }

    void document(const std::string& parent, std::size_t section,
                  detail::doc_writer& docs) const override {
        std::string def = "[";
        for (std::size_t i = 0; i < default_.size(); ++i) {
            std::string v = this->spec_.doc_value(default_[i]);
            def += (i ? ", " : "") + v.substr(1, v.size() - 2);  // drop the backticks
        }
        docs.sections[section].rows.push_back(
            {detail::join_key(parent, this->name_),
             "list of " + std::string(detail::type_name(this->spec_.kind)), detail::code(def + "]"),
             this->spec_.allowed_doc(), this->description_});
    }

    void self_check(const std::string& parent, std::vector<std::string>& problems) const override {
        std::string path = detail::join_key(parent, this->name_);
        if (this->description_.empty())
            problems.push_back(path + ": no description");
        for (const auto& v : default_)
            if (auto problem = this->spec_.violation(v))
                problems.push_back(path + ": default: " + *problem);
    }

  private:
    std::vector<V> T::*field_;
    std::vector<V> default_;
};

template <class T>
class object_schema;

template <class T, class U>
class object_member final : public member<T> {
  public:
    object_member(std::string name, U T::*field, std::shared_ptr<const object_schema<U>> schema,
                  std::string description)
        : member<T>(std::move(name), std::move(description)),
          field_(field),
          schema_(std::move(schema)) {}

    void apply_default(T& target) const override { schema_->apply_defaults(target.*field_); }
    void load(const yaml_node& node, T& target, detail::load_context& ctx,
              const std::string& path) const override {
        schema_->load_into(node, target.*field_, ctx, path);
    }
    yaml_node render(const T& source, bool redact) const override {
        return schema_->render(source.*field_, redact);
    }
    void document(const std::string& parent, std::size_t, detail::doc_writer& docs) const override {
        std::string path = detail::join_key(parent, this->name_);
        schema_->document(path, docs.begin(path, this->description_), docs);
    }
    void self_check(const std::string& parent, std::vector<std::string>& problems) const override {
        schema_->self_check(detail::join_key(parent, this->name_), problems);
    }

  private:
    U T::*field_;
    std::shared_ptr<const object_schema<U>> schema_;
};

template <class T, class U>
class list_member final : public member<T> {
  public:
    list_member(std::string name, std::vector<U> T::*field,
                std::shared_ptr<const object_schema<U>> schema, std::string description)
        : member<T>(std::move(name), std::move(description)),
          field_(field),
          schema_(std::move(schema)) {}

    void apply_default(T& target) const override { (target.*field_).clear(); }
    void load(const yaml_node& node, T& target, detail::load_context& ctx,
              const std::string& path) const override {
        if (node.type == yaml_node::kind::null)
            return;
        if (node.type != yaml_node::kind::sequence) {
            ctx.error(node.line, path,
                      "expected a list, got " + std::string(detail::node_with_article(node.type)));
            return;
        }
        std::vector<U> out;
        for (std::size_t i = 0; i < node.items.size(); ++i) {
            U item{};
            schema_->apply_defaults(item);
            schema_->load_into(node.items[i], item, ctx, detail::join_index(path, i));
            out.push_back(std::move(item));
        }
        target.*field_ = std::move(out);
    }
    yaml_node render(const T& source, bool redact) const override {
        yaml_node n;
        n.type = yaml_node::kind::sequence;
        for (const auto& item : source.*field_)
            n.items.push_back(schema_->render(item, redact));
        return n;
    }
    void document(const std::string& parent, std::size_t, detail::doc_writer& docs) const override {
        std::string path = detail::join_key(parent, this->name_) + "[]";
        std::string description =
            this->description_ + " A list (default empty); each item has the settings below.";
        schema_->document(path, docs.begin(path, std::move(description)), docs);
    }
    void self_check(const std::string& parent, std::vector<std::string>& problems) const override {
        schema_->self_check(detail::join_key(parent, this->name_) + "[]", problems);
    }

  private:
    std::vector<U> T::*field_;
    std::shared_ptr<const object_schema<U>> schema_;
};

// M is a std::map / std::unordered_map from std::string to a struct.
template <class T, class M>
class map_member final : public member<T> {
    using U = typename M::mapped_type;

  public:
    map_member(std::string name, M T::*field, std::shared_ptr<const object_schema<U>> schema,
               std::string description)
        : member<T>(std::move(name), std::move(description)),
          field_(field),
          schema_(std::move(schema)) {}

    void apply_default(T& target) const override { (target.*field_).clear(); }
    void load(const yaml_node& node, T& target, detail::load_context& ctx,
              const std::string& path) const override {
        if (node.type == yaml_node::kind::null)
            return;
        if (node.type != yaml_node::kind::mapping) {
            ctx.error(node.line, path,
                      "expected a mapping of names to settings, got " +
                          std::string(detail::node_with_article(node.type)));
            return;
        }
        M out;
        std::map<std::string, int> seen;
        for (const auto& entry : node.entries) {
            std::string item_path = detail::join_key(path, entry.key);
            if (auto [it, fresh] = seen.emplace(entry.key, entry.line); !fresh) {
                ctx.error(entry.line, item_path,
                          "duplicate key (first set on line " + std::to_string(it->second) + ")");
                continue;
            }
            if (entry.key.empty()) {
                ctx.error(entry.line, path, "empty name");
                continue;
            }
            U item{};
            schema_->apply_defaults(item);
            schema_->load_into(entry.value, item, ctx, item_path);
            out.emplace(entry.key, std::move(item));
        }
        target.*field_ = std::move(out);
    }
    yaml_node render(const T& source, bool redact) const override {
        // Sorted by name so the output is stable whatever the map type.
        std::vector<const typename M::value_type*> sorted;
        for (const auto& kv : source.*field_)
            sorted.push_back(&kv);
        std::sort(sorted.begin(), sorted.end(),
                  [](const auto* a, const auto* b) { return a->first < b->first; });
        yaml_node n;
        n.type = yaml_node::kind::mapping;
        for (const auto* kv : sorted)
            n.entries.push_back({kv->first, 0, schema_->render(kv->second, redact)});
        return n;
    }
    void document(const std::string& parent, std::size_t, detail::doc_writer& docs) const override {
        std::string path = detail::join_key(parent, this->name_) + ".<name>";
        std::string description = this->description_ +
                                  " A mapping (default empty) from a name of your choice to the "
                                  "settings below.";
        schema_->document(path, docs.begin(path, std::move(description)), docs);
    }
    void self_check(const std::string& parent, std::vector<std::string>& problems) const override {
        schema_->self_check(detail::join_key(parent, this->name_) + ".<name>", problems);
    }

  private:
    M T::*field_;
    std::shared_ptr<const object_schema<U>> schema_;
};

// The schema of one struct: its members in declaration (and output) order.
template <class T>
class object_schema {
  public:
    object_schema() = default;
    object_schema(object_schema&&) noexcept = default;
    object_schema& operator=(object_schema&&) noexcept = default;

    // A scalar (bool, integers, double, std::string, duration, enum) or std::vector of one.
    template <class V>
    auto& field(std::string name, V T::*field, std::string description) {
        if constexpr (detail::is_vector<V>::value) {
            return add(std::make_unique<scalar_list_field<T, typename V::value_type>>(
                std::move(name), field, std::move(description)));
        } else {
            return add(std::make_unique<scalar_field<T, V>>(std::move(name), field,
                                                            std::move(description)));
        }
    }

    template <class U>
    void object(std::string name, U T::*field, object_schema<U> schema, std::string description) {
        add(std::make_unique<object_member<T, U>>(
            std::move(name), field, std::make_shared<const object_schema<U>>(std::move(schema)),
            std::move(description)));
    }

    template <class U>
    void list(std::string name, std::vector<U> T::*field, object_schema<U> schema,
              std::string description) {
        add(std::make_unique<list_member<T, U>>(
            std::move(name), field, std::make_shared<const object_schema<U>>(std::move(schema)),
            std::move(description)));
    }

    template <class M>
    void map(std::string name, M T::*field, object_schema<typename M::mapped_type> schema,
             std::string description) {
        static_assert(std::is_same_v<typename M::key_type, std::string>, "map keys are strings");
        using U = typename M::mapped_type;
        add(std::make_unique<map_member<T, M>>(
            std::move(name), field, std::make_shared<const object_schema<U>>(std::move(schema)),
            std::move(description)));
    }

    // A member with its own loading and docs (e.g. `providers`, whose blocks belong to plugins).
    void add_member(std::unique_ptr<member<T>> m) { add(std::move(m)); }

    // A cross-field rule, run once the object loaded without errors; reported at the object.
    object_schema& validate(std::function<std::optional<std::string>(const T&)> rule) {
        validators_.push_back(std::move(rule));
        return *this;
    }
    // A cross-field rule that names where each problem is: (path below the object, message)
    // pairs, each reported at that path's line; every problem at once.
    using located_problems = std::vector<std::pair<std::string, std::string>>;
    object_schema& validate_each(std::function<located_problems(const T&)> rule) {
        located_.push_back(std::move(rule));
        return *this;
    }

    void apply_defaults(T& target) const {
        for (const auto& m : members_)
            m->apply_default(target);
    }

    void load_into(const yaml_node& node, T& target, detail::load_context& ctx,
                   const std::string& path) const {
        // An empty value (`server:`) keeps every default, like an empty mapping.
        if (node.type != yaml_node::kind::null && node.type != yaml_node::kind::mapping) {
            ctx.error(
                node.line, path,
                "expected a mapping, got " + std::string(detail::node_with_article(node.type)));
            return;
        }
        std::size_t errors_before = ctx.errors.size();
        std::map<std::string, int> seen;
        for (const auto& entry : node.entries) {
            std::string key_path = detail::join_key(path, entry.key);
            if (auto [it, fresh] = seen.emplace(entry.key, entry.line); !fresh) {
                ctx.error(entry.line, key_path,
                          "duplicate key (first set on line " + std::to_string(it->second) + ")");
                continue;
            }
            const member<T>* m = find(entry.key);
            if (!m) {
                ctx.error(entry.line, key_path,
                          detail::unknown_key_message(entry.key, names(), ctx.known_paths));
                continue;
            }
            m->load(entry.value, target, ctx, key_path);
        }
        for (const auto& m : members_)
            if (m->is_required() && !seen.count(m->name()))
                ctx.error(node.line, detail::join_key(path, m->name()), "required setting missing");
        if (ctx.errors.size() != errors_before)
            return;
        for (const auto& rule : validators_)
            if (auto problem = rule(target))
                ctx.error(node.line, path, *problem);
        for (const auto& rule : located_)
            for (auto& [where, problem] : rule(target))
                ctx.error(detail::line_at(node, where), detail::join_key(path, where),
                          std::move(problem));
    }

    yaml_node render(const T& source, bool redact) const {
        yaml_node n;
        n.type = yaml_node::kind::mapping;
        for (const auto& m : members_)
            n.entries.push_back({m->name(), 0, m->render(source, redact)});
        return n;
    }

    void document(const std::string& path, std::size_t section, detail::doc_writer& docs) const {
        for (const auto& m : members_)
            m->document(path, section, docs);
    }

    void self_check(const std::string& path, std::vector<std::string>& problems) const {
        for (const auto& m : members_)
            m->self_check(path, problems);
    }

  private:
    template <class M>
    M& add(std::unique_ptr<M> m) {
        if (find(m->name()))
            throw std::logic_error("setting '" + m->name() + "' is declared twice");
        M& ref = *m;
        members_.push_back(std::move(m));
        return ref;
    }
    const member<T>* find(std::string_view name) const {
        for (const auto& m : members_)
            if (m->name() == name)
                return m.get();
        return nullptr;
    }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& m : members_)
            out.push_back(m->name());
        return out;
    }

    std::vector<std::unique_ptr<member<T>>> members_;
    std::vector<std::function<std::optional<std::string>(const T&)>> validators_;
    std::vector<std::function<located_problems(const T&)>> located_;
};

// ---- Whole-document operations, for any root schema ---------------------------------------------

template <class T>
detail::doc_writer document_schema(const object_schema<T>& schema) {
    detail::doc_writer docs;
    schema.document("", docs.begin("", ""), docs);
    return docs;
}

template <class T>
T schema_defaults(const object_schema<T>& schema) {
    T value{};
    schema.apply_defaults(value);
    return value;
}

// Defaults, overlaid with the document; throws config_error listing every problem.
template <class T>
T load_tree(const object_schema<T>& schema, const yaml_node& root, std::string_view source,
            const env_lookup& env) {
    detail::load_context ctx;
    ctx.source = std::string(source);
    ctx.env = &env;
    for (const auto& section : document_schema(schema).sections)
        for (const auto& row : section.rows)
            ctx.known_paths.push_back(row.name);
    T value = schema_defaults(schema);
    schema.load_into(root, value, ctx, "");
    if (!ctx.errors.empty())
        throw config_error(std::move(ctx.errors));
    return value;
}

template <class T>
T load_yaml(const object_schema<T>& schema, std::string_view yaml, std::string_view source,
            const env_lookup& env) {
    return load_tree(schema, parse_yaml(yaml, source), source, env);
}

template <class T>
std::string render_yaml(const object_schema<T>& schema, const T& value, bool redact = true) {
    return emit_yaml(schema.render(value, redact));
}

template <class T>
std::string render_markdown(const object_schema<T>& schema) {
    return detail::render_markdown(document_schema(schema));
}

template <class T>
std::vector<std::string> self_check(const object_schema<T>& schema) {
    std::vector<std::string> problems;
    schema.self_check("", problems);
    return problems;
}

class provider_schema;
using provider_catalog = std::vector<std::shared_ptr<const provider_schema>>;

// The gateway's schema (gateway/config/schema.cpp), with a `providers.<name>` block for each
// provider in the catalog (the app's wiring knows them; the config layer does not).
object_schema<settings> settings_schema(const provider_catalog& providers);

}  // namespace segue::config
