#pragma once

/// AWS Signature Version 4: verification of signed requests (Authorization
/// header and presigned query string) and signing (for tests and clients).
///
/// Canonical path: AWS SDKs and CLIs sign the path as sent with every segment
/// percent-encoded once more ("f%3Alive" is signed as "f%253Alive"), while
/// curl --aws-sigv4 signs the path as sent. The verifier therefore tries the
/// double-encoded form first and the single-encoded form second; both are
/// normalized (dot segments removed, repeated slashes collapsed). curl 7.88
/// does not even encode reserved characters such as ':' in the path it
/// signs, so the raw path as received is tried last.
///
/// The payload hash is always computed from the received body (for spooled
/// requests, by the HTTP server while it streamed the body to disk); a
/// x-amz-content-sha256 header that disagrees makes the signature fail.
/// "UNSIGNED-PAYLOAD" is accepted for spooled requests only.
/// Signatures are compared in constant time.

#include "nimbus/transport/http_types.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace nimbus::transport::sigv4 {

/// Why a request failed verification.
enum class auth_error {
  /// No Authorization header and no presigned query parameters.
  missing_authentication,
  /// The Authorization header or the query parameters are malformed.
  malformed,
  /// The access key id is not known.
  unknown_access_key,
  /// The signature does not match.
  signature_mismatch,
  /// The request time is outside the allowed clock-skew window, or a
  /// presigned request has expired.
  expired,
  /// The credential scope names another region or service.
  wrong_scope,
};

/// Outcome of a verification.
struct verify_result {
  /// True if the signature verified.
  bool ok = false;
  /// What went wrong when !ok.
  auth_error error = auth_error::missing_authentication;
  /// Human-readable detail for the error response (never contains secrets).
  std::string message;
  /// The access key id from the credential (set whenever it could be parsed).
  std::string access_key_id;
};

/// Looks up the secret access key for an access key id.
using secret_lookup = std::function<std::optional<std::string>(std::string_view access_key_id)>;

/// What the verifier expects of a request.
struct verify_options {
  /// Region the credential scope must name, e.g. "us-east-1".
  std::string region;
  /// Service the credential scope must name, e.g. "lambda".
  std::string service;
  /// Allowed difference between the request time and now.
  std::chrono::seconds max_skew{300};
};

/// Verifies the signature of `req` as of time `now`.
verify_result verify(const http_request& req, const secret_lookup& secrets,
                     const verify_options& options, std::chrono::system_clock::time_point now);

/// Credentials and scope for signing.
struct signing_params {
  std::string access_key_id;
  std::string secret_access_key;
  std::string region;
  std::string service;
  std::chrono::system_clock::time_point time;
};

/// Signs `req` in place the way AWS SDKs do (Authorization header, x-amz-date,
/// x-amz-content-sha256; double-encoded canonical path). `req` must carry a
/// Host header.
void sign(http_request& req, const signing_params& params);

/// Formats a time as the SigV4 timestamp "YYYYMMDDTHHMMSSZ".
std::string format_amz_date(std::chrono::system_clock::time_point t);

/// Parses "YYYYMMDDTHHMMSSZ".
std::optional<std::chrono::system_clock::time_point> parse_amz_date(std::string_view text);

/// How the canonical URI is derived from the path as received.
enum class path_form {
  /// Every segment encoded once more (AWS SDKs and CLIs).
  sdk,
  /// Every segment decoded and encoded once (curl --aws-sigv4, usually).
  curl,
  /// The raw path exactly as received (curl 7.88 with reserved characters
  /// such as ':' left unencoded).
  raw,
};

/// Builds the canonical request with the given path form (exposed for tests).
std::string canonical_request(const http_request& req, std::string_view signed_headers,
                              std::string_view payload_hash, path_form form, bool presigned);

/// Builds the canonical request (exposed for tests). `double_encode_path`
/// selects the SDK form (true) or the curl form (false). `signed_headers` is the
/// ';'-separated lowercase list; `payload_hash` the hex SHA-256 of the body.
std::string canonical_request(const http_request& req, std::string_view signed_headers,
                              std::string_view payload_hash, bool double_encode_path,
                              bool presigned);

/// Builds the string to sign (exposed for tests).
std::string string_to_sign(std::string_view amz_date, std::string_view scope,
                           std::string_view canonical_request);

/// Derives the signing key and signs `string_to_sign`; returns lowercase hex.
std::string signature(std::string_view secret, std::string_view date, std::string_view region,
                      std::string_view service, std::string_view string_to_sign);

} // namespace nimbus::transport::sigv4
