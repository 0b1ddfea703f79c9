// The configuration system: schema-driven loading, validation, env substitution, rendering and
// generated docs (gateway/config/).

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/config/loader.hpp"
#include "gateway/config/provider_config.hpp"
#include "gateway/config/schema.hpp"
#include "gateway/util/crypto.hpp"
#include "providers/builtin.hpp"

namespace {

using namespace std::chrono_literals;
namespace cfg = segue::config;

const std::string source_dir = SEGUE_SOURCE_DIR;

cfg::env_lookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
        auto it = vars.find(name);
        if (it == vars.end())
            return std::nullopt;
        return it->second;
    };
}

const cfg::env_lookup no_env = env_of({});

// The shipped providers' blocks, as the segue binary loads them.
const cfg::provider_catalog& shipped() {
    static const cfg::provider_catalog catalog =
        segue::providers::settings_catalog(segue::providers::builtin());
    return catalog;
}

cfg::settings load(const std::string& yaml, const cfg::env_lookup& env = no_env) {
    return cfg::load_string(yaml, "test.yaml", env, shipped());
}

// The config_error message for `yaml`; fails the test if it loads.
std::string error_of(const std::string& yaml, const cfg::env_lookup& env = no_env) {
    try {
        cfg::load_string(yaml, "test.yaml", env, shipped());
    } catch (const cfg::config_error& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected a config_error for:\n" << yaml;
    return {};
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// ---- The shipped files and the schema itself ----------------------------------------------------

TEST(ConfigFiles, SegueYamlIsValid) {
    cfg::settings s = cfg::load_file(source_dir + "/config/segue.yaml", no_env, shipped());
    EXPECT_EQ(s.server.listen, "127.0.0.1:8080");
}

// The node at a dotted path of plain keys, or nullptr.
const cfg::yaml_node* at(const cfg::yaml_node& root, const std::string& dotted) {
    const cfg::yaml_node* n = &root;
    std::istringstream parts(dotted);
    for (std::string key; std::getline(parts, key, '.');) {
        auto it = std::find_if(n->entries.begin(), n->entries.end(),
                               [&](const cfg::yaml_entry& e) { return e.key == key; });
        if (it == n->entries.end())
            return nullptr;
        n = &it->value;
    }
    return n;
}

TEST(ConfigFiles, SegueYamlSpellsOutEveryDefault) {
    // segue.yaml is the commented list of defaults: a changed default must show up there too.
    // (Entries of lists and maps, e.g. example tenants, are not checked.)
    const std::string path = source_dir + "/config/segue.yaml";
    const cfg::yaml_node file = cfg::parse_yaml(read_file(path), path);
    const cfg::yaml_node loaded =
        cfg::settings_schema(shipped()).render(cfg::load_file(path, no_env, shipped()), false);
    const cfg::yaml_node defaults =
        cfg::settings_schema(shipped()).render(cfg::defaults(shipped()), false);
    for (const auto& section : cfg::document_schema(cfg::settings_schema(shipped())).sections) {
        for (const auto& row : section.rows) {
            if (row.name.find_first_of("[<") != std::string::npos)
                continue;
            EXPECT_NE(at(file, row.name), nullptr) << row.name << " is missing from " << path;
            const cfg::yaml_node* l = at(loaded, row.name);
            const cfg::yaml_node* d = at(defaults, row.name);
            ASSERT_TRUE(l && d) << row.name;
            EXPECT_EQ(cfg::emit_yaml(*l), cfg::emit_yaml(*d))
                << row.name << " in " << path << " differs from its default";
        }
    }
}

TEST(ConfigFiles, TestYamlIsValid) {
    cfg::settings s = cfg::load_file(source_dir + "/config/test.yaml", no_env, shipped());
    EXPECT_EQ(s.server.listen, "127.0.0.1:0");
}

TEST(ConfigDefaults, SchemaDefaultsEqualSettingsStructDefaults) {
    // Unredacted, so a drifting secret default would show too.
    EXPECT_EQ(cfg::render_yaml(cfg::settings_schema(shipped()), cfg::defaults(shipped()), false),
              cfg::render_yaml(cfg::settings_schema(shipped()), cfg::settings{}, false));
}

TEST(ConfigDefaults, EmptyDocumentGivesDefaults) {
    EXPECT_EQ(cfg::render_effective(load(""), shipped()),
              cfg::render_effective(cfg::defaults(shipped()), shipped()));
    EXPECT_EQ(cfg::render_effective(load("# only a comment\n"), shipped()),
              cfg::render_effective(cfg::defaults(shipped()), shipped()));
    EXPECT_EQ(cfg::render_effective(load("server:\nlog: ~\n"), shipped()),
              cfg::render_effective(cfg::defaults(shipped()), shipped()));
}

TEST(ConfigSchema, SelfCheckFindsNoMistakes) {
    // Defaults within bounds, every setting described, enums named.
    EXPECT_EQ(cfg::self_check(cfg::settings_schema(shipped())), std::vector<std::string>{});
}

TEST(ConfigDocs, ReadmeEndsWithGeneratedDocs) {
    const std::string marker = "<!-- generated below: segue --config-docs -->\n";
    const std::string path = source_dir + "/config/README.md";
    const std::string readme = read_file(path);
    const std::string docs = cfg::render_docs(shipped());
    auto at = readme.find(marker);
    ASSERT_NE(at, std::string::npos) << path << " lacks the marker line " << marker;
    const std::string intro = readme.substr(0, at + marker.size());
    const std::string expected = intro + "\n" + docs;
    if (readme != expected && std::getenv("SEGUE_UPDATE_CONFIG_DOCS")) {
        std::ofstream(path, std::ios::binary | std::ios::trunc) << expected;
        GTEST_SKIP() << "rewrote " << path;
    }
    EXPECT_NE(readme.find(docs), std::string::npos);
    EXPECT_EQ(readme, expected)
        << "config/README.md is out of date: regenerate it (see its intro), e.g. "
           "SEGUE_UPDATE_CONFIG_DOCS=1 ./build/segue_unit_tests --gtest_filter='ConfigDocs*'";
}

TEST(ConfigDocs, DocumentEverySetting) {
    const std::string docs = cfg::render_docs(shipped());
    for (const char* name :
         {"`server.listen`", "`server.drain_timeout`", "`limits.max_header_bytes`",
          "`limits.max_requests_per_connection`", "`log.level`", "`log.access`"})
        EXPECT_NE(docs.find(name), std::string::npos) << name;
    EXPECT_NE(docs.find("| `limits.max_header_bytes` | byte size | `16KiB` | `1KiB` .. `1MiB` |"),
              std::string::npos)
        << docs;
    EXPECT_NE(docs.find("`debug`, `info`, `warn`, `error`"), std::string::npos);
    EXPECT_NE(docs.find("`\"127.0.0.1:8080\"`"), std::string::npos);
}

// ---- Loading valid files ------------------------------------------------------------------------

TEST(ConfigLoad, ValidFileAccepted) {
    cfg::settings s = load(R"(
server:
  listen: "[::1]:9000"
  io_threads: 4
  max_connections: 500
  drain_timeout: 1m30s
  port_file: /tmp/segue.port
limits:
  max_header_bytes: 32KiB
  max_body_bytes: 4096
  header_timeout: 250ms
  idle_timeout: 2m
  body_read_timeout: 1h
  write_timeout: 45s
  max_requests_per_connection: 100
log:
  level: debug
  access: false
)");
    EXPECT_EQ(s.server.listen, "[::1]:9000");
    EXPECT_EQ(s.server.io_threads, 4);
    EXPECT_EQ(s.server.max_connections, 500);
    EXPECT_EQ(s.server.drain_timeout, 90s);
    EXPECT_EQ(s.server.port_file, "/tmp/segue.port");
    EXPECT_EQ(s.limits.max_header_bytes, 32u * 1024);
    EXPECT_EQ(s.limits.max_body_bytes, 4096u);
    EXPECT_EQ(s.limits.header_timeout, 250ms);
    EXPECT_EQ(s.limits.idle_timeout, 2min);
    EXPECT_EQ(s.limits.body_read_timeout, 1h);
    EXPECT_EQ(s.limits.write_timeout, 45s);
    EXPECT_EQ(s.limits.max_requests_per_connection, 100);
    EXPECT_EQ(s.log.level, cfg::log_level::debug);
    EXPECT_FALSE(s.log.access);
}

TEST(ConfigLoad, UnsetKeysKeepDefaults) {
    cfg::settings s = load("limits:\n  idle_timeout: 5s\n");
    EXPECT_EQ(s.limits.idle_timeout, 5s);
    EXPECT_EQ(s.limits.header_timeout, cfg::settings{}.limits.header_timeout);
    EXPECT_EQ(s.server.listen, "127.0.0.1:8080");
}

TEST(ConfigLoad, RenderedEffectiveConfigLoadsBackUnchanged) {
    cfg::settings s = load("server:\n  listen: 0.0.0.0:0\nlimits:\n  max_body_bytes: 1000\n");
    std::string yaml = cfg::render_effective(s, shipped());
    EXPECT_EQ(cfg::render_effective(load(yaml), shipped()), yaml);
}

TEST(ConfigLoad, LoadFileNamesThePathInErrors) {
    auto path = std::filesystem::temp_directory_path() / "segue_config_test_bad.yaml";
    std::ofstream(path) << "server:\n  io_threads: -1\n";
    try {
        cfg::load_file(path.string(), no_env, shipped());
        ADD_FAILURE() << "expected a config_error";
    } catch (const cfg::config_error& e) {
        EXPECT_EQ(std::string(e.what()),
                  path.string() + ":2: server.io_threads: -1 is below the minimum 0");
    }
    std::filesystem::remove(path);
}

TEST(ConfigLoad, MissingFileIsAConfigError) {
    try {
        cfg::load_file("/nonexistent/segue.yaml", no_env, shipped());
        ADD_FAILURE() << "expected a config_error";
    } catch (const cfg::config_error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/segue.yaml: cannot open"),
                  std::string::npos)
            << e.what();
    }
}

TEST(ConfigLoad, ADirectoryIsAConfigError) {
    // It opens, and read as nothing it would be the embedded defaults: a mistyped path.
    try {
        cfg::load_file("/tmp", no_env, shipped());
        ADD_FAILURE() << "expected a config_error";
    } catch (const cfg::config_error& e) {
        EXPECT_NE(std::string(e.what()).find("/tmp: is a directory"), std::string::npos)
            << e.what();
    }
}

// A lease below 1500ms could expire under its own renewal: refused, naming the setting.
TEST(ConfigErrors, ALeaseTooShortToRenewIsRefusedByName) {
    EXPECT_EQ(error_of("engine:\n  lease: 1s\n"),
              "test.yaml:2: engine.lease: 1s is below the minimum 1500ms");
    EXPECT_EQ(error_of("webhooks:\n  lease: 1200ms\n  timeout: 1s\n"),
              "test.yaml:2: webhooks.lease: 1200ms is below the minimum 1500ms");
}

// What start-up would refuse, loading refuses (so --check-config does): providers a route or
// the default names must be enabled; one key and one name per tenant.
TEST(ConfigErrors, CrossSectionRulesAreCheckedAtLoad) {
    EXPECT_EQ(error_of("api:\n  default_provider: nope\n"),
              "test.yaml:2: api.default_provider: 'nope' is not a known provider");
    EXPECT_EQ(error_of("providers:\n  sandbox:\n    enabled: false\n"),
              "test.yaml:1: api.default_provider: 'sandbox' is not enabled "
              "(providers.sandbox.enabled)");
    EXPECT_EQ(error_of("routing:\n  routes:\n    main:\n      chain: [{provider: musicgpt}]\n"),
              "test.yaml:4: routing.routes.main.chain[0].provider: 'musicgpt' is not enabled "
              "(providers.musicgpt.enabled)");
    EXPECT_EQ(error_of("tenants:\n  - {name: a, api_keys: [k1]}\n  - {name: b, api_keys: [k2, "
                       "k1]}\n"),
              "test.yaml:3: tenants[1].api_keys[1]: this key is also a key of tenant 'a'");
    // The same key as its SHA-256 is the same key.
    EXPECT_EQ(error_of("tenants:\n  - {name: a, api_keys: [k1]}\n  - {name: b, api_keys: "
                       "['sha256:" +
                       segue::util::sha256_hex("k1") + "']}\n"),
              "test.yaml:3: tenants[1].api_keys[0]: this key is also a key of tenant 'a'");
    // Every problem at once, each at its own line.
    EXPECT_EQ(error_of("api:\n  default_provider: nope\n"
                       "tenants:\n  - {name: a, api_keys: [k1]}\n  - {name: A, api_keys: [k2]}\n"
                       "  - {name: '', api_keys: [k3]}\n"
                       "routing:\n  routes:\n    r:\n      chain: [{provider: sandbox}, "
                       "{provider: sandbox}]\n"),
              "test.yaml:2: api.default_provider: 'nope' is not a known provider\n"
              "test.yaml:5: tenants[1].name: 'A' is already the name of tenant 'a'\n"
              "test.yaml:6: tenants[2].name: a tenant needs a name\n"
              "test.yaml:10: routing.routes.r.chain[1].provider: 'sandbox' is already in this "
              "chain");
}

// What would fail every task at once is refused at load: an enabled provider reached by plain
// http while upstream.allow_plain_http is off; a public_base_url that is not an http(s) base.
TEST(ConfigErrors, SettingsThatWouldFailEveryTaskAreRefused) {
    EXPECT_EQ(error_of("providers:\n  musicgpt:\n    enabled: true\n    api_key: k\n"
                       "    base_url: http://127.0.0.1:9/api/public\n"),
              "test.yaml:5: providers.musicgpt.base_url: plain http is refused "
              "(upstream.allow_plain_http: false): use https, or allow plain http for a test "
              "setup");
    EXPECT_NO_THROW(
        load("upstream:\n  allow_plain_http: true\nproviders:\n  musicgpt:\n"
             "    enabled: true\n    api_key: k\n"
             "    base_url: http://127.0.0.1:9/api/public\n"));
    for (const char* bad : {"ftp://x", "segue.example.com", "https://x/", "https://x?a=1"})
        EXPECT_NE(error_of(std::string("api:\n  public_base_url: \"") + bad + "\"\n")
                      .find("api.public_base_url"),
                  std::string::npos)
            << bad;
    EXPECT_NO_THROW(load("api:\n  public_base_url: https://segue.example.com\n"));
    EXPECT_NO_THROW(load("api:\n  public_base_url: http://127.0.0.1:8080/gw\n"));
    // A signing key anyone could guess would let anyone sign links to every file.
    EXPECT_EQ(error_of("api:\n  url_signing_key: x\n"),
              "test.yaml:2: api.url_signing_key: must be at least 16 characters (it has 1): "
              "anyone who guesses it can sign links to every file; use e.g. openssl rand -hex 32");
    EXPECT_NO_THROW(load("api:\n  url_signing_key: 0123456789abcdef\n"));
    EXPECT_NO_THROW(load("api:\n  url_signing_key: \"\"\n"));
    // A provider's base URL without a host would fail every task with a bad URL.
    for (const char* bad : {"http://", "https://:8080/api", "https:///api/v1", "api.example"})
        for (const char* p : {"musicgpt", "musicapi"})
            EXPECT_NE(error_of(std::string("upstream:\n  allow_plain_http: true\nproviders:\n  ") +
                               p + ":\n    base_url: \"" + bad + "\"\n")
                          .find("base_url must be an http(s) URL with a host"),
                      std::string::npos)
                << p << " " << bad;
    // A longest delay shorter than the first is a mistake, not a cap.
    EXPECT_NE(error_of("retry:\n  transient:\n    initial: 1m\n    max: 5s\n")
                  .find("max must be at least initial"),
              std::string::npos);
    EXPECT_NE(
        error_of("breakers:\n  open: 1h\n  max_open: 1s\n").find("max_open must be at least open"),
        std::string::npos)
        << error_of("breakers:\n  open: 1h\n  max_open: 1s\n");
    EXPECT_NE(error_of("outputs:\n  mirror:\n    initial_backoff: 10m\n    max_backoff: 1s\n")
                  .find("max_backoff must be at least initial_backoff"),
              std::string::npos);
    // A CA bundle that cannot be read, or is not PEM, is named now, not at the first TLS call.
    EXPECT_NE(error_of("upstream:\n  ca_file: /nonexistent/ca.pem\n")
                  .find("upstream.ca_file: cannot read /nonexistent/ca.pem"),
              std::string::npos)
        << error_of("upstream:\n  ca_file: /nonexistent/ca.pem\n");
    EXPECT_NE(error_of("upstream:\n  ca_file: " + source_dir + "/README.md\n")
                  .find("holds no PEM certificate"),
              std::string::npos);
}

// A list entry's problem names the entry, not only the section.
TEST(ConfigErrors, AListEntryIsNamedByItsIndex) {
    EXPECT_NE(error_of("fetch:\n  allow_cidrs: [127.0.0.1/32, 300.1.1.1/33]\n")
                  .find("fetch: allow_cidrs[1]: not a CIDR: 300.1.1.1/33"),
              std::string::npos)
        << error_of("fetch:\n  allow_cidrs: [127.0.0.1/32, 300.1.1.1/33]\n");
    const auto empty_key = error_of("tenants:\n  - name: a\n    api_keys: [k1, \"\"]\n");
    EXPECT_NE(empty_key.find("api_keys[1]: must not be empty"), std::string::npos) << empty_key;
}

// A PostgreSQL URL that is neither libpq form is named by --check-config, without its value.
TEST(ConfigErrors, APostgresUrlOfNeitherFormIsRefusedUnquoted) {
    const auto bad = error_of("storage:\n  postgres:\n    url: \"notaurl s3cr3tpw\"\n");
    EXPECT_NE(bad.find("storage.postgres.url: must be a postgresql:// URL"), std::string::npos)
        << bad;
    EXPECT_EQ(bad.find("s3cr3tpw"), std::string::npos) << bad;
    for (const char* ok : {"postgresql://u:p@h:5432/db", "postgres://h/db",
                           "postgresql:///db?host=/run/postgresql", "host=/tmp dbname=segue"})
        EXPECT_NO_THROW(load(std::string("storage:\n  postgres:\n    url: \"") + ok + "\"\n"))
            << ok;
}

// ---- Refused configs: each names the file, line and full key path -------------------------------

TEST(ConfigErrors, UnknownNestedKeyWithSuggestion) {
    EXPECT_EQ(error_of("server:\n  lisen: 127.0.0.1:1\n"),
              "test.yaml:2: server.lisen: unknown setting (did you mean 'listen'?)");
    EXPECT_EQ(error_of("srever:\n  listen: 127.0.0.1:1\n"),
              "test.yaml:1: srever: unknown setting (did you mean 'server'?)");
}

TEST(ConfigErrors, UnknownKeyInWrongSectionPointsToTheRightOne) {
    EXPECT_EQ(error_of("server:\n  max_body_bytes: 1KiB\n"),
              "test.yaml:2: server.max_body_bytes: unknown setting here (did you mean "
              "'limits.max_body_bytes'?)");
}

TEST(ConfigErrors, UnknownKeyWithoutSuggestionListsKnownOnes) {
    EXPECT_EQ(error_of("log:\n  colour: true\n"),
              "test.yaml:2: log.colour: unknown setting; expected one of: level, access");
}

TEST(ConfigErrors, OutOfRange) {
    EXPECT_EQ(error_of("limits:\n  max_header_bytes: 512\n"),
              "test.yaml:2: limits.max_header_bytes: 512 is below the minimum 1KiB");
    EXPECT_EQ(error_of("limits:\n  max_header_bytes: 2MiB\n"),
              "test.yaml:2: limits.max_header_bytes: 2MiB is above the maximum 1MiB");
    EXPECT_EQ(error_of("server:\n  io_threads: 100000000000\n"),
              "test.yaml:2: server.io_threads: 100000000000 is above the maximum 256");
    EXPECT_EQ(error_of("limits:\n  header_timeout: 10ms\n"),
              "test.yaml:2: limits.header_timeout: 10ms is below the minimum 100ms");
}

TEST(ConfigErrors, WrongType) {
    EXPECT_EQ(error_of("server:\n  max_connections: lots\n"),
              "test.yaml:2: server.max_connections: expected an integer, got 'lots'");
    EXPECT_EQ(error_of("server:\n  max_connections: 1.5\n"),
              "test.yaml:2: server.max_connections: expected an integer, got '1.5'");
    EXPECT_EQ(error_of("log:\n  access: maybe\n"),
              "test.yaml:2: log.access: expected true or false, got 'maybe'");
    EXPECT_EQ(error_of("server:\n  io_threads: [1, 2]\n"),
              "test.yaml:2: server.io_threads: expected an integer, got a list");
    EXPECT_EQ(error_of("server:\n  listen:\n"),
              "test.yaml:2: server.listen: expected a string, got an empty value (write \"\" for "
              "an empty string)");
}

TEST(ConfigErrors, ListOrScalarWhereMappingBelongs) {
    EXPECT_EQ(error_of("server:\n  - listen\n"),
              "test.yaml:2: server: expected a mapping, got a list");
    EXPECT_EQ(error_of("limits: 5\n"),
              "test.yaml:1: limits: expected a mapping, got a single value");
    EXPECT_EQ(error_of("- a\n- b\n"), "test.yaml:1: expected a mapping, got a list");
}

TEST(ConfigErrors, BadDuration) {
    EXPECT_EQ(error_of("limits:\n  idle_timeout: 10 seconds\n"),
              "test.yaml:2: limits.idle_timeout: unknown duration unit 'seconds' in '10 seconds' "
              "(use ms, s, m or h)");
    EXPECT_EQ(error_of("limits:\n  idle_timeout: 30\n"),
              "test.yaml:2: limits.idle_timeout: '30' has no unit; write e.g. 30s for seconds or "
              "30ms for milliseconds");
    EXPECT_EQ(error_of("limits:\n  idle_timeout: 1.5s\n"),
              "test.yaml:2: limits.idle_timeout: '1.5s' is not a duration (e.g. 250ms, 10s, 5m, 2h "
              "or 1m30s)");
    EXPECT_EQ(error_of("limits:\n  idle_timeout: -5s\n"),
              "test.yaml:2: limits.idle_timeout: '-5s' is not a duration (e.g. 250ms, 10s, 5m, 2h "
              "or 1m30s)");
}

TEST(ConfigErrors, BadSize) {
    EXPECT_EQ(error_of("limits:\n  max_body_bytes: 200MB\n"),
              "test.yaml:2: limits.max_body_bytes: ambiguous size unit 'MB' in '200MB': use KiB, "
              "MiB or GiB (powers of 1024) or a plain number of bytes");
    EXPECT_EQ(error_of("limits:\n  max_body_bytes: big\n"),
              "test.yaml:2: limits.max_body_bytes: 'big' is not a byte size (e.g. 4096, 16KiB, "
              "1MiB or 2GiB)");
    EXPECT_EQ(error_of("limits:\n  max_body_bytes: 99999999999GiB\n"),
              "test.yaml:2: limits.max_body_bytes: '99999999999GiB' is too large");
}

TEST(ConfigErrors, BadEnum) {
    EXPECT_EQ(error_of("log:\n  level: verbose\n"),
              "test.yaml:2: log.level: 'verbose' is not one of debug, info, warn, error");
    EXPECT_EQ(error_of("log:\n  level: warning\n"),
              "test.yaml:2: log.level: 'warning' is not one of debug, info, warn, error (did you "
              "mean 'warn'?)");
}

TEST(ConfigErrors, ListenMustBeHostPort) {
    EXPECT_EQ(error_of("server:\n  listen: 8080\n"),
              "test.yaml:2: server.listen: '8080' is not host:port (e.g. 127.0.0.1:8080 or "
              "[::1]:8080; port 0 picks a free port)");
    EXPECT_EQ(error_of("server:\n  listen: \"::1:8080\"\n"),
              "test.yaml:2: server.listen: an IPv6 address must be in brackets, e.g. [::1]:8080");
    EXPECT_EQ(error_of("server:\n  listen: localhost:99999\n"),
              "test.yaml:2: server.listen: the port must be a number from 0 to 65535, got '99999'");
    EXPECT_EQ(error_of("server:\n  listen: \":80\"\n"),
              "test.yaml:2: server.listen: the host is empty (use 0.0.0.0:PORT to listen on every "
              "interface)");
    EXPECT_EQ(load("server:\n  listen: localhost:0\n").server.listen, "localhost:0");
}

TEST(ConfigErrors, DuplicateKeys) {
    EXPECT_EQ(error_of("log:\n  level: info\n  access: true\n  level: debug\n"),
              "test.yaml:4: log.level: duplicate key (first set on line 2)");
    EXPECT_EQ(error_of("log: {}\nlog: {}\n"),
              "test.yaml:2: log: duplicate key (first set on line 1)");
}

TEST(ConfigErrors, YamlSyntaxErrorHasLine) {
    std::string e = error_of("server:\n  listen: [1\nlog: {}\n");
    EXPECT_EQ(e.rfind("test.yaml:", 0), 0u) << e;
    EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
}

TEST(ConfigErrors, AllErrorsReportedTogetherInFileOrder) {
    const std::string yaml = R"(server:
  listen: nowhere
  io_threads: many
limits:
  max_header_bytes: 512
  idle_timeout: 5 minutes
log:
  level: loud
  colour: true
)";
    try {
        load(yaml);
        FAIL() << "expected a config_error";
    } catch (const cfg::config_error& e) {
        EXPECT_EQ(e.diagnostics().size(), 6u);
        EXPECT_EQ(std::string(e.what()),
                  "test.yaml:2: server.listen: 'nowhere' is not host:port (e.g. 127.0.0.1:8080 or "
                  "[::1]:8080; port 0 picks a free port)\n"
                  "test.yaml:3: server.io_threads: expected an integer, got 'many'\n"
                  "test.yaml:5: limits.max_header_bytes: 512 is below the minimum 1KiB\n"
                  "test.yaml:6: limits.idle_timeout: unknown duration unit 'minutes' in '5 "
                  "minutes' (use ms, s, m or h)\n"
                  "test.yaml:8: log.level: 'loud' is not one of debug, info, warn, error\n"
                  "test.yaml:9: log.colour: unknown setting; expected one of: level, access");
        EXPECT_EQ(e.diagnostics()[2].path, "limits.max_header_bytes");
        EXPECT_EQ(e.diagnostics()[2].line, 5);
    }
}

// ---- ${VAR} substitution -----------------------------------------------------------------------

TEST(ConfigEnv, VariableSubstitutedBeforeConversion) {
    auto env = env_of({{"PORT", "9090"}, {"CONNS", "42"}, {"IDLE", "3s"}});
    cfg::settings s = load(
        "server:\n  listen: 127.0.0.1:${PORT}\n  max_connections: ${CONNS}\n"
        "limits:\n  idle_timeout: ${IDLE}\n",
        env);
    EXPECT_EQ(s.server.listen, "127.0.0.1:9090");
    EXPECT_EQ(s.server.max_connections, 42);
    EXPECT_EQ(s.limits.idle_timeout, 3s);
    EXPECT_EQ(error_of("server:\n  max_connections: ${CONNS}\n", env_of({{"CONNS", "lots"}})),
              "test.yaml:2: server.max_connections: expected an integer, got 'lots'");
}

TEST(ConfigEnv, MissingVariableIsAnErrorNamingIt) {
    EXPECT_EQ(error_of("server:\n  port_file: /run/${RUN_DIR}/port\n"),
              "test.yaml:2: server.port_file: environment variable RUN_DIR is not set (use "
              "${RUN_DIR:-default} to give a default)");
}

TEST(ConfigEnv, DefaultUsedWhenUnsetOrEmpty) {
    const std::string yaml = "server:\n  listen: ${ADDR:-127.0.0.1:7000}\n";
    EXPECT_EQ(load(yaml).server.listen, "127.0.0.1:7000");
    EXPECT_EQ(load(yaml, env_of({{"ADDR", ""}})).server.listen, "127.0.0.1:7000");
    EXPECT_EQ(load(yaml, env_of({{"ADDR", "0.0.0.0:1"}})).server.listen, "0.0.0.0:1");
    EXPECT_EQ(load("server:\n  port_file: \"${PF:-}\"\n").server.port_file, "");
}

TEST(ConfigEnv, DoubleDollarEscapesALiteral) {
    EXPECT_EQ(load("server:\n  port_file: \"/tmp/$${HOME}/x\"\n").server.port_file,
              "/tmp/${HOME}/x");
    EXPECT_EQ(load("server:\n  port_file: /tmp/$$x\n").server.port_file, "/tmp/$$x");
}

TEST(ConfigEnv, MalformedReferences) {
    EXPECT_EQ(error_of("server:\n  port_file: \"${OOPS\"\n"),
              "test.yaml:2: server.port_file: unterminated ${ (write $${ for a literal ${)");
    EXPECT_EQ(error_of("server:\n  port_file: \"${1X}\"\n"),
              "test.yaml:2: server.port_file: invalid environment variable name '1X' in ${...} "
              "(letters, digits and _; write $${ for a literal ${)");
}

TEST(ConfigProviders, UnknownProviderNamesTheKnownOnes) {
    EXPECT_EQ(error_of("providers:\n  musicgtp:\n    enabled: true\n"),
              "test.yaml:2: providers.musicgtp: unknown provider (did you mean 'musicgpt'?); "
              "known providers: sandbox, musicgpt, musicapi");
    // A provider's own block is checked by its own schema, with its bounds.
    EXPECT_EQ(error_of("providers:\n  sandbox:\n    price: -1\n"),
              "test.yaml:3: providers.sandbox.price: -1 is below the minimum 0");
    // Without a block, a provider keeps its defaults (and the sandbox is on by default).
    const cfg::settings s = load("");
    ASSERT_EQ(s.providers.count("sandbox"), 1u);
    EXPECT_TRUE(s.providers.at("sandbox")->enabled());
    EXPECT_EQ(s.providers.at("musicgpt")->price(), 42.0);
}

// ---- Rendering ---------------------------------------------------------------------------------

TEST(ConfigRender, EffectiveConfigShowsEverySetting) {
    const std::string yaml = cfg::render_effective(cfg::defaults(shipped()), shipped());
    // The head, exactly (format and order); the rest is checked by the round trip below.
    EXPECT_EQ(yaml.substr(0, yaml.find("limits:")),
              "server:\n"
              "  listen: \"127.0.0.1:8080\"\n"
              "  io_threads: 0\n"
              "  max_connections: 10000\n"
              "  shutdown_delay: 0s\n"
              "  drain_timeout: 20s\n"
              "  drain_first_request_wait: 1s\n"
              "  port_file: \"\"\n");
    for (auto section : {"limits:\n", "log:\n", "tenants: []\n", "storage:\n", "api:\n",
                         "engine:\n", "providers:\n  sandbox:\n"})
        EXPECT_NE(yaml.find(section), std::string::npos) << section;
    EXPECT_EQ(cfg::render_effective(cfg::load_string(yaml, "effective.yaml", no_env, shipped()),
                                    shipped()),
              yaml);
}

// ---- Values ------------------------------------------------------------------------------------

TEST(ConfigValues, DurationSyntax) {
    std::string error;
    using cfg::detail::parse_duration;
    EXPECT_EQ(parse_duration("250ms", error), 250ms);
    EXPECT_EQ(parse_duration("10s", error), 10s);
    EXPECT_EQ(parse_duration("5m", error), 5min);
    EXPECT_EQ(parse_duration("2h", error), 2h);
    EXPECT_EQ(parse_duration("1m30s", error), 90s);
    EXPECT_EQ(parse_duration("1h 1ms", error), 1h + 1ms);
    EXPECT_EQ(parse_duration("0", error), 0ms);
    EXPECT_EQ(parse_duration("10 s", error), 10s);
    for (const char* bad : {"", "10", "s", "10d", "1.5s", "-1s", "10us", "99999999999999999h",
                            "30s1m", "1m1m", "1s 500ms 2ms"})
        EXPECT_EQ(parse_duration(bad, error), std::nullopt) << bad;
    EXPECT_EQ(cfg::detail::format_duration(90s), "90s");
    EXPECT_EQ(cfg::detail::format_duration(2h), "2h");
    EXPECT_EQ(cfg::detail::format_duration(1500ms), "1500ms");
    EXPECT_EQ(cfg::detail::format_duration(0ms), "0s");
}

TEST(ConfigValues, ByteSizeSyntax) {
    std::string error;
    using cfg::detail::parse_byte_size;
    EXPECT_EQ(parse_byte_size("4096", error), 4096u);
    EXPECT_EQ(parse_byte_size("512B", error), 512u);
    EXPECT_EQ(parse_byte_size("16KiB", error), 16u * 1024);
    EXPECT_EQ(parse_byte_size("1MiB", error), 1024u * 1024);
    EXPECT_EQ(parse_byte_size("2 GiB", error), 2ull * 1024 * 1024 * 1024);
    for (const char* bad : {"", "KiB", "16KB", "1M", "1.5MiB", "-1", "1 MiBs"})
        EXPECT_EQ(parse_byte_size(bad, error), std::nullopt) << bad;
    EXPECT_EQ(cfg::detail::format_byte_size(16 * 1024), "16KiB");
    EXPECT_EQ(cfg::detail::format_byte_size(1000), "1000");
    EXPECT_EQ(cfg::detail::format_byte_size(3 * cfg::GiB), "3GiB");
}

TEST(ConfigValues, HostPort) {
    auto v4 = cfg::parse_host_port("127.0.0.1:8080");
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->host, "127.0.0.1");
    EXPECT_EQ(v4->port, 8080);
    auto v6 = cfg::parse_host_port("[::1]:0");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host, "::1");
    EXPECT_EQ(v6->port, 0);
    for (const char* bad : {"", "8080", "host:", ":80", "::1:80", "[::1]80", "a b:1", "h:-1"})
        EXPECT_EQ(cfg::parse_host_port(bad), std::nullopt) << bad;
}

// ---- A test-only schema with lists, maps, nesting and secrets -----------------------------------
// (the real settings do not have these yet; tenants and providers will).

struct tenant {
    std::string name;
    std::vector<std::string> api_keys;
    double rate = 0;
    bool enabled = true;
};

struct retry_policy {
    int attempts = 0;
    cfg::duration backoff{};
};

struct provider {
    std::string base_url;
    std::string api_key;
    cfg::duration timeout{};
    retry_policy retry;
};

struct test_root {
    std::string name;
    std::uint64_t buffer = 0;
    std::vector<tenant> tenants;
    std::map<std::string, provider> providers;
};

const cfg::object_schema<test_root>& test_schema() {
    static const cfg::object_schema<test_root> schema = [] {
        cfg::object_schema<tenant> t;
        t.field("name", &tenant::name, "Tenant name.").required();
        t.field("api_keys", &tenant::api_keys, "Keys this tenant may use.").secret();
        t.field("rate", &tenant::rate, "Requests per second.").def(1.5).range(0.0, 1000.0);
        t.field("enabled", &tenant::enabled, "Whether requests are accepted.").def(true);
        t.validate([](const tenant& x) -> std::optional<std::string> {
            if (x.enabled && x.api_keys.empty())
                return "an enabled tenant needs api_keys";
            return std::nullopt;
        });

        cfg::object_schema<retry_policy> r;
        r.field("attempts", &retry_policy::attempts, "Tries.").def(3).range(1, 10);
        r.field("backoff", &retry_policy::backoff, "Pause.").def(100ms).range(1ms, 1min);

        cfg::object_schema<provider> p;
        p.field("base_url", &provider::base_url, "Upstream URL.").required();
        p.field("api_key", &provider::api_key, "Upstream credential.").secret().def("");
        p.field("timeout", &provider::timeout, "Upstream timeout.").def(30s).range(1s, 10min);
        p.object("retry", &provider::retry, std::move(r), "Retries.");

        cfg::object_schema<test_root> root;
        root.field("name", &test_root::name, "Deployment name.").def("dev");
        root.field("buffer", &test_root::buffer, "Buffer.").byte_size().def(4 * cfg::KiB);
        root.list("tenants", &test_root::tenants, std::move(t), "Tenants.");
        root.map("providers", &test_root::providers, std::move(p), "Providers.");
        return root;
    }();
    return schema;
}

test_root load_test(const std::string& yaml, const cfg::env_lookup& env = no_env) {
    return cfg::load_yaml(test_schema(), yaml, "test.yaml", env);
}

std::string test_error_of(const std::string& yaml, const cfg::env_lookup& env = no_env) {
    try {
        load_test(yaml, env);
    } catch (const cfg::config_error& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected a config_error for:\n" << yaml;
    return {};
}

const std::string valid_test_yaml = R"(name: prod
tenants:
  - name: acme
    api_keys: ["${ACME_KEY}", sk-second]
    rate: 2.5
  - name: globex
    enabled: false
providers:
  musicgpt:
    base_url: https://api.musicgpt.example
    api_key: ${MUSICGPT_KEY:-sk-fallback}
    timeout: 2m
    retry:
      attempts: 5
  suno:
    base_url: https://suno.example
)";

TEST(ConfigSchemaComposite, ListsMapsAndNestingLoad) {
    test_root r = load_test(valid_test_yaml, env_of({{"ACME_KEY", "sk-acme-secret"}}));
    EXPECT_EQ(r.name, "prod");
    ASSERT_EQ(r.tenants.size(), 2u);
    EXPECT_EQ(r.tenants[0].name, "acme");
    EXPECT_EQ(r.tenants[0].api_keys, (std::vector<std::string>{"sk-acme-secret", "sk-second"}));
    EXPECT_EQ(r.tenants[0].rate, 2.5);
    EXPECT_EQ(r.tenants[1].rate, 1.5);  // element defaults from the schema
    EXPECT_FALSE(r.tenants[1].enabled);
    ASSERT_EQ(r.providers.size(), 2u);
    EXPECT_EQ(r.providers["musicgpt"].api_key, "sk-fallback");
    EXPECT_EQ(r.providers["musicgpt"].timeout, 2min);
    EXPECT_EQ(r.providers["musicgpt"].retry.attempts, 5);
    EXPECT_EQ(r.providers["musicgpt"].retry.backoff, 100ms);
    EXPECT_EQ(r.providers["suno"].timeout, 30s);
    EXPECT_EQ(r.providers["suno"].retry.attempts, 3);
}

TEST(ConfigSchemaComposite, ListPathsInErrors) {
    EXPECT_EQ(test_error_of(R"(tenants:
  - name: acme
    api_keys: [k]
  - rate: 2
    api_keys: [k]
  - name: c
    api_keys: [k]
    rate: fast
    enabeld: true
)"),
              "test.yaml:4: tenants[1].name: required setting missing\n"
              "test.yaml:8: tenants[2].rate: expected a number, got 'fast'\n"
              "test.yaml:9: tenants[2].enabeld: unknown setting (did you mean 'enabled'?)");
    EXPECT_EQ(test_error_of("tenants:\n  - name: a\n    api_keys: [k, \"${NOPE}\"]\n"),
              "test.yaml:3: tenants[0].api_keys[1]: environment variable NOPE is not set (use "
              "${NOPE:-default} to give a default)");
    EXPECT_EQ(test_error_of("tenants:\n  name: a\n"),
              "test.yaml:2: tenants: expected a list, got a mapping");
}

TEST(ConfigSchemaComposite, MapPathsInErrors) {
    EXPECT_EQ(test_error_of(R"(providers:
  musicgpt:
    base_url: https://x
    timeout: 10 seconds
    retry:
      attempts: 11
      jitter: 1s
  suno: {}
)"),
              "test.yaml:4: providers.musicgpt.timeout: unknown duration unit 'seconds' in '10 "
              "seconds' (use ms, s, m or h)\n"
              "test.yaml:6: providers.musicgpt.retry.attempts: 11 is above the maximum 10\n"
              "test.yaml:7: providers.musicgpt.retry.jitter: unknown setting; expected one of: "
              "attempts, backoff\n"
              "test.yaml:8: providers.suno.base_url: required setting missing");
    EXPECT_EQ(test_error_of("providers:\n  - musicgpt\n"),
              "test.yaml:2: providers: expected a mapping of names to settings, got a list");
    EXPECT_EQ(test_error_of("providers:\n  a: {base_url: x}\n  a: {base_url: y}\n"),
              "test.yaml:3: providers.a: duplicate key (first set on line 2)");
}

TEST(ConfigSchemaComposite, ObjectRulesRunAfterFieldsLoad) {
    EXPECT_EQ(test_error_of("tenants:\n  - name: a\n"),
              "test.yaml:2: tenants[0]: an enabled tenant needs api_keys");
}

TEST(ConfigSchemaComposite, SecretsRedactedInRender) {
    test_root r = load_test(valid_test_yaml, env_of({{"ACME_KEY", "sk-acme-secret"}}));
    const std::string yaml = cfg::render_yaml(test_schema(), r);
    EXPECT_EQ(yaml.find("sk-acme-secret"), std::string::npos) << yaml;
    EXPECT_EQ(yaml.find("sk-second"), std::string::npos) << yaml;
    EXPECT_EQ(yaml.find("sk-fallback"), std::string::npos) << yaml;
    EXPECT_EQ(yaml,
              "name: \"prod\"\n"
              "buffer: 4KiB\n"
              "tenants:\n"
              "  - name: \"acme\"\n"
              "    api_keys:\n"
              "      - \"<redacted>\"\n"
              "      - \"<redacted>\"\n"
              "    rate: 2.5\n"
              "    enabled: true\n"
              "  - name: \"globex\"\n"
              "    api_keys: []\n"
              "    rate: 1.5\n"
              "    enabled: false\n"
              "providers:\n"
              "  musicgpt:\n"
              "    base_url: \"https://api.musicgpt.example\"\n"
              "    api_key: \"<redacted>\"\n"
              "    timeout: 2m\n"
              "    retry:\n"
              "      attempts: 5\n"
              "      backoff: 100ms\n"
              "  suno:\n"
              "    base_url: \"https://suno.example\"\n"
              "    api_key: \"\"\n"
              "    timeout: 30s\n"
              "    retry:\n"
              "      attempts: 3\n"
              "      backoff: 100ms\n");
    // Unredacted output round-trips.
    EXPECT_EQ(
        cfg::render_yaml(test_schema(),
                         cfg::load_yaml(test_schema(), cfg::render_yaml(test_schema(), r, false),
                                        "rendered", no_env),
                         false),
        cfg::render_yaml(test_schema(), r, false));
}

TEST(ConfigSchemaComposite, DocsCoverNestedPaths) {
    const std::string docs = cfg::render_markdown(test_schema());
    EXPECT_NE(docs.find("### `tenants[]`"), std::string::npos) << docs;
    EXPECT_NE(docs.find("| `tenants[].name` | string | required |"), std::string::npos) << docs;
    EXPECT_NE(docs.find("| `tenants[].api_keys` | list of secret string | `[]` |"),
              std::string::npos)
        << docs;
    EXPECT_NE(docs.find("| `providers.<name>.retry.attempts` | integer | `3` | `1` .. `10` |"),
              std::string::npos)
        << docs;
    EXPECT_NE(docs.find("### Top level"), std::string::npos) << docs;
    EXPECT_EQ(cfg::self_check(test_schema()), std::vector<std::string>{});
}

TEST(ConfigSchemaComposite, SchemaMistakesAreCaught) {
    struct s {
        int n = 0;
        cfg::log_level level = cfg::log_level::info;
    };
    cfg::object_schema<s> schema;
    schema.field("n", &s::n, "").def(50).range(1, 10);
    schema.field("level", &s::level, "Level.").def(cfg::log_level::info);
    EXPECT_EQ(
        cfg::self_check(schema),
        (std::vector<std::string>{"n: no description", "n: default: 50 is above the maximum 10",
                                  "level: enum without values()",
                                  "level: default: value has no name in the schema"}));
    EXPECT_THROW(schema.field("n", &s::n, "again"), std::logic_error);
}

}  // namespace

// ---- Found by fuzzing --------------------------------------------------------------------------

TEST(ConfigFuzzFindings, SelfReferencingAliasIsAnErrorNotACrash) {
    EXPECT_THROW(cfg::load_string("&a [*a]", "x.yaml", no_env, shipped()), cfg::config_error);
    std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
    std::string prev = "a";
    for (int i = 0; i < 9; ++i) {
        std::string name = "l" + std::to_string(i);
        laughs += name + ": &" + name + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev +
                  ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n";
        prev = name;
    }
    EXPECT_THROW(cfg::load_string(laughs, "x.yaml", no_env, shipped()), cfg::config_error);
}

TEST(ConfigFuzzFindings, LoneCommaReturns) {
    EXPECT_THROW(cfg::load_string(",", "x.yaml", no_env, shipped()), cfg::config_error);
    EXPECT_THROW(cfg::load_string("a: 1\n---\nb: 2\n", "x.yaml", no_env, shipped()),
                 cfg::config_error);
}

TEST(ConfigFuzzFindings, LiteralDollarBraceRoundTrips) {
    auto s =
        cfg::load_string("server:\n  port_file: \"$${HOME}/p\"\n", "x.yaml", no_env, shipped());
    EXPECT_EQ(s.server.port_file, "${HOME}/p");
    auto again = cfg::load_string(cfg::render_effective(s, shipped()), "y.yaml", no_env, shipped());
    EXPECT_EQ(again.server.port_file, "${HOME}/p");
}

TEST(ConfigStorage, PostgresEngineNeedsAUrlAndTakesItFromTheEnvironment) {
    EXPECT_NE(error_of("storage:\n  engine: postgres\n").find("engine postgres needs postgres.url"),
              std::string::npos);
    EXPECT_NE(error_of("storage:\n  engine: mysql\n").find("storage.engine"), std::string::npos);
    const auto env = [](const std::string& name) -> std::optional<std::string> {
        if (name == "SEGUE_DATABASE_URL")
            return "postgresql://segue:pw@db:5432/segue";
        return std::nullopt;
    };
    const auto s = load(
        "storage:\n  engine: postgres\n  postgres:\n    url: ${SEGUE_DATABASE_URL}\n"
        "    pool_size: 12\n    statement_timeout: 2s\n",
        env);
    EXPECT_EQ(s.storage.engine, cfg::storage_engine::postgres);
    EXPECT_EQ(s.storage.postgres.url, "postgresql://segue:pw@db:5432/segue");
    EXPECT_EQ(s.storage.postgres.pool_size, 12);
    EXPECT_EQ(s.storage.postgres.statement_timeout, std::chrono::seconds(2));
    // The URL may hold a password: redacted in the effective config.
    EXPECT_EQ(cfg::render_effective(s, shipped()).find("segue:pw@"), std::string::npos);
    EXPECT_EQ(load("").storage.engine, cfg::storage_engine::sqlite);
}

TEST(ConfigStorage, PostgresBlobsNeedAUrl) {
    EXPECT_EQ(load("").storage.blobs, cfg::blob_backend::directory);
    EXPECT_NE(error_of("storage:\n  blobs: postgres\n").find("blobs: postgres needs postgres.url"),
              std::string::npos);
    EXPECT_NE(error_of("storage:\n  blobs: s3\n").find("storage.blobs"), std::string::npos);
    // Files in PostgreSQL with the task store in SQLite is allowed (one process, no shared disk
    // for files); usually both are on PostgreSQL.
    const auto s = load("storage:\n  blobs: postgres\n  postgres:\n    url: postgresql:///x\n");
    EXPECT_EQ(s.storage.blobs, cfg::blob_backend::postgres);
    EXPECT_EQ(s.storage.engine, cfg::storage_engine::sqlite);
}
