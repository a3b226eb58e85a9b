#pragma once

/// A small streaming JSON writer. Parsing is simdjson's job; writing JSON is
/// simple enough that a writer with correct string escaping is all we need.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// Appends `s` to `out` as a quoted JSON string, escaping quotes, backslashes
/// and control characters. Invalid UTF-8 bytes are replaced with U+FFFD.
void append_json_string(std::string& out, std::string_view s);

/// Microseconds as milliseconds with `decimals` (0 to 3) digits after the
/// point, rounded half up: 1234567 us, 2 -> "1234.57". As printf's "%.*f"
/// would print it, without a floating-point conversion (this runs several
/// times per invocation, for Server-Timing and the REPORT line).
std::string format_millis(int64_t micros, int decimals);

/// Builds one JSON document. Calls must nest correctly; keys go only inside
/// objects, each followed by exactly one value.
class json_writer {
public:
  json_writer& begin_object();
  json_writer& end_object();
  json_writer& begin_array();
  json_writer& end_array();
  json_writer& key(std::string_view k);
  json_writer& value(std::string_view v);
  json_writer& value(const char* v);
  json_writer& value(const std::string& v);
  json_writer& value(int64_t v);
  json_writer& value(uint64_t v);
  json_writer& value(int32_t v);
  json_writer& value(uint32_t v);
  json_writer& value(bool v);
  json_writer& value(double v);
  json_writer& null();
  /// Inserts already-serialized JSON as a value.
  json_writer& raw(std::string_view json);

  /// The document so far.
  const std::string& str() const {
    return out_;
  }
  /// Takes the document.
  std::string take() {
    return std::move(out_);
  }

private:
  void before_value();
  std::string out_;
  // One entry per open container: true while it has no element yet.
  std::vector<bool> empty_;
  bool after_key_ = false;
};

} // namespace nimbus::storage
