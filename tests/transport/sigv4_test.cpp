// SigV4 tests. The bulk runs the aws-c-auth signing test suite (copied into
// shared/data/sigv4) through the verifier in both forms, checks the
// intermediate canonical request and signature against the suite, and then
// mutates every signed part of each request to show that the verifier notices.
// The remaining cases cover what the suite does not: the double-encoded paths
// AWS SDKs send for Lambda, the single-encoded paths curl sends, and the
// failure classes.

#include "nimbus/transport/sigv4.hpp"

#include "nimbus/storage/digest.hpp"
#include "nimbus/transport/uri.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace sigv4 = nimbus::transport::sigv4;
using nimbus::transport::http_request;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using time_point = std::chrono::system_clock::time_point;

fs::path shared_dir() {
  if (const char* env = std::getenv("NIMBUS_SHARED_DIR"); env != nullptr && *env != '\0')
    return env;
  return NIMBUS_SHARED_DIR;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string strip_trailing_newlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
    s.pop_back();
  return s;
}

/// The text after `"key":` in a small flat JSON document (no escapes needed
/// for the suite's context files).
std::string_view json_value(std::string_view json, std::string_view key) {
  const std::string quoted = "\"" + std::string(key) + "\"";
  auto pos = json.find(quoted);
  if (pos == std::string_view::npos)
    return {};
  pos = json.find(':', pos + quoted.size());
  if (pos == std::string_view::npos)
    return {};
  auto rest = json.substr(pos + 1);
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\n' || rest.front() == '\t'))
    rest.remove_prefix(1);
  return rest;
}

std::string json_string(std::string_view json, std::string_view key) {
  auto v = json_value(json, key);
  if (v.empty() || v.front() != '"')
    return {};
  v.remove_prefix(1);
  return std::string(v.substr(0, v.find('"')));
}

bool json_true(std::string_view json, std::string_view key) {
  return json_value(json, key).substr(0, 4) == "true";
}

/// Parses the suite's request files: "METHOD TARGET HTTP/1.1", "Name:value"
/// lines, continuation lines starting with whitespace (kept, newline included,
/// so the verifier must fold them), a blank line, then the body.
http_request parse_request_file(const std::string& text) {
  http_request req;
  auto head_end = text.find("\n\n");
  std::string head = head_end == std::string::npos ? text : text.substr(0, head_end);
  req.body = head_end == std::string::npos ? std::string{} : text.substr(head_end + 2);

  std::istringstream lines(head);
  std::string line;
  std::getline(lines, line);
  auto first_space = line.find(' ');
  auto last_space = line.rfind(' ');
  REQUIRE(first_space != std::string::npos);
  REQUIRE(last_space > first_space);
  req.method = line.substr(0, first_space);
  req.target = line.substr(first_space + 1, last_space - first_space - 1);

  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
      REQUIRE(!req.headers.empty());
      req.headers.back().second += "\n" + line;
      continue;
    }
    auto colon = line.find(':');
    REQUIRE(colon != std::string::npos);
    req.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  return req;
}

struct vector_case {
  std::string name;
  fs::path dir;
  std::string access_key_id;
  std::string secret;
  std::string region;
  std::string service;
  time_point time;
  bool omit_session_token = false;
};

std::vector<vector_case> load_cases() {
  std::vector<vector_case> out;
  const auto root = shared_dir() / "data" / "sigv4";
  REQUIRE_MESSAGE(fs::is_directory(root), "missing test data directory " << root.string());
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!entry.is_directory() || !fs::exists(entry.path() / "context.json"))
      continue;
    const auto ctx = read_text(entry.path() / "context.json");
    if (!json_true(ctx, "normalize"))
      continue;
    vector_case c;
    c.name = entry.path().filename().string();
    c.dir = entry.path();
    c.access_key_id = json_string(ctx, "access_key_id");
    c.secret = json_string(ctx, "secret_access_key");
    c.region = json_string(ctx, "region");
    c.service = json_string(ctx, "service");
    c.omit_session_token = json_true(ctx, "omit_session_token");
    // "2015-08-30T12:36:00Z" -> "20150830T123600Z"
    std::string stamp = json_string(ctx, "timestamp");
    stamp.erase(std::remove_if(stamp.begin(), stamp.end(),
                               [](char ch) { return ch == '-' || ch == ':'; }),
                stamp.end());
    auto t = sigv4::parse_amz_date(stamp);
    REQUIRE_MESSAGE(t.has_value(), "bad timestamp in " << c.name);
    c.time = *t;
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(),
            [](const vector_case& a, const vector_case& b) { return a.name < b.name; });
  return out;
}

sigv4::secret_lookup lookup_for(std::string key, std::string secret) {
  return [key = std::move(key),
          secret = std::move(secret)](std::string_view id) -> std::optional<std::string> {
    if (id == key)
      return secret;
    return std::nullopt;
  };
}

std::string sha256_hex(std::string_view s) {
  return nimbus::storage::to_hex(nimbus::storage::sha256(s));
}

/// Value of `key=` inside the Authorization header, up to the next comma.
std::string auth_param(const http_request& req, std::string_view key) {
  auto auth = std::string(req.header("Authorization").value_or(""));
  auto pos = auth.find(std::string(key) + "=");
  if (pos == std::string::npos)
    return {};
  pos += key.size() + 1;
  return auth.substr(pos, auth.find(',', pos) - pos);
}

std::string query_param(const http_request& req, std::string_view key) {
  auto q = nimbus::transport::parse_query(req.query());
  REQUIRE(q.has_value());
  for (const auto& [k, v] : *q)
    if (k == key)
      return v;
  return {};
}

/// Changes the last digit of a value, or appends a letter if it has none.
std::string alter(std::string v) {
  for (auto it = v.rbegin(); it != v.rend(); ++it)
    if (*it >= '0' && *it <= '9') {
      *it = *it == '9' ? '0' : static_cast<char>(*it + 1);
      return v;
    }
  return v + "x";
}

/// Flips one hex digit of `hex` at `index`.
std::string flip_hex(std::string hex, size_t index) {
  hex[index] = hex[index] == '0' ? '1' : '0';
  return hex;
}

/// Replaces every occurrence of `from` in `s` by `to`.
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

/// Returns `target` with path segment "x" appended to the path.
std::string append_segment(const http_request& req) {
  std::string path(req.path());
  path += path.empty() || path.back() != '/' ? "/x" : "x";
  std::string out = path;
  if (req.target.find('?') != std::string::npos)
    out += "?" + std::string(req.query());
  return out;
}

/// Replaces "X-Amz-Security-Token=..." in a query string by nothing.
std::string without_token(const std::string& target) {
  auto pos = target.find("&X-Amz-Security-Token=");
  if (pos == std::string::npos)
    return target;
  auto end = target.find('&', pos + 1);
  return target.substr(0, pos) + (end == std::string::npos ? "" : target.substr(end));
}

} // namespace

TEST_CASE("sigv4: amz dates format and parse") {
  auto t = sigv4::parse_amz_date("20150830T123600Z");
  REQUIRE(t.has_value());
  CHECK(sigv4::format_amz_date(*t) == "20150830T123600Z");
  CHECK(sigv4::format_amz_date(time_point{}) == "19700101T000000Z");
  auto leap = sigv4::parse_amz_date("20240229T235959Z");
  REQUIRE(leap.has_value());
  CHECK(sigv4::format_amz_date(*leap + 1s) == "20240301T000000Z");
  CHECK(sigv4::format_amz_date(*leap + 1500ms) == "20240301T000000Z");
  CHECK(std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count()
        == 1440938160);
  for (const char* bad : {"", "20150830T123600", "20150830 123600Z", "2015083T123600Z",
                          "20150230T000000Z", "20150830T246000Z", "20151330T000000Z",
                          "2015-08-30T12:36:00Z", "20150830T12a600Z"})
    CHECK_MESSAGE(!sigv4::parse_amz_date(bad).has_value(), bad);
}

TEST_CASE("sigv4: aws-c-auth test vectors verify, and every mutation fails") {
  const auto cases = load_cases();
  size_t checked = 0;
  size_t mutations = 0;

  for (const auto& c : cases) {
    INFO("case: " << c.name);
    const auto secrets = lookup_for(c.access_key_id, c.secret);
    const sigv4::verify_options options{c.region, c.service, 300s};
    const std::string date = sigv4::format_amz_date(c.time).substr(0, 8);
    const std::string scope = date + "/" + c.region + "/" + c.service + "/aws4_request";
    const std::string amz_date = sigv4::format_amz_date(c.time);

    // Every failure: must fail, with the given error if any, without leaking.
    auto expect_fail = [&](const char* what, const http_request& req,
                           std::optional<sigv4::auth_error> error = std::nullopt,
                           const sigv4::secret_lookup* lookup = nullptr,
                           const sigv4::verify_options* opts = nullptr,
                           std::optional<time_point> now = std::nullopt) {
      INFO("mutation: " << what);
      const auto r = sigv4::verify(req, lookup ? *lookup : secrets, opts ? *opts : options,
                                   now.value_or(c.time));
      ++mutations;
      CHECK_FALSE(r.ok);
      if (error)
        CHECK(r.error == *error);
      CHECK(r.message.find(c.secret) == std::string::npos);
      CHECK(!r.message.empty());
    };

    // (a) Authorization header form.
    const auto header_req = parse_request_file(read_text(c.dir / "header-signed-request.txt"));
    {
      const auto signed_headers = auth_param(header_req, "SignedHeaders");
      const auto cr = sigv4::canonical_request(header_req, signed_headers,
                                               sha256_hex(header_req.body), true, false);
      CHECK(cr == strip_trailing_newlines(read_text(c.dir / "header-canonical-request.txt")));
      const auto sts = sigv4::string_to_sign(amz_date, scope, cr);
      CHECK(sts == strip_trailing_newlines(read_text(c.dir / "header-string-to-sign.txt")));
      const auto sig = sigv4::signature(c.secret, date, c.region, c.service, sts);
      CHECK(sig == strip_trailing_newlines(read_text(c.dir / "header-signature.txt")));

      const auto r = sigv4::verify(header_req, secrets, options, c.time);
      CHECK_MESSAGE(r.ok, r.message);
      CHECK(r.access_key_id == c.access_key_id);
      ++checked;
    }

    // (b) Presigned query form.
    const auto query_req = parse_request_file(read_text(c.dir / "query-signed-request.txt"));
    {
      // A token added after signing is not part of the canonical request.
      auto as_signed = query_req;
      if (c.omit_session_token)
        as_signed.target = without_token(as_signed.target);
      const auto cr
        = sigv4::canonical_request(as_signed, query_param(query_req, "X-Amz-SignedHeaders"),
                                   sha256_hex(query_req.body), true, true);
      CHECK(cr == strip_trailing_newlines(read_text(c.dir / "query-canonical-request.txt")));
      const auto sig = sigv4::signature(c.secret, date, c.region, c.service,
                                        sigv4::string_to_sign(amz_date, scope, cr));
      CHECK(sig == strip_trailing_newlines(read_text(c.dir / "query-signature.txt")));

      const auto r = sigv4::verify(query_req, secrets, options, c.time);
      CHECK_MESSAGE(r.ok, r.message);
      ++checked;
    }

    // (c) Mutations of the header form.
    {
      auto m = header_req;
      m.method = m.method == "GET" ? "POST" : "GET";
      expect_fail("method", m, sigv4::auth_error::signature_mismatch);
    }
    {
      auto m = header_req;
      m.target = append_segment(header_req);
      expect_fail("path segment appended", m, sigv4::auth_error::signature_mismatch);
    }
    {
      // The last segment survives normalization when it ends in a letter or digit.
      std::string path(header_req.path());
      if (!path.empty() && std::isalnum(static_cast<unsigned char>(path.back()))) {
        auto m = header_req;
        m.target[path.size() - 1] = path.back() == 'a' ? 'b' : 'a';
        expect_fail("path character", m, sigv4::auth_error::signature_mismatch);
      }
    }
    {
      auto m = header_req;
      m.target += m.target.find('?') == std::string::npos ? "?extra=1" : "&extra=1";
      expect_fail("query parameter added", m, sigv4::auth_error::signature_mismatch);
    }
    if (!header_req.query().empty()) {
      auto m = header_req;
      m.target += "x";
      expect_fail("query parameter altered", m, sigv4::auth_error::signature_mismatch);
    }
    {
      const auto signed_list = ";" + auth_param(header_req, "SignedHeaders") + ";";
      for (size_t i = 0; i < header_req.headers.size(); ++i) {
        std::string name = header_req.headers[i].first;
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
        if (signed_list.find(";" + name + ";") == std::string::npos)
          continue;
        auto m = header_req;
        m.headers[i].second = alter(m.headers[i].second);
        const std::string what = "signed header " + name;
        expect_fail(what.c_str(), m);
      }
    }
    {
      auto m = header_req;
      m.body += "!";
      expect_fail("body", m, sigv4::auth_error::signature_mismatch);
    }
    const auto good_signature = auth_param(header_req, "Signature");
    REQUIRE(good_signature.size() == 64);
    for (size_t index : {size_t{0}, size_t{63}}) {
      auto m = header_req;
      for (auto& [k, v] : m.headers)
        if (nimbus::transport::iequals(k, "Authorization"))
          v = replace_all(v, good_signature, flip_hex(good_signature, index));
      expect_fail("signature digit", m, sigv4::auth_error::signature_mismatch);
    }
    {
      auto m = header_req;
      for (auto& [k, v] : m.headers)
        if (nimbus::transport::iequals(k, "Authorization"))
          v = replace_all(v, "Credential=" + c.access_key_id, "Credential=AKIDUNKNOWN");
      expect_fail("unknown access key", m, sigv4::auth_error::unknown_access_key);
    }
    {
      const auto wrong = lookup_for(c.access_key_id, c.secret + "x");
      expect_fail("wrong secret", header_req, sigv4::auth_error::signature_mismatch, &wrong);
    }
    {
      const sigv4::verify_options wrong_region{"eu-west-1", c.service, 300s};
      expect_fail("wrong region", header_req, sigv4::auth_error::wrong_scope, nullptr,
                  &wrong_region);
      const sigv4::verify_options wrong_service{c.region, "lambda", 300s};
      expect_fail("wrong service", header_req, sigv4::auth_error::wrong_scope, nullptr,
                  &wrong_service);
    }
    expect_fail("now + 6 min", header_req, sigv4::auth_error::expired, nullptr, nullptr,
                c.time + 6min);
    expect_fail("now - 6 min", header_req, sigv4::auth_error::expired, nullptr, nullptr,
                c.time - 6min);
    CHECK(sigv4::verify(header_req, secrets, options, c.time + 4min).ok);
    CHECK(sigv4::verify(header_req, secrets, options, c.time - 4min).ok);

    // A few mutations of the presigned form too.
    const auto good_query_signature = query_param(query_req, "X-Amz-Signature");
    {
      auto m = query_req;
      m.target = replace_all(m.target, good_query_signature, flip_hex(good_query_signature, 5));
      expect_fail("presigned signature digit", m, sigv4::auth_error::signature_mismatch);
    }
    {
      auto m = query_req;
      m.target = append_segment(query_req);
      expect_fail("presigned path", m, sigv4::auth_error::signature_mismatch);
    }
    {
      auto m = query_req;
      m.target += "&extra=1";
      expect_fail("presigned query parameter added", m, sigv4::auth_error::signature_mismatch);
    }
    {
      auto m = query_req;
      for (auto& [k, v] : m.headers)
        if (nimbus::transport::iequals(k, "Host"))
          v = alter(v);
      expect_fail("presigned host", m, sigv4::auth_error::signature_mismatch);
    }
    expect_fail("presigned past expiry", query_req, sigv4::auth_error::expired, nullptr, nullptr,
                c.time + 3601s);
    expect_fail("presigned from the future", query_req, sigv4::auth_error::expired, nullptr,
                nullptr, c.time - 6min);
    CHECK(sigv4::verify(query_req, secrets, options, c.time + 3600s).ok);
  }

  MESSAGE("sigv4 vectors: " << cases.size() << " cases, " << checked << " signed requests checked, "
                            << mutations << " mutations checked");
  REQUIRE(cases.size() >= 25);
  CHECK(checked == 2 * cases.size());
}

namespace {

const sigv4::verify_options lambda_options{"us-east-1", "lambda", 300s};
const time_point lambda_time = *sigv4::parse_amz_date("20240501T101500Z");

http_request lambda_invoke_request() {
  http_request req;
  req.method = "POST";
  req.target = "/2015-03-31/functions/f%3Alive/invocations?Qualifier=%24LATEST";
  req.headers = {{"Host", "localhost:9000"}, {"Content-Type", "application/json"}};
  req.body = R"({"hello":"world"})";
  return req;
}

sigv4::signing_params lambda_signing() {
  return {"AKIDNIMBUS", "nimbus/secret+KEY", "us-east-1", "lambda", lambda_time};
}

const sigv4::secret_lookup lambda_secrets = lookup_for("AKIDNIMBUS", "nimbus/secret+KEY");

/// Signs `req` (which must carry Host, X-Amz-Date and whatever else is in
/// `signed_headers`) over the curl-style single-encoded path.
void sign_curl_style(http_request& req, const std::string& signed_headers) {
  const auto p = lambda_signing();
  const auto amz_date = sigv4::format_amz_date(p.time);
  const auto date = amz_date.substr(0, 8);
  const auto scope = date + "/" + p.region + "/" + p.service + "/aws4_request";
  const auto cr
    = sigv4::canonical_request(req, signed_headers, sha256_hex(req.body), false, false);
  const auto sig = sigv4::signature(p.secret_access_key, date, p.region, p.service,
                                    sigv4::string_to_sign(amz_date, scope, cr));
  req.headers.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=" + p.access_key_id + "/"
                                              + scope + ",SignedHeaders=" + signed_headers
                                              + ",Signature=" + sig);
}

size_t count_headers(const http_request& req, std::string_view name) {
  return static_cast<size_t>(
    std::count_if(req.headers.begin(), req.headers.end(),
                  [&](const auto& f) { return nimbus::transport::iequals(f.first, name); }));
}

} // namespace

TEST_CASE("sigv4: sign() produces SDK-style requests that verify") {
  auto req = lambda_invoke_request();
  req.headers.emplace_back("X-Amz-Date", "19990101T000000Z"); // replaced by sign()
  sigv4::sign(req, lambda_signing());

  CHECK(count_headers(req, "X-Amz-Date") == 1);
  CHECK(count_headers(req, "X-Amz-Content-Sha256") == 1);
  CHECK(count_headers(req, "Authorization") == 1);
  CHECK(req.header("X-Amz-Date") == std::optional<std::string_view>{"20240501T101500Z"});
  CHECK(req.header("X-Amz-Content-Sha256") == std::optional<std::string_view>{sha256_hex(req.body)});
  const auto signed_headers = auth_param(req, "SignedHeaders");
  CHECK(signed_headers == "content-type;host;x-amz-content-sha256;x-amz-date");
  CHECK(auth_param(req, "Credential") == "AKIDNIMBUS/20240501/us-east-1/lambda/aws4_request");

  const auto cr = sigv4::canonical_request(req, signed_headers, sha256_hex(req.body), true, false);
  CHECK(cr.find("\n/2015-03-31/functions/f%253Alive/invocations\nQualifier=%24LATEST\n")
        != std::string::npos);

  const auto r = sigv4::verify(req, lambda_secrets, lambda_options, lambda_time + 10s);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.access_key_id == "AKIDNIMBUS");

  // Signing again replaces the previous signature instead of adding one.
  sigv4::sign(req, lambda_signing());
  CHECK(count_headers(req, "Authorization") == 1);
  CHECK(sigv4::verify(req, lambda_secrets, lambda_options, lambda_time).ok);

  // The trailing-slash ListFunctions path of the CLI keeps its slash.
  http_request list;
  list.method = "GET";
  list.target = "/2015-03-31/functions/";
  list.headers = {{"Host", "localhost:9000"}};
  sigv4::sign(list, lambda_signing());
  const auto list_cr = sigv4::canonical_request(list, auth_param(list, "SignedHeaders"),
                                                sha256_hex(""), true, false);
  CHECK(list_cr.rfind("GET\n/2015-03-31/functions/\n\n", 0) == 0);
  CHECK(sigv4::verify(list, lambda_secrets, lambda_options, lambda_time).ok);
}

TEST_CASE("sigv4: curl-style single-encoded paths verify too") {
  auto req = lambda_invoke_request();
  req.headers.emplace_back("X-Amz-Date", sigv4::format_amz_date(lambda_time));
  req.headers.emplace_back("x-amz-content-sha256", sha256_hex(req.body));
  const std::string signed_headers = "host;x-amz-content-sha256;x-amz-date";
  const auto cr = sigv4::canonical_request(req, signed_headers, sha256_hex(req.body), false, false);
  CHECK(cr.find("\n/2015-03-31/functions/f%3Alive/invocations\n") != std::string::npos);
  sign_curl_style(req, signed_headers);

  const auto r = sigv4::verify(req, lambda_secrets, lambda_options, lambda_time);
  CHECK_MESSAGE(r.ok, r.message);

  // ...but only with the right signature.
  auto bad = req;
  bad.body += " ";
  bad.headers[3].second = sha256_hex(bad.body);
  CHECK_FALSE(sigv4::verify(bad, lambda_secrets, lambda_options, lambda_time).ok);
}

TEST_CASE("sigv4: Date header instead of X-Amz-Date") {
  http_request req;
  req.method = "GET";
  req.target = "/2015-03-31/functions";
  req.headers = {{"Host", "localhost:9000"}, {"Date", "Wed, 01 May 2024 10:15:00 GMT"}};
  sign_curl_style(req, "date;host");
  const auto r = sigv4::verify(req, lambda_secrets, lambda_options, lambda_time);
  CHECK_MESSAGE(r.ok, r.message);

  auto bad = req;
  bad.headers[1].second = "Wed, 01 May 2024 10:15:01 GMT";
  CHECK(sigv4::verify(bad, lambda_secrets, lambda_options, lambda_time).error
        == sigv4::auth_error::signature_mismatch);
  bad.headers[1].second = "yesterday";
  CHECK(sigv4::verify(bad, lambda_secrets, lambda_options, lambda_time).error
        == sigv4::auth_error::malformed);
}

TEST_CASE("sigv4: failure classes") {
  auto signed_req = lambda_invoke_request();
  sigv4::sign(signed_req, lambda_signing());
  REQUIRE(sigv4::verify(signed_req, lambda_secrets, lambda_options, lambda_time).ok);

  auto with_authorization = [&](std::string value) {
    auto req = signed_req;
    for (auto& [k, v] : req.headers)
      if (k == "Authorization")
        v = std::move(value);
    return sigv4::verify(req, lambda_secrets, lambda_options, lambda_time);
  };

  SUBCASE("missing Authorization") {
    auto req = lambda_invoke_request();
    const auto r = sigv4::verify(req, lambda_secrets, lambda_options, lambda_time);
    CHECK_FALSE(r.ok);
    CHECK(r.error == sigv4::auth_error::missing_authentication);
  }
  SUBCASE("garbage Authorization") {
    for (const char* garbage :
         {"garbage", "Bearer abc", "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256 Credential=x",
          "AWS4-HMAC-SHA256 Credential=AKIDNIMBUS/20240501/us-east-1/lambda/aws4_request, "
          "SignedHeaders=host;x-amz-date, Signature=xyz",
          "AWS4-HMAC-SHA256 Credential=AKIDNIMBUS/20240501/us-east-1/lambda/aws4_request, "
          "SignedHeaders=x-amz-date, Signature="
          "0000000000000000000000000000000000000000000000000000000000000000",
          "AWS4-HMAC-SHA256 Credential=AKIDNIMBUS/20240501/us-east-1/lambda/other, "
          "SignedHeaders=host;x-amz-date, Signature="
          "0000000000000000000000000000000000000000000000000000000000000000"}) {
      INFO(garbage);
      const auto r = with_authorization(garbage);
      CHECK_FALSE(r.ok);
      CHECK(r.error == sigv4::auth_error::malformed);
    }
  }
  SUBCASE("extra whitespace in Authorization is tolerated") {
    auto auth = std::string(*signed_req.header("Authorization"));
    auth = replace_all(auth, ", ", " ,   ");
    CHECK(with_authorization(auth).ok);
  }
  SUBCASE("credential date differs from X-Amz-Date") {
    auto auth = replace_all(std::string(*signed_req.header("Authorization")), "/20240501/",
                            "/20240502/");
    const auto r = with_authorization(auth);
    CHECK_FALSE(r.ok);
    CHECK(r.error == sigv4::auth_error::malformed);
  }
  SUBCASE("wrong scope names expected and received values") {
    const auto r = sigv4::verify(signed_req, lambda_secrets, {"eu-west-1", "lambda", 300s},
                                 lambda_time);
    CHECK(r.error == sigv4::auth_error::wrong_scope);
    CHECK(r.message.find("eu-west-1") != std::string::npos);
    CHECK(r.message.find("us-east-1") != std::string::npos);
    CHECK(r.access_key_id == "AKIDNIMBUS");
  }
  SUBCASE("expired message") {
    const auto r = sigv4::verify(signed_req, lambda_secrets, lambda_options, lambda_time + 6min);
    CHECK(r.error == sigv4::auth_error::expired);
    CHECK(r.message
          == "Signature expired: 20240501T101500Z is now earlier than 20240501T101600Z "
             "(20240501T102100Z - 5 min.)");
  }
  SUBCASE("unknown access key and no lookup at all") {
    const auto r = sigv4::verify(signed_req, lookup_for("OTHER", "x"), lambda_options, lambda_time);
    CHECK(r.error == sigv4::auth_error::unknown_access_key);
    CHECK(r.access_key_id == "AKIDNIMBUS");
    CHECK(sigv4::verify(signed_req, {}, lambda_options, lambda_time).error
          == sigv4::auth_error::unknown_access_key);
  }
  SUBCASE("x-amz-content-sha256 must match the body even when unsigned") {
    auto req = lambda_invoke_request();
    req.headers.emplace_back("X-Amz-Date", sigv4::format_amz_date(lambda_time));
    sign_curl_style(req, "host;x-amz-date");
    REQUIRE(sigv4::verify(req, lambda_secrets, lambda_options, lambda_time).ok);

    req.headers.emplace_back("x-amz-content-sha256", sha256_hex(req.body));
    CHECK(sigv4::verify(req, lambda_secrets, lambda_options, lambda_time).ok);

    req.headers.back().second = sha256_hex("something else");
    const auto r = sigv4::verify(req, lambda_secrets, lambda_options, lambda_time);
    CHECK_FALSE(r.ok);
    CHECK(r.error == sigv4::auth_error::signature_mismatch);
  }
  SUBCASE("both Authorization and presigned query parameters") {
    auto req = signed_req;
    req.target += "&X-Amz-Algorithm=AWS4-HMAC-SHA256";
    CHECK(sigv4::verify(req, lambda_secrets, lambda_options, lambda_time).error
          == sigv4::auth_error::malformed);
  }
  SUBCASE("incomplete presigned query") {
    auto req = lambda_invoke_request();
    req.target += "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240501T101500Z";
    CHECK(sigv4::verify(req, lambda_secrets, lambda_options, lambda_time).error
          == sigv4::auth_error::malformed);
  }
  SUBCASE("mismatch message leaks neither the secret nor the signature") {
    const auto r = sigv4::verify(signed_req, lookup_for("AKIDNIMBUS", "other-secret"),
                                 lambda_options, lambda_time);
    CHECK(r.error == sigv4::auth_error::signature_mismatch);
    CHECK(r.message.find("secret+KEY") == std::string::npos);
    CHECK(r.message.find("other-secret") == std::string::npos);
    CHECK(r.message.find(auth_param(signed_req, "Signature")) == std::string::npos);
  }
}

namespace {

/// An image push as curl 7.88 --aws-sigv4 sends it (-T file, with
/// x-amz-content-sha256 given by the user): the path with a raw ':', signed as
/// sent. The body is spooled: the server hands over its hash, not the bytes.
http_request curl_image_push(const std::string& content_sha256, const std::string& body_hash) {
  http_request req;
  req.method = "PUT";
  req.target = "/nimbus/images/team/app:v1";
  req.headers = {{"Host", "localhost:9000"},
                 {"x-amz-content-sha256", content_sha256},
                 {"X-Amz-Date", sigv4::format_amz_date(lambda_time)}};
  req.body_file = "/nonexistent/spool-file"; // never opened by the verifier
  req.body_sha256_hex = body_hash;
  req.body_file_size = 123;
  return req;
}

/// Signs `req` over a canonical request written out by hand, with the raw
/// path and `payload_hash`, the way curl 7.88 does.
void sign_raw_path(http_request& req, const std::string& payload_hash) {
  const auto p = lambda_signing();
  const auto amz_date = sigv4::format_amz_date(p.time);
  const auto date = amz_date.substr(0, 8);
  const auto scope = date + "/" + p.region + "/" + p.service + "/aws4_request";
  const std::string cr = "PUT\n/nimbus/images/team/app:v1\n\nhost:localhost:9000\nx-amz-content-sha256:"
                         + std::string(*req.header("x-amz-content-sha256")) + "\nx-amz-date:" + amz_date
                         + "\n\nhost;x-amz-content-sha256;x-amz-date\n" + payload_hash;
  const auto sig = sigv4::signature(p.secret_access_key, date, p.region, p.service,
                                    sigv4::string_to_sign(amz_date, scope, cr));
  req.headers.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=" + p.access_key_id + "/" + scope
                                              + ", SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
                                              + sig);
}

} // namespace

TEST_CASE("sigv4: curl 7.88 image pushes sign the raw path and may leave the spooled payload unsigned") {
  const std::string body_hash = sha256_hex("image archive bytes");

  // The encoded forms (the SDK form encodes the raw ':' once, like the curl
  // form) differ from what curl signed...
  auto req = curl_image_push("UNSIGNED-PAYLOAD", body_hash);
  const std::string sh = "host;x-amz-content-sha256;x-amz-date";
  CHECK(sigv4::canonical_request(req, sh, "UNSIGNED-PAYLOAD", sigv4::path_form::sdk, false)
          .find("\n/nimbus/images/team/app%3Av1\n") != std::string::npos);
  CHECK(sigv4::canonical_request(req, sh, "UNSIGNED-PAYLOAD", sigv4::path_form::curl, false)
          .find("\n/nimbus/images/team/app%3Av1\n") != std::string::npos);
  CHECK(sigv4::canonical_request(req, sh, "UNSIGNED-PAYLOAD", sigv4::path_form::raw, false)
          .find("\n/nimbus/images/team/app:v1\n") != std::string::npos);
  // ...so only the raw-path attempt verifies it.
  sign_raw_path(req, "UNSIGNED-PAYLOAD");
  auto r = sigv4::verify(req, lambda_secrets, lambda_options, lambda_time);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.access_key_id == "AKIDNIMBUS");

  // A signed payload hash must match the hash of the spooled body.
  auto hashed = curl_image_push(body_hash, body_hash);
  sign_raw_path(hashed, body_hash);
  r = sigv4::verify(hashed, lambda_secrets, lambda_options, lambda_time);
  CHECK_MESSAGE(r.ok, r.message);
  auto other_body = hashed;
  other_body.body_sha256_hex = sha256_hex("other bytes");
  r = sigv4::verify(other_body, lambda_secrets, lambda_options, lambda_time);
  CHECK_FALSE(r.ok);
  CHECK(r.error == sigv4::auth_error::signature_mismatch);
  CHECK(r.message.find("x-amz-content-sha256") != std::string::npos);

  // Without the header, the payload hash is the spooled body's.
  auto implicit = curl_image_push(body_hash, body_hash);
  implicit.headers.erase(implicit.headers.begin() + 1);
  {
    const auto p = lambda_signing();
    const auto amz_date = sigv4::format_amz_date(p.time);
    const auto date = amz_date.substr(0, 8);
    const auto scope = date + "/" + p.region + "/" + p.service + "/aws4_request";
    const std::string cr = "PUT\n/nimbus/images/team/app:v1\n\nhost:localhost:9000\nx-amz-date:" + amz_date
                           + "\n\nhost;x-amz-date\n" + body_hash;
    implicit.headers.emplace_back(
      "Authorization", "AWS4-HMAC-SHA256 Credential=" + p.access_key_id + "/" + scope
                         + ", SignedHeaders=host;x-amz-date, Signature="
                         + sigv4::signature(p.secret_access_key, date, p.region, p.service,
                                            sigv4::string_to_sign(amz_date, scope, cr)));
  }
  r = sigv4::verify(implicit, lambda_secrets, lambda_options, lambda_time);
  CHECK_MESSAGE(r.ok, r.message);

  // The raw path is a fallback, not a way around the signature.
  auto tampered = req;
  tampered.target = "/nimbus/images/team/app:v2";
  CHECK_FALSE(sigv4::verify(tampered, lambda_secrets, lambda_options, lambda_time).ok);
}

TEST_CASE("sigv4: UNSIGNED-PAYLOAD is refused for bodies held in memory") {
  // The same signed request, but the body came in memory (an API call).
  auto req = curl_image_push("UNSIGNED-PAYLOAD", "");
  req.body_file.clear();
  req.body_file_size = 0;
  req.body = "{\"FunctionName\":\"f\"}";
  sign_raw_path(req, "UNSIGNED-PAYLOAD");
  auto r = sigv4::verify(req, lambda_secrets, lambda_options, lambda_time);
  CHECK_FALSE(r.ok);
  CHECK(r.error == sigv4::auth_error::signature_mismatch);
  CHECK(r.message.find("UNSIGNED-PAYLOAD") != std::string::npos);

  // Nor does an SDK-signed API request get to leave its body out.
  http_request api;
  api.method = "POST";
  api.target = "/2015-03-31/functions";
  api.headers = {{"Host", "localhost:9000"}};
  api.body = "{}";
  sigv4::sign(api, lambda_signing());
  CHECK(sigv4::verify(api, lambda_secrets, lambda_options, lambda_time).ok);
  for (auto& [k, v] : api.headers)
    if (nimbus::transport::iequals(k, "x-amz-content-sha256"))
      v = "UNSIGNED-PAYLOAD";
  CHECK_FALSE(sigv4::verify(api, lambda_secrets, lambda_options, lambda_time).ok);
}
