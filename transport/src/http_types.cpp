#include "nimbus/transport/http_types.hpp"

#include <cstring>

namespace nimbus::transport {

namespace {

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::optional<std::string_view> find(const std::vector<http_field>& fields, std::string_view name) {
  for (const auto& [k, v] : fields)
    if (iequals(k, name))
      return std::string_view{v};
  return std::nullopt;
}

} // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

std::optional<std::string_view> http_request::header(std::string_view name) const {
  return find(headers, name);
}

std::string_view http_request::path() const {
  std::string_view t = target;
  return t.substr(0, t.find('?'));
}

std::string_view http_request::query() const {
  std::string_view t = target;
  auto q = t.find('?');
  return q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
}

std::optional<std::string_view> http_response::header(std::string_view name) const {
  if (auto v = find(headers, name))
    return v;
  std::string_view rest = header_lines;
  while (!rest.empty()) {
    auto end = rest.find("\r\n");
    auto line = rest.substr(0, end);
    auto colon = line.find(':');
    if (colon != std::string_view::npos && iequals(line.substr(0, colon), name)) {
      auto value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      return value;
    }
    if (end == std::string_view::npos)
      break;
    rest.remove_prefix(end + 2);
  }
  return std::nullopt;
}

bool http_response::add_header_line(std::string_view name, std::string_view value) {
  if (!valid_header_field(name, value) || server_owned_field(name))
    return false;
  header_lines.append(name);
  header_lines += ": ";
  header_lines.append(value);
  header_lines += "\r\n";
  return true;
}

bool valid_header_field(std::string_view name, std::string_view value) {
  if (name.empty())
    return false;
  for (char c : name)
    if (c <= ' ' || c == ':' || c == 0x7f)
      return false;
  // memchr is vectorized; values are checked on every response.
  return std::memchr(value.data(), '\r', value.size()) == nullptr
         && std::memchr(value.data(), '\n', value.size()) == nullptr
         && std::memchr(value.data(), '\0', value.size()) == nullptr;
}

bool server_owned_field(std::string_view name) {
  return iequals(name, "Content-Length") || iequals(name, "Transfer-Encoding")
         || iequals(name, "Connection") || iequals(name, "Date") || iequals(name, "Server")
         || iequals(name, "x-amzn-RequestId");
}

void http_response::set_header(std::string name, std::string value) {
  for (auto& [k, v] : headers)
    if (iequals(k, name)) {
      v = std::move(value);
      return;
    }
  headers.emplace_back(std::move(name), std::move(value));
}

} // namespace nimbus::transport
