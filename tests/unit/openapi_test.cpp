// The OpenAPI document (docs/openapi.json) cannot drift from the code: the binary embeds the
// committed bytes, every problem code of the error table is documented with its status, and
// every /v1 and system route the gateway registers is a documented operation (and back).

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "gateway/api/openapi.hpp"
#include "gateway/api/problem.hpp"

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

const json::object& document() {
    static const json::value doc = json::parse(segue::api::openapi_document());
    return doc.as_object();
}

// The paths the document covers (tests/contract/contract.js inScope says the same).
bool in_scope(const std::string& path) {
    return path.rfind("/v1/", 0) == 0 || path == "/healthz" || path == "/readyz" ||
           path == "/metrics" || path == "/openapi.json";
}

// Every `routes.add("METHOD", "/path"` in the gateway's and providers' sources, as
// "method /path" (lower-case method, as OpenAPI writes it).
std::set<std::string> registered_routes() {
    const std::regex add(R"re(\.add\(\s*"([A-Z]+)"\s*,\s*"([^"]+)")re");
    std::set<std::string> out;
    for (const char* dir : {"gateway", "providers"}) {
        for (const auto& e : fs::recursive_directory_iterator(fs::path(SEGUE_SOURCE_DIR) / dir)) {
            if (e.path().extension() != ".cpp")
                continue;
            const std::string text = slurp(e.path());
            for (std::sregex_iterator it(text.begin(), text.end(), add), end; it != end; ++it) {
                std::string method = (*it)[1];
                for (auto& c : method)
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                if (in_scope((*it)[2]))
                    out.insert(method + " " + std::string((*it)[2]));
            }
        }
    }
    return out;
}

}  // namespace

TEST(OpenApi, ServedBytesAreTheCommittedFile) {
    const std::string committed = slurp(fs::path(SEGUE_SOURCE_DIR) / "docs" / "openapi.json");
    ASSERT_FALSE(committed.empty());
    EXPECT_EQ(segue::api::openapi_document(), committed)
        << "docs/openapi.json changed since the build embedded it: rebuild";
    EXPECT_EQ(document().at("openapi").as_string(), "3.1.0");
}

TEST(OpenApi, EveryProblemCodeIsDocumentedWithItsStatus) {
    std::map<std::string, std::string> documented;  // code -> its description ("404: ...")
    for (const auto& v :
         document().at("components").at("schemas").at("ProblemCode").at("oneOf").as_array()) {
        const auto& o = v.as_object();
        documented[std::string(o.at("const").as_string())] =
            std::string(o.at("description").as_string());
    }
    std::set<std::string> codes;
    for (const auto& e : segue::api::all_errors()) {
        const std::string code(e.code);
        codes.insert(code);
        auto it = documented.find(code);
        ASSERT_NE(it, documented.end())
            << "problem code " << code << " is not in docs/openapi.json (ProblemCode)";
        EXPECT_EQ(it->second.rfind(std::to_string(e.status) + ":", 0), 0u)
            << code << " is documented as \"" << it->second << "\", its status is " << e.status;
    }
    for (const auto& [code, _] : documented)
        EXPECT_TRUE(codes.contains(code)) << "ProblemCode " << code << " is no error_kind's code";
}

TEST(OpenApi, EveryRouteIsDocumentedAndEveryOperationIsARoute) {
    const auto routes = registered_routes();
    ASSERT_GE(routes.size(), 15u) << "the route scan found too few routes.add calls";
    std::set<std::string> operations;
    for (const auto& [path, item] : document().at("paths").as_object())
        for (const auto& [method, op] : item.as_object())
            if (method != "parameters" && method != "summary" && method != "description")
                operations.insert(std::string(method) + " " + std::string(path));
    for (const auto& r : routes)
        EXPECT_TRUE(operations.contains(r))
            << r << " is a route of the gateway but not in docs/openapi.json (see README, API)";
    for (const auto& op : operations)
        EXPECT_TRUE(routes.contains(op)) << op << " is documented but no route has it";
}
