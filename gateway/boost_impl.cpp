// The single translation unit that compiles Boost's separately-compiled libraries.
// Every other file sees only declarations (see the PUBLIC macros on segue_boost).
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
#include <boost/json/src.hpp>
#include <boost/url/src.hpp>
