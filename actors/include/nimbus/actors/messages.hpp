#pragma once

/// Message types exchanged between actors, and `inspect` overloads that make
/// the plain structs of transport/ and storage/ serializable for CAF (those
/// folders know nothing of CAF; the overloads live here, in the namespaces of
/// the types so that argument-dependent lookup finds them).

#include "nimbus/storage/function_record.hpp"
#include "nimbus/transport/http_types.hpp"
#include "nimbus/transport/lambda_codec.hpp"

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/none.hpp>
#include <caf/optional.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace caf {

/// CAF 0.17 cannot inspect std::optional; this bridges through caf::optional.
template <class Inspector, class T>
typename Inspector::result_type inspect(Inspector& f, std::optional<T>& x) {
  caf::optional<T> tmp;
  if (x)
    tmp = *x;
  auto load = meta::load_callback([&]() -> error {
    if (tmp)
      x = *tmp;
    else
      x.reset();
    return none;
  });
  return f(tmp, load);
}

} // namespace caf

namespace nimbus {

/// One page of ListFunctions.
struct function_page {
  std::vector<storage::function_record> functions;
  /// Marker for the next page; empty on the last page.
  std::string next_marker;
};

/// What an account uses (GetAccountSettings).
struct account_usage {
  uint64_t total_code_size = 0;
  uint64_t function_count = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_page& x) {
  return f(caf::meta::type_name("function_page"), x.functions, x.next_marker);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, account_usage& x) {
  return f(caf::meta::type_name("account_usage"), x.total_code_size, x.function_count);
}

} // namespace nimbus

namespace nimbus::transport {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_request& x) {
  return f(caf::meta::type_name("http_request"), x.method, x.target, x.headers, x.body,
           x.request_id, x.remote);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_response& x) {
  return f(caf::meta::type_name("http_response"), x.status, x.headers, x.body);
}

} // namespace nimbus::transport

namespace nimbus::transport::lambda {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_spec& x) {
  return f(caf::meta::type_name("function_spec"), x.name, x.runtime, x.role, x.handler,
           x.description, x.timeout, x.memory_size, x.ephemeral_storage, x.environment,
           x.has_environment, x.architectures, x.package_type, x.zip);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, configuration_patch& x) {
  return f(caf::meta::type_name("configuration_patch"), x.runtime, x.role, x.handler,
           x.description, x.timeout, x.memory_size, x.ephemeral_storage, x.environment,
           x.revision_id);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, code_update& x) {
  return f(caf::meta::type_name("code_update"), x.zip, x.revision_id, x.dry_run);
}

} // namespace nimbus::transport::lambda

namespace nimbus::storage {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_record& x) {
  return f(caf::meta::type_name("function_record"), x.account_id, x.name, x.runtime, x.role,
           x.handler, x.description, x.timeout, x.memory_size, x.ephemeral_storage,
           x.environment, x.has_environment, x.architectures, x.package_type, x.code_sha256,
           x.code_sha256_hex, x.code_size, x.last_modified, x.revision_id, x.version, x.state,
           x.last_update_status);
}

} // namespace nimbus::storage
