#pragma once

#include <boost/json/fwd.hpp>

#include <string>

namespace segue::fakes {

// JSON text with numbers written the usual way ("192.12", "6.0"; not Boost.JSON's "1.9212E2").
std::string to_json_text(const boost::json::value& v);

}  // namespace segue::fakes
