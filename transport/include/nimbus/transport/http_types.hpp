#pragma once

/// Plain HTTP request and response values passed between the HTTP server, the
/// Lambda API codec and the actors. They carry no sockets and no Beast types,
/// so request handling can be tested as a pure function.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nimbus::transport {

/// One header field as received or to be sent.
using http_field = std::pair<std::string, std::string>;

/// A complete HTTP request.
struct http_request {
  /// Request method, e.g. "GET".
  std::string method;
  /// Request target exactly as received: the raw path plus "?query" if any.
  std::string target;
  /// Header fields in the order received; names keep their original case.
  std::vector<http_field> headers;
  /// The body (empty when there is none, and when the body was spooled).
  std::string body;
  /// Spooled requests (see http_server_options::spool_path): the file that
  /// holds the body; empty otherwise. The server removes the file once the
  /// response is sent unless the handler moved it away first.
  std::string body_file;
  /// Spooled requests: lowercase hex SHA-256 of the body in `body_file`.
  std::string body_sha256_hex;
  /// Spooled requests: size of the body in `body_file` in bytes.
  uint64_t body_file_size = 0;
  /// The id the server assigned to this request (sent as x-amzn-RequestId).
  std::string request_id;
  /// Remote peer address, "ip:port".
  std::string remote;
  /// The shard of the server's io_runner whose thread received the request
  /// (see io_runner::start_sharded), or -1 (the server has its own threads).
  int32_t shard = -1;

  /// Returns the first header whose name matches `name` case-insensitively.
  std::optional<std::string_view> header(std::string_view name) const;
  /// Returns the raw path part of the target (before '?').
  std::string_view path() const;
  /// Returns the raw query part of the target (after '?', possibly empty).
  std::string_view query() const;
  /// True if the body was streamed to `body_file` instead of `body`.
  bool spooled() const { return !body_file.empty(); }
};

/// A complete HTTP response.
struct http_response {
  /// HTTP status code.
  int status = 200;
  /// Header fields to send; the server adds Content-Length, Date, Server,
  /// Connection and x-amzn-RequestId itself.
  std::vector<http_field> headers;
  /// The body.
  std::string body;

  /// More header fields, already formatted as "Name: value\r\n" lines and
  /// sent after `headers` as they are. Filled by add_header_line: one string
  /// for all of a response's fields instead of one per name and value, for
  /// responses made on every invocation.
  std::string header_lines;

  /// Returns the first header whose name matches `name` case-insensitively
  /// (in `headers`, then in `header_lines`).
  std::optional<std::string_view> header(std::string_view name) const;
  /// Sets (replaces or adds) a header.
  void set_header(std::string name, std::string value);
  /// Appends a field to `header_lines` (no replace: the name must not be set
  /// otherwise). A field the server would drop from `headers` (a name or
  /// value that could split the response, or a field the server owns) is
  /// not added; returns whether it was.
  bool add_header_line(std::string_view name, std::string_view value);
};

/// Whether a header field may be sent: a name without separators or
/// controls, and a value without CR, LF or NUL.
bool valid_header_field(std::string_view name, std::string_view value);

/// Whether the HTTP server sets this field itself (framing and identity:
/// Content-Length, Transfer-Encoding, Connection, Date, Server,
/// x-amzn-RequestId), so a handler's field of this name is dropped.
bool server_owned_field(std::string_view name);

/// ASCII case-insensitive string comparison.
bool iequals(std::string_view a, std::string_view b);

} // namespace nimbus::transport
