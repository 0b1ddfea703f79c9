#pragma once
// The credit ledger's pure parts: credits <-> the stored integer unit, splitting a hold across
// outputs, and the public JSON of entries and totals. No I/O.
//
// The stored unit is the milli-credit (1 credit = 1000): prices in config are decimals like 12
// or 1.5, and integers keep sums exact (no drift across millions of entries) and compare
// exactly in SQL; a thousandth of a credit is finer than any price we quote.

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/config/settings.hpp"
#include "gateway/store/store.hpp"

namespace segue::core {

inline constexpr std::int64_t milli_per_credit = 1000;
// The largest amount credits_to_milli accepts: 1e12 credits (1e15 milli) keeps sums of very
// many entries far inside int64.
inline constexpr double max_credits = 1e12;

// Credits (a config price, a top-up amount) to milli-credits, rounded half up at the third
// decimal of the number's shortest decimal form, so 1.0005 gives 1001 (what was written, not
// its binary approximation 1.000499...). nullopt for negative, NaN, infinite or > max_credits.
std::optional<std::int64_t> credits_to_milli(double credits);
// Milli-credits as a double number of credits (exact to the thousandth below 2^53 milli).
double milli_to_credits(std::int64_t milli);
// Exact decimal text without trailing zeros: "12", "1.5", "-0.001".
std::string format_credits(std::int64_t milli);
// As a JSON number of credits: an integer when whole (12), else a double (1.5).
boost::json::value credits_value(std::int64_t milli);

// The share of `total` that output `index` carries, for `outputs` outputs; `index` is 1-based
// like store::output_row::index. Equal parts, the remainder one unit each to the first outputs,
// so the shares sum to `total` exactly. Throws std::invalid_argument for outputs < 1, an index
// outside 1..outputs or a negative total.
std::int64_t share_of(std::int64_t total, int outputs, int index);

// A provider's price per output from config (providers.<name>.price), in milli-credits; 0 for
// a provider without one.
std::int64_t provider_price_milli(const config::settings& settings, std::string_view provider);
// What a request holds at submit: the price of the route's first provider times num_outputs.
std::int64_t estimate_hold_milli(const config::settings& settings, std::string_view provider,
                                 int num_outputs);

// One entry: {"id", "kind", "amount", "task_id"?, "output"?, "provider"?, "note"?,
// "created_at"}; amount in credits, always >= 0 (the kind says which way it moves credits).
boost::json::object ledger_entry_document(const store::ledger_row& e);
// {"tenant", "balance", "held", "available", "captured", "granted", "unit": "credits"}.
boost::json::object ledger_totals_document(std::string_view tenant, const store::ledger_balance& b);

}  // namespace segue::core
