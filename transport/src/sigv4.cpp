// AWS Signature Version 4 for the Lambda frontend.
//
// The verifier has to accept what real clients send, and they disagree on the
// canonical path: AWS SDKs and CLIs percent-encode the already-encoded path
// once more, curl --aws-sigv4 does not. Rather than guess which client sent a
// request, verify() builds the SDK form first and the curl form second and
// accepts either. Everything else (query, headers, payload hash) is the same
// for both, so the extra attempt costs one SHA-256 and one HMAC.
//
// curl 7.88 goes further and signs the path exactly as it sent it, without
// encoding reserved characters such as ':' ("/nimbus/images/app:v1" is signed
// with the raw ':'), so a third attempt uses the raw path.
//
// Spooled requests (bodies streamed to a file by the HTTP server) carry the
// body hash the server computed; their x-amz-content-sha256 must match it or
// be UNSIGNED-PAYLOAD. API bodies held in memory must always be signed.
//
// Presigned requests may carry an X-Amz-Security-Token that the client added
// after signing (aws-c-auth calls this "omit_session_token"); as with an
// unsigned header, the verifier also accepts a signature computed without it.
// Nimbus keys are static, so the token is never used for anything.
//
// Failure messages are written for the caller's error response: they name
// what was wrong but never the secret or the signature we computed.

#include "nimbus/transport/sigv4.hpp"

#include "nimbus/storage/digest.hpp"
#include "nimbus/transport/uri.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <utility>
#include <vector>

namespace nimbus::transport::sigv4 {

namespace {

using clock = std::chrono::system_clock;

constexpr std::string_view algorithm_name = "AWS4-HMAC-SHA256";
constexpr std::string_view unsigned_payload = "UNSIGNED-PAYLOAD";
constexpr std::string_view mismatch_message
  = "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method.";
/// Longest validity AWS allows for a presigned request (7 days).
constexpr int64_t max_presign_expires = 604800;

// ---------------------------------------------------------------------------
// Small text helpers

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

char to_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = to_lower(c);
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

/// Trims a header value and collapses every run of whitespace (including the
/// CR/LF of a folded header) to one space.
std::string collapse_whitespace(std::string_view value) {
  value = trim(value);
  std::string out;
  out.reserve(value.size());
  bool in_space = false;
  for (char c : value) {
    if (is_space(c)) {
      in_space = true;
      continue;
    }
    if (in_space)
      out.push_back(' ');
    in_space = false;
    out.push_back(c);
  }
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    auto pos = s.find(sep);
    out.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos)
      return out;
    s.remove_prefix(pos + 1);
  }
}

/// Parses a run of exactly `width` decimal digits.
std::optional<int> parse_fixed(std::string_view s, size_t pos, size_t width) {
  if (pos + width > s.size())
    return std::nullopt;
  int v = 0;
  for (size_t i = pos; i < pos + width; ++i) {
    if (!is_digit(s[i]))
      return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

// ---------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian, UTC), independent of the C
// library's time zone handling.

int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

struct civil {
  int64_t year;
  unsigned month;
  unsigned day;
};

civil civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2), m, d};
}

/// Builds a time point from UTC fields, rejecting impossible dates and times.
std::optional<clock::time_point> make_time(int year, int month, int day, int hour, int minute,
                                           int second) {
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
    return std::nullopt;
  const int64_t days = days_from_civil(year, static_cast<unsigned>(month),
                                       static_cast<unsigned>(day));
  const civil back = civil_from_days(days);
  if (back.year != year || back.month != static_cast<unsigned>(month)
      || back.day != static_cast<unsigned>(day))
    return std::nullopt; // e.g. February 30th
  const int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second;
  return clock::time_point{std::chrono::duration_cast<clock::duration>(std::chrono::seconds{secs})};
}

/// Parses an RFC 1123 date, "Sun, 30 Aug 2015 12:36:00 GMT", the fallback
/// when a request carries Date instead of X-Amz-Date.
std::optional<clock::time_point> parse_http_date(std::string_view s) {
  s = trim(s);
  auto comma = s.find(',');
  if (comma == std::string_view::npos)
    return std::nullopt;
  s = trim(s.substr(comma + 1));
  // "30 Aug 2015 12:36:00 GMT"
  if (s.size() != 24 || s[2] != ' ' || s[6] != ' ' || s[11] != ' ' || s[14] != ':' || s[17] != ':'
      || s.substr(20) != " GMT")
    return std::nullopt;
  static constexpr std::string_view months[]
    = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int month = 0;
  for (int i = 0; i < 12; ++i)
    if (s.substr(3, 3) == months[i])
      month = i + 1;
  auto day = parse_fixed(s, 0, 2);
  auto year = parse_fixed(s, 7, 4);
  auto hour = parse_fixed(s, 12, 2);
  auto minute = parse_fixed(s, 15, 2);
  auto second = parse_fixed(s, 18, 2);
  if (month == 0 || !day || !year || !hour || !minute || !second)
    return std::nullopt;
  return make_time(*year, month, *day, *hour, *minute, *second);
}

/// "5 min." or "90 sec.", as AWS words the skew in its error messages.
std::string describe_duration(std::chrono::seconds d) {
  if (d.count() % 60 == 0)
    return std::to_string(d.count() / 60) + " min.";
  return std::to_string(d.count()) + " sec.";
}

// ---------------------------------------------------------------------------
// Canonical request pieces

/// Splits a raw path into its segments after removing "." and ".." and empty
/// segments (the same normalization botocore applies before signing). Sets
/// `trailing_slash` when the path ends in '/' and something is left.
std::vector<std::string_view> normalized_segments(std::string_view raw, bool& trailing_slash) {
  std::vector<std::string_view> out;
  for (auto seg : split(raw, '/')) {
    if (seg.empty() || seg == ".")
      continue;
    if (seg == "..") {
      if (!out.empty())
        out.pop_back();
      continue;
    }
    out.push_back(seg);
  }
  trailing_slash = !raw.empty() && raw.back() == '/' && !out.empty();
  return out;
}

std::string canonical_path(std::string_view raw, path_form form) {
  if (form == path_form::raw)
    return raw.empty() ? std::string{"/"} : std::string{raw};
  const bool double_encode = form == path_form::sdk;
  bool trailing_slash = false;
  const auto segments = normalized_segments(raw, trailing_slash);
  std::string out = "/";
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i > 0)
      out.push_back('/');
    if (double_encode) {
      out += uri_encode(segments[i]);
    } else {
      // curl form: the segment as it was meant, encoded once. A segment with
      // a malformed escape cannot be decoded and is encoded as received.
      auto decoded = uri_decode(segments[i]);
      out += uri_encode(decoded ? std::string_view{*decoded} : segments[i]);
    }
  }
  if (trailing_slash)
    out.push_back('/');
  return out;
}

std::string canonical_query(std::string_view raw, bool presigned, bool drop_token) {
  std::vector<std::pair<std::string, std::string>> params;
  auto add = [&](std::string_view key, std::string_view value) {
    if (presigned && key == "X-Amz-Signature")
      return;
    if (drop_token && key == "X-Amz-Security-Token")
      return;
    params.emplace_back(uri_encode(key), uri_encode(value));
  };
  if (auto parsed = parse_query(raw)) {
    for (const auto& [k, v] : *parsed)
      add(k, v);
  } else {
    // A malformed escape: verify() rejects such requests before getting here,
    // so this only keeps canonical_request() total for other callers.
    for (auto part : split(raw, '&')) {
      if (part.empty())
        continue;
      auto eq = part.find('=');
      add(part.substr(0, eq), eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1));
    }
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty())
      out.push_back('&');
    out += k;
    out.push_back('=');
    out += v;
  }
  return out;
}

std::string canonical_headers(const http_request& req, std::string_view signed_headers) {
  std::vector<std::string> names;
  for (auto name : split(signed_headers, ';'))
    if (!name.empty())
      names.push_back(lowercase(name));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());

  std::string out;
  for (const auto& name : names) {
    out += name;
    out.push_back(':');
    bool first = true;
    for (const auto& [k, v] : req.headers) {
      if (!iequals(k, name))
        continue;
      if (!first)
        out.push_back(',');
      first = false;
      out += collapse_whitespace(v);
    }
    out.push_back('\n');
  }
  return out;
}

std::string build_canonical_request(const http_request& req, std::string_view signed_headers,
                                    std::string_view payload_hash, path_form form,
                                    bool presigned, bool drop_token) {
  std::string out = req.method;
  out.push_back('\n');
  out += canonical_path(req.path(), form);
  out.push_back('\n');
  out += canonical_query(req.query(), presigned, drop_token);
  out.push_back('\n');
  out += canonical_headers(req, signed_headers);
  out.push_back('\n');
  out += signed_headers;
  out.push_back('\n');
  out += payload_hash;
  return out;
}

storage::digest256 derive_key(std::string_view secret, std::string_view date,
                              std::string_view region, std::string_view service) {
  std::string seed = "AWS4";
  seed += secret;
  auto k = storage::hmac_sha256(seed, date);
  k = storage::hmac_sha256(storage::as_bytes(k), region);
  k = storage::hmac_sha256(storage::as_bytes(k), service);
  return storage::hmac_sha256(storage::as_bytes(k), "aws4_request");
}

// ---------------------------------------------------------------------------
// Parsing the two request forms

/// Everything verify() needs from the Authorization header or the query.
struct auth_params {
  bool presigned = false;
  std::string access_key_id;
  std::string date;    // credential scope date, YYYYMMDD
  std::string region;  // credential scope region
  std::string service; // credential scope service
  std::string signed_headers;
  std::string signature; // lowercase hex, 64 digits
  std::string amz_date;  // the timestamp as it goes into the string to sign
  clock::time_point time;
  int64_t expires = 0; // presigned only, seconds
};

/// Result of a parsing step: empty on success, else the error.
struct failure {
  auth_error error;
  std::string message;
};
using step = std::optional<failure>;

step malformed(std::string message) {
  return failure{auth_error::malformed, std::move(message)};
}

step parse_credential(std::string_view credential, auth_params& out) {
  auto parts = split(credential, '/');
  if (parts.size() != 5 || parts[0].empty() || parts[2].empty() || parts[3].empty())
    return malformed("Credential must have the form <access key>/<YYYYMMDD>/<region>/<service>/"
                     "aws4_request, got '"
                     + std::string(credential) + "'.");
  out.access_key_id = std::string(parts[0]);
  if (parts[4] != "aws4_request")
    return malformed("Credential should be scoped with a valid terminator: 'aws4_request', not '"
                     + std::string(parts[4]) + "'.");
  if (parts[1].size() != 8 || !parse_fixed(parts[1], 0, 8))
    return malformed("Credential date '" + std::string(parts[1]) + "' is not YYYYMMDD.");
  out.date = std::string(parts[1]);
  out.region = std::string(parts[2]);
  out.service = std::string(parts[3]);
  return std::nullopt;
}

step check_signed_headers(std::string_view signed_headers) {
  if (signed_headers.empty())
    return malformed("SignedHeaders is empty.");
  bool has_host = false;
  for (auto name : split(signed_headers, ';')) {
    if (name.empty())
      return malformed("SignedHeaders contains an empty header name.");
    if (iequals(name, "host"))
      has_host = true;
  }
  if (!has_host)
    return malformed("SignedHeaders must include 'host'.");
  return std::nullopt;
}

step check_signature_text(std::string_view signature, auth_params& out) {
  if (signature.size() != 64 || !std::all_of(signature.begin(), signature.end(), is_hex))
    return malformed("Signature must be 64 hexadecimal digits.");
  out.signature = lowercase(signature);
  return std::nullopt;
}

step parse_header_form(const http_request& req, std::string_view authorization, auth_params& out) {
  authorization = trim(authorization);
  size_t sp = 0;
  while (sp < authorization.size() && !is_space(authorization[sp]))
    ++sp;
  if (authorization.substr(0, sp) != algorithm_name)
    return malformed("Authorization header must use the AWS4-HMAC-SHA256 algorithm.");

  std::optional<std::string_view> credential, signed_headers, signature;
  for (auto part : split(authorization.substr(sp), ',')) {
    part = trim(part);
    auto eq = part.find('=');
    if (eq == std::string_view::npos)
      return malformed("Authorization header element '" + std::string(part)
                       + "' is not of the form key=value.");
    auto key = trim(part.substr(0, eq));
    auto value = trim(part.substr(eq + 1));
    std::optional<std::string_view>* slot = nullptr;
    if (key == "Credential")
      slot = &credential;
    else if (key == "SignedHeaders")
      slot = &signed_headers;
    else if (key == "Signature")
      slot = &signature;
    else
      return malformed("Authorization header has an unknown element '" + std::string(key) + "'.");
    if (*slot)
      return malformed("Authorization header repeats '" + std::string(key) + "'.");
    *slot = value;
  }
  if (!credential || !signed_headers || !signature)
    return malformed("Authorization header requires 'Credential', 'SignedHeaders' and "
                     "'Signature' parameters.");

  if (auto f = parse_credential(*credential, out))
    return f;
  if (auto f = check_signed_headers(*signed_headers))
    return f;
  out.signed_headers = std::string(*signed_headers);
  if (auto f = check_signature_text(*signature, out))
    return f;

  if (auto amz = req.header("X-Amz-Date")) {
    auto t = parse_amz_date(trim(*amz));
    if (!t)
      return malformed("X-Amz-Date '" + std::string(*amz) + "' is not of the form YYYYMMDDTHHMMSSZ.");
    out.amz_date = std::string(trim(*amz));
    out.time = *t;
  } else if (auto date = req.header("Date")) {
    auto t = parse_http_date(*date);
    if (!t)
      return malformed("Date header '" + std::string(*date) + "' is not an RFC 1123 date.");
    out.amz_date = format_amz_date(*t);
    out.time = *t;
  } else {
    return malformed("Authorization header requires existence of either a 'X-Amz-Date' or a "
                     "'Date' header.");
  }
  return std::nullopt;
}

step parse_query_form(const std::vector<std::pair<std::string, std::string>>& query,
                      auth_params& out) {
  out.presigned = true;
  auto get = [&](std::string_view key, std::optional<std::string_view>& value) -> step {
    for (const auto& [k, v] : query) {
      if (k != key)
        continue;
      if (value)
        return malformed("Query parameter " + std::string(key) + " is repeated.");
      value = v;
    }
    if (!value)
      return malformed("Presigned request requires query parameter " + std::string(key) + ".");
    return std::nullopt;
  };
  std::optional<std::string_view> algorithm, credential, date, expires, signed_headers, signature;
  for (auto [key, slot] : {std::pair{"X-Amz-Algorithm", &algorithm},
                           std::pair{"X-Amz-Credential", &credential}, std::pair{"X-Amz-Date", &date},
                           std::pair{"X-Amz-Expires", &expires},
                           std::pair{"X-Amz-SignedHeaders", &signed_headers},
                           std::pair{"X-Amz-Signature", &signature}})
    if (auto f = get(key, *slot))
      return f;

  if (*algorithm != algorithm_name)
    return malformed("X-Amz-Algorithm must be AWS4-HMAC-SHA256.");
  if (auto f = parse_credential(*credential, out))
    return f;
  if (auto f = check_signed_headers(*signed_headers))
    return f;
  out.signed_headers = std::string(*signed_headers);
  if (auto f = check_signature_text(*signature, out))
    return f;

  auto t = parse_amz_date(*date);
  if (!t)
    return malformed("X-Amz-Date '" + std::string(*date) + "' is not of the form YYYYMMDDTHHMMSSZ.");
  out.amz_date = std::string(*date);
  out.time = *t;

  if (expires->empty() || expires->size() > 7
      || !std::all_of(expires->begin(), expires->end(), is_digit))
    return malformed("X-Amz-Expires must be a number of seconds.");
  out.expires = std::stoll(std::string(*expires));
  if (out.expires < 1 || out.expires > max_presign_expires)
    return malformed("X-Amz-Expires must be between 1 and 604800 seconds.");
  return std::nullopt;
}

step check_time(const auth_params& p, std::chrono::seconds max_skew, clock::time_point now) {
  const auto now_text = format_amz_date(now);
  if (p.time > now + max_skew) {
    if (p.presigned)
      return failure{auth_error::expired, "Request is not yet valid: X-Amz-Date " + p.amz_date
                                            + " is later than " + now_text + " + "
                                            + describe_duration(max_skew)};
    return failure{auth_error::expired,
                   "Signature not yet current: " + p.amz_date + " is still later than "
                     + format_amz_date(now + max_skew) + " (" + now_text + " + "
                     + describe_duration(max_skew) + ")"};
  }
  if (p.presigned) {
    if (now > p.time + std::chrono::seconds{p.expires})
      return failure{auth_error::expired,
                     "Request has expired: signed at " + p.amz_date + " for "
                       + std::to_string(p.expires) + " seconds, now " + now_text};
    return std::nullopt;
  }
  if (p.time < now - max_skew)
    return failure{auth_error::expired,
                   "Signature expired: " + p.amz_date + " is now earlier than "
                     + format_amz_date(now - max_skew) + " (" + now_text + " - "
                     + describe_duration(max_skew) + ")"};
  return std::nullopt;
}

verify_result fail(auth_error error, std::string message, std::string access_key_id = {}) {
  verify_result r;
  r.ok = false;
  r.error = error;
  r.message = std::move(message);
  r.access_key_id = std::move(access_key_id);
  return r;
}

} // namespace

// ---------------------------------------------------------------------------
// Public API

std::string format_amz_date(clock::time_point t) {
  const auto secs = std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
  int64_t days = secs / 86400;
  int64_t rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  const civil c = civil_from_days(days);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04lld%02u%02uT%02d%02d%02dZ", static_cast<long long>(c.year),
                c.month, c.day, static_cast<int>(rem / 3600), static_cast<int>(rem / 60 % 60),
                static_cast<int>(rem % 60));
  return buf;
}

std::optional<clock::time_point> parse_amz_date(std::string_view text) {
  if (text.size() != 16 || text[8] != 'T' || text[15] != 'Z')
    return std::nullopt;
  auto year = parse_fixed(text, 0, 4);
  auto month = parse_fixed(text, 4, 2);
  auto day = parse_fixed(text, 6, 2);
  auto hour = parse_fixed(text, 9, 2);
  auto minute = parse_fixed(text, 11, 2);
  auto second = parse_fixed(text, 13, 2);
  if (!year || !month || !day || !hour || !minute || !second)
    return std::nullopt;
  return make_time(*year, *month, *day, *hour, *minute, *second);
}

std::string canonical_request(const http_request& req, std::string_view signed_headers,
                              std::string_view payload_hash, bool double_encode_path,
                              bool presigned) {
  return build_canonical_request(req, signed_headers, payload_hash,
                                 double_encode_path ? path_form::sdk : path_form::curl, presigned,
                                 false);
}

std::string canonical_request(const http_request& req, std::string_view signed_headers,
                              std::string_view payload_hash, path_form form, bool presigned) {
  return build_canonical_request(req, signed_headers, payload_hash, form, presigned, false);
}

std::string string_to_sign(std::string_view amz_date, std::string_view scope,
                           std::string_view canonical_request) {
  std::string out(algorithm_name);
  out.push_back('\n');
  out += amz_date;
  out.push_back('\n');
  out += scope;
  out.push_back('\n');
  out += storage::to_hex(storage::sha256(canonical_request));
  return out;
}

std::string signature(std::string_view secret, std::string_view date, std::string_view region,
                      std::string_view service, std::string_view string_to_sign) {
  const auto key = derive_key(secret, date, region, service);
  return storage::to_hex(storage::hmac_sha256(storage::as_bytes(key), string_to_sign));
}

verify_result verify(const http_request& req, const secret_lookup& secrets,
                     const verify_options& options, clock::time_point now) {
  const auto authorization = req.header("Authorization");
  auto query = parse_query(req.query());
  if (!query)
    return fail(auth_error::malformed, "The query string contains a malformed percent-escape.");
  const bool has_query_auth
    = std::any_of(query->begin(), query->end(),
                  [](const auto& kv) { return kv.first == "X-Amz-Algorithm"; });
  if (!authorization && !has_query_auth)
    return fail(auth_error::missing_authentication, "Missing Authentication Token");
  if (authorization && has_query_auth)
    return fail(auth_error::malformed,
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or "
                "the Authorization header should be specified.");

  auth_params p;
  step parsed = authorization ? parse_header_form(req, *authorization, p)
                              : parse_query_form(*query, p);
  if (parsed)
    return fail(parsed->error, std::move(parsed->message), p.access_key_id);

  if (p.amz_date.compare(0, 8, p.date) != 0)
    return fail(auth_error::malformed,
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                "from HTTP: '"
                  + p.date + "' != '" + p.amz_date.substr(0, 8) + "'.",
                p.access_key_id);
  if (p.region != options.region)
    return fail(auth_error::wrong_scope,
                "Credential should be scoped to a valid region: expected '" + options.region
                  + "', got '" + p.region + "'.",
                p.access_key_id);
  if (p.service != options.service)
    return fail(auth_error::wrong_scope,
                "Credential should be scoped to correct service: expected '" + options.service
                  + "', got '" + p.service + "'.",
                p.access_key_id);
  if (auto f = check_time(p, options.max_skew, now))
    return fail(f->error, std::move(f->message), p.access_key_id);

  std::optional<std::string> secret;
  if (secrets)
    secret = secrets(p.access_key_id);
  if (!secret)
    return fail(auth_error::unknown_access_key,
                "The security token included in the request is invalid.", p.access_key_id);

  std::string payload_hash;
  const auto declared = req.header("x-amz-content-sha256");
  if (declared && trim(*declared) == unsigned_payload) {
    // Only bodies the server streamed to disk may go unsigned: an API body
    // is small and its contents are what the signature protects.
    if (!req.spooled())
      return fail(auth_error::signature_mismatch,
                  "UNSIGNED-PAYLOAD is accepted only for uploads; sign the request body.",
                  p.access_key_id);
    payload_hash = std::string{unsigned_payload};
  } else {
    if (req.spooled()) {
      payload_hash = lowercase(req.body_sha256_hex);
      if (payload_hash.size() != 64)
        return fail(auth_error::signature_mismatch, "The request body hash is missing.",
                    p.access_key_id);
    } else {
      payload_hash = storage::to_hex(storage::sha256(req.body));
    }
    if (declared && lowercase(trim(*declared)) != payload_hash)
      return fail(auth_error::signature_mismatch,
                  "The provided 'x-amz-content-sha256' header does not match what was computed.",
                  p.access_key_id);
  }

  const auto key = derive_key(*secret, p.date, p.region, p.service);
  const std::string scope = p.date + "/" + p.region + "/" + p.service + "/aws4_request";
  const bool has_token
    = p.presigned
      && std::any_of(query->begin(), query->end(),
                     [](const auto& kv) { return kv.first == "X-Amz-Security-Token"; });

  std::vector<std::string> tried_paths;
  for (path_form form : {path_form::sdk, path_form::curl, path_form::raw}) {
    // Skip a form whose path reads the same as one already tried.
    auto path = canonical_path(req.path(), form);
    if (std::find(tried_paths.begin(), tried_paths.end(), path) != tried_paths.end())
      continue;
    tried_paths.push_back(std::move(path));
    for (bool drop_token : {false, true}) {
      if (drop_token && !has_token)
        continue;
      const auto cr = build_canonical_request(req, p.signed_headers, payload_hash, form,
                                              p.presigned, drop_token);
      const auto expected = storage::to_hex(
        storage::hmac_sha256(storage::as_bytes(key), string_to_sign(p.amz_date, scope, cr)));
      if (storage::constant_time_equal(expected, p.signature)) {
        verify_result ok;
        ok.ok = true;
        ok.access_key_id = p.access_key_id;
        return ok;
      }
    }
  }
  return fail(auth_error::signature_mismatch, std::string(mismatch_message), p.access_key_id);
}

void sign(http_request& req, const signing_params& params) {
  const auto amz_date = format_amz_date(params.time);
  const auto payload_hash = storage::to_hex(storage::sha256(req.body));

  auto& h = req.headers;
  h.erase(std::remove_if(h.begin(), h.end(),
                         [](const http_field& f) {
                           return iequals(f.first, "Authorization") || iequals(f.first, "X-Amz-Date")
                                  || iequals(f.first, "X-Amz-Content-Sha256");
                         }),
          h.end());
  h.emplace_back("X-Amz-Date", amz_date);
  h.emplace_back("X-Amz-Content-Sha256", payload_hash);

  std::vector<std::string> names;
  for (const auto& [k, v] : h)
    names.push_back(lowercase(k));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string signed_headers;
  for (const auto& n : names) {
    if (!signed_headers.empty())
      signed_headers.push_back(';');
    signed_headers += n;
  }

  const std::string date = amz_date.substr(0, 8);
  const std::string scope = date + "/" + params.region + "/" + params.service + "/aws4_request";
  const auto cr = canonical_request(req, signed_headers, payload_hash, true, false);
  const auto sig = signature(params.secret_access_key, date, params.region, params.service,
                             string_to_sign(amz_date, scope, cr));
  h.emplace_back("Authorization", std::string(algorithm_name) + " Credential="
                                    + params.access_key_id + "/" + scope
                                    + ", SignedHeaders=" + signed_headers + ", Signature=" + sig);
}

} // namespace nimbus::transport::sigv4
