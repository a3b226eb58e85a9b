#pragma once

/// The CODE BUILDER actor: turns a pushed container image archive (docker
/// save or OCI layout, spooled to disk by the HTTP server) into a flattened,
/// chunked, encrypted image in the code store and tags it.
///
/// Flattening a large image takes seconds of blocking work (unpacking,
/// mkfs.erofs, sealing chunks): the frontend spawns one detached builder per
/// push, so neither the scheduler nor the registry waits for it. The builder
/// answers one request and ends.

#include "nimbus/actors/interfaces.hpp"
#include "nimbus/storage/code_store.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace nimbus {

/// Settings of a code builder.
struct code_builder_config {
  std::shared_ptr<storage::code_store> code;
  /// For the image URI in the answer.
  std::string region = "us-east-1";
};

/// Spawns a detached CODE BUILDER.
code_builder_actor spawn_code_builder(caf::actor_system& sys, code_builder_config cfg);

} // namespace nimbus
