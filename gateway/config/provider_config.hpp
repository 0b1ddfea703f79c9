#pragma once
// Provider settings, as the config layer sees them: opaque. A provider declares its own block
// (`providers.<name>`) with an object_schema of its own settings struct, in its own folder; the
// config layer loads, validates, renders and documents the block through this interface and
// stores the result in settings::providers without knowing the type. Nothing here names a
// provider: the list of known providers is handed to the loader by the app's wiring.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/config/schema.hpp"

namespace segue::config {

// One provider's parsed settings block. Every provider block has `enabled` and `price`.
class provider_config {
  public:
    virtual ~provider_config() = default;
    virtual bool enabled() const = 0;
    // Credits per output: held when a task is routed here first, captured per ready output.
    virtual double price() const = 0;
    // The provider's API base URL, when it calls one (checked against
    // upstream.allow_plain_http at load); empty otherwise.
    virtual std::string upstream_url() const { return {}; }
};

// How one provider's block is loaded, checked, rendered and documented.
class provider_schema {
  public:
    virtual ~provider_schema() = default;
    virtual const std::string& name() const = 0;
    virtual const std::string& description() const = 0;
    virtual std::shared_ptr<const provider_config> defaults() const = 0;
    // Errors go to ctx (with paths under `path`); returns the defaults overlaid with the block.
    virtual std::shared_ptr<const provider_config> load(const yaml_node& node,
                                                        detail::load_context& ctx,
                                                        const std::string& path) const = 0;
    virtual yaml_node render(const provider_config& value, bool redact) const = 0;
    virtual void document(const std::string& path, std::size_t section,
                          detail::doc_writer& docs) const = 0;
    virtual void self_check(const std::string& path, std::vector<std::string>& problems) const = 0;
};

// A provider block typed by its settings struct S (which has `bool enabled` and
// `double price`), declared with the ordinary schema machinery.
template <class S>
class typed_provider_config final : public provider_config {
  public:
    explicit typed_provider_config(S s) : settings(std::move(s)) {}
    bool enabled() const override { return settings.enabled; }
    double price() const override { return settings.price; }
    std::string upstream_url() const override {
        if constexpr (requires { settings.base_url; })
            return settings.base_url;
        return {};
    }
    S settings;
};

template <class S>
class typed_provider_schema final : public provider_schema {
  public:
    typed_provider_schema(std::string name, std::string description, object_schema<S> schema)
        : name_(std::move(name)),
          description_(std::move(description)),
          schema_(std::move(schema)) {}

    const std::string& name() const override { return name_; }
    const std::string& description() const override { return description_; }
    std::shared_ptr<const provider_config> defaults() const override {
        return std::make_shared<typed_provider_config<S>>(schema_defaults(schema_));
    }
    std::shared_ptr<const provider_config> load(const yaml_node& node, detail::load_context& ctx,
                                                const std::string& path) const override {
        S value = schema_defaults(schema_);
        schema_.load_into(node, value, ctx, path);
        return std::make_shared<typed_provider_config<S>>(std::move(value));
    }
    yaml_node render(const provider_config& value, bool redact) const override {
        return schema_.render(typed(value), redact);
    }
    void document(const std::string& path, std::size_t section,
                  detail::doc_writer& docs) const override {
        schema_.document(path, section, docs);
    }
    void self_check(const std::string& path, std::vector<std::string>& problems) const override {
        schema_.self_check(path, problems);
    }

    // The typed settings of a block this schema loaded (a provider's factory uses it).
    static const S& typed(const provider_config& value) {
        return dynamic_cast<const typed_provider_config<S>&>(value).settings;
    }

  private:
    std::string name_, description_;
    object_schema<S> schema_;
};

}  // namespace segue::config
