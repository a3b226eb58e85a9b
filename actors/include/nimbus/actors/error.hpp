#pragma once

/// The one error enum of Nimbus, registered with CAF. Errors carry their
/// human-readable detail as a string in the error context; the frontend maps
/// each code to the exact AWS error name and HTTP status.

#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>

#include <cstdint>
#include <string>

namespace nimbus {

/// Error codes of all Nimbus actors.
enum class ec : uint8_t {
  /// Not an error.
  none = 0,
  /// A request field has an invalid value (400 InvalidParameterValueException).
  invalid_parameter,
  /// The request body is not what the operation expects (400
  /// InvalidRequestContentException).
  invalid_request_content,
  /// The named function (or other resource) does not exist (404
  /// ResourceNotFoundException).
  resource_not_found,
  /// The resource exists already or is being changed (409
  /// ResourceConflictException).
  resource_conflict,
  /// The RevisionId does not match (412 PreconditionFailedException).
  precondition_failed,
  /// The account's code storage quota is exhausted (400
  /// CodeStorageExceededException).
  code_storage_exceeded,
  /// Durable storage failed; the request had no effect (500 ServiceException).
  storage_failure,
  /// Any other internal failure (500 ServiceException).
  service_failure,
  /// An execution environment could not be created or its runtime failed to
  /// initialize; the context holds the error type and the error JSON.
  init_failed,
  /// The environment is not in a state to do this (busy, gone).
  environment_unavailable,
  /// Over a concurrency or rate limit (429 TooManyRequestsException); the
  /// context holds the AWS Reason.
  throttled,
};

/// Renders an error code (required by CAF).
std::string to_string(ec x);

} // namespace nimbus

CAF_ERROR_CODE_ENUM(nimbus::ec, "nimbus")

namespace nimbus {

/// Makes an error with a message as its context.
inline caf::error make_error(ec code, std::string message) {
  return caf::make_error(code, std::move(message));
}

/// Returns the message stored in an error's context, or its rendering.
std::string error_message(const caf::error& err);

} // namespace nimbus
