#pragma once

/// Percent-encoding as AWS uses it (RFC 3986 unreserved characters only) and
/// query-string parsing.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nimbus::transport {

/// Percent-encodes every byte except A-Z a-z 0-9 - . _ ~ (and '/' when
/// `keep_slash`), with uppercase hex digits.
std::string uri_encode(std::string_view s, bool keep_slash = false);

/// Decodes %XX escapes ('+' stays '+'). Returns nothing on a malformed escape.
std::optional<std::string> uri_decode(std::string_view s);

/// Splits a raw query string at '&' and '=' and decodes keys and values, in
/// order. A key without '=' has an empty value. Returns nothing on a malformed
/// escape.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view q);

} // namespace nimbus::transport
