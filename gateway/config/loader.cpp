// YAML parsing (the only place that includes yaml-cpp) and the public loader API.

#include "gateway/config/loader.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "gateway/config/schema.hpp"

namespace segue::config {
namespace {

struct ignore_events final : YAML::EventHandler {
    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

int line_of(const YAML::Node& n) {
    const YAML::Mark m = n.Mark();
    return m.is_null() ? 0 : m.line + 1;
}

// Aliases are expanded by copying: a bound on nodes and depth stops an anchor used inside
// itself ("&a [*a]") and exponential "billion laughs" documents. Real configs are far below.
struct convert_budget {
    std::size_t nodes = 100000;
    int depth = 0;
};
constexpr int max_depth = 64;

struct too_complex {};

// yaml-cpp keeps duplicate keys and every node's position, which is all we need: the schema
// then reports duplicates and positions itself.
yaml_node convert(const YAML::Node& n, int fallback_line, std::vector<diagnostic>& errors,
                  const std::string& source, convert_budget& budget) {
    if (budget.nodes-- == 0 || budget.depth > max_depth)
        throw too_complex{};
    struct depth_guard {
        int& d;
        explicit depth_guard(int& x) : d(++x) {}
        ~depth_guard() { --d; }
    } guard(budget.depth);
    yaml_node out;
    out.line = line_of(n);
    if (out.line == 0)
        out.line = fallback_line;
    switch (n.Type()) {
        case YAML::NodeType::Undefined:
        case YAML::NodeType::Null:
            // An empty value is positioned at the next token, so use the key's line instead.
            out.type = yaml_node::kind::null;
            out.line = fallback_line ? fallback_line : out.line;
            break;
        case YAML::NodeType::Scalar:
            out.type = yaml_node::kind::scalar;
            out.text = n.Scalar();
            out.quoted = n.Tag() == "!";  // yaml-cpp's tag for quoted scalars
            break;
        case YAML::NodeType::Sequence:
            out.type = yaml_node::kind::sequence;
            for (const auto& item : n)
                out.items.push_back(convert(item, 0, errors, source, budget));
            break;
        case YAML::NodeType::Map:
            out.type = yaml_node::kind::mapping;
            for (auto it = n.begin(); it != n.end(); ++it) {
                int key_line = line_of(it->first);
                if (!it->first.IsScalar()) {
                    errors.push_back({source, key_line, "", "keys must be plain names"});
                    continue;
                }
                out.entries.push_back({it->first.Scalar(), key_line,
                                       convert(it->second, key_line, errors, source, budget)});
            }
            break;
    }
    return out;
}

}  // namespace

std::optional<std::string> process_env(const std::string& name) {
    if (const char* v = std::getenv(name.c_str()))
        return std::string(v);
    return std::nullopt;
}

std::string diagnostic::to_string() const {
    std::string out = source;
    if (line > 0)
        out += ":" + std::to_string(line);
    out += ": ";
    if (!path.empty())
        out += path + ": ";
    return out + message;
}

namespace {
std::string join_diagnostics(std::vector<diagnostic>& diagnostics) {
    // File order reads best; errors found later on earlier lines (missing required keys,
    // cross-field rules) are slotted in.
    std::stable_sort(diagnostics.begin(), diagnostics.end(),
                     [](const diagnostic& a, const diagnostic& b) { return a.line < b.line; });
    std::string out;
    for (const auto& d : diagnostics)
        out += (out.empty() ? "" : "\n") + d.to_string();
    return out;
}
}  // namespace

config_error::config_error(std::vector<diagnostic> diagnostics)
    : std::runtime_error(join_diagnostics(diagnostics)), diagnostics_(std::move(diagnostics)) {}

yaml_node parse_yaml(std::string_view text, std::string_view source_name) {
    const std::string source(source_name);
    std::vector<YAML::Node> documents;
    try {
        // yaml-cpp 0.7's LoadAll never returns on some inputs (a lone ","): it reports empty
        // documents forever (jbeder/yaml-cpp#1040). Count at most two with a parser pass, then
        // load only the first.
        std::istringstream in{std::string(text)};
        YAML::Parser parser(in);
        ignore_events events;
        int count = 0;
        while (count < 2 && parser.HandleNextDocument(events))
            ++count;
        if (count > 1)
            throw config_error({{source, 0, "", "expected one YAML document, found several"}});
        if (count == 1)
            documents.push_back(YAML::Load(std::string(text)));
    } catch (const YAML::Exception& e) {
        diagnostic d{source, e.mark.is_null() ? 0 : e.mark.line + 1, "", "invalid YAML: " + e.msg};
        if (!e.mark.is_null())
            d.message += " (column " + std::to_string(e.mark.column + 1) + ")";
        throw config_error({std::move(d)});
    }
    if (documents.empty())
        return yaml_node{};  // an empty file: all defaults
    if (documents.size() > 1)
        throw config_error(
            {{source, line_of(documents[1]), "",
              "expected one YAML document, found " + std::to_string(documents.size())}});
    std::vector<diagnostic> errors;
    convert_budget budget;
    yaml_node root;
    try {
        root = convert(documents.front(), 1, errors, source, budget);
    } catch (const too_complex&) {
        throw config_error({{source, 0, "",
                             "document too large or too deeply nested (aliases are expanded; "
                             "a self-referencing anchor never ends)"}});
    }
    if (!errors.empty())
        throw config_error(std::move(errors));
    return root;
}

settings defaults(const provider_catalog& providers) {
    return schema_defaults(settings_schema(providers));
}

settings load_string(std::string_view yaml, std::string_view source_name, const env_lookup& env,
                     const provider_catalog& providers) {
    return load_yaml(settings_schema(providers), yaml, source_name, env);
}

settings load_file(const std::string& path, const env_lookup& env,
                   const provider_catalog& providers) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw config_error({{path, 0, "", std::string("cannot open: ") + std::strerror(errno)}});
    // A directory opens, and reads as nothing: the embedded defaults, silently.
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
        throw config_error({{path, 0, "", "is a directory, not a config file"}});
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad())
        throw config_error({{path, 0, "", "read error"}});
    return load_string(text.str(), path, env, providers);
}

std::string render_effective(const settings& s, const provider_catalog& providers) {
    return render_yaml(settings_schema(providers), s);
}

std::string render_docs(const provider_catalog& providers) {
    return "## Settings reference\n\n"
           "Generated from gateway/config/schema.cpp and each provider's descriptor by "
           "`segue --config-docs`; do not edit by hand.\n\n" +
           render_markdown(settings_schema(providers));
}

}  // namespace segue::config
