#pragma once

/// Every typed actor interface of Nimbus, with the atoms they use and the type
/// ID block that registers all message types with CAF. One `//` line per
/// handler says what it does.

#include "nimbus/actors/messages.hpp"

#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>

namespace nimbus {

// -- atoms (verbs, at most 10 characters) -------------------------------------

using create_atom = caf::atom_constant<caf::atom("create")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using delete_atom = caf::atom_constant<caf::atom("delete")>;
using update_code_atom = caf::atom_constant<caf::atom("updcode")>;
using update_config_atom = caf::atom_constant<caf::atom("updconf")>;
using fetch_code_atom = caf::atom_constant<caf::atom("fetchcode")>;
using usage_atom = caf::atom_constant<caf::atom("usage")>;

// -- interfaces ---------------------------------------------------------------

/// The REGISTRY actor interface: the single source of truth for functions and
/// their code. All handlers take the caller's account id first; a function is
/// only ever visible to its own account.
using registry_actor = caf::typed_actor<
  // Creates a function from a validated spec; fails if it exists.
  caf::replies_to<create_atom, std::string, transport::lambda::function_spec>::with<
    storage::function_record>,
  // Returns one function by name.
  caf::replies_to<get_atom, std::string, std::string>::with<storage::function_record>,
  // Lists functions after a marker, at most the given count.
  caf::replies_to<list_atom, std::string, std::string, int32_t>::with<function_page>,
  // Replaces a function's code.
  caf::replies_to<update_code_atom, std::string, std::string,
                  transport::lambda::code_update>::with<storage::function_record>,
  // Changes a function's configuration.
  caf::replies_to<update_config_atom, std::string, std::string,
                  transport::lambda::configuration_patch>::with<storage::function_record>,
  // Deletes a function and, when nothing else uses it, its code.
  caf::replies_to<delete_atom, std::string, std::string>::with<bool>,
  // Returns a function's code (the zip) if its hex SHA-256 still matches.
  caf::replies_to<fetch_code_atom, std::string, std::string, std::string>::with<std::string>,
  // Reports what an account uses.
  caf::replies_to<usage_atom, std::string>::with<account_usage>>;

/// The FRONTEND actor interface: authenticates, routes and answers API
/// requests handed over by the HTTP server.
using frontend_actor = caf::typed_actor<
  // Answers one HTTP request.
  caf::replies_to<transport::http_request>::with<transport::http_response>>;

} // namespace nimbus

// -- type IDs -----------------------------------------------------------------

CAF_BEGIN_TYPE_ID_BLOCK(nimbus, caf::first_custom_type_id)
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::http_request))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::http_response))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::lambda::function_spec))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::lambda::configuration_patch))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::lambda::code_update))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::storage::function_record))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::function_page))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::account_usage))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::registry_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::frontend_actor))
CAF_END_TYPE_ID_BLOCK(nimbus)
