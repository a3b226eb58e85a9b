#pragma once

/// Assembly of a node: the CAF actor system, the actors a single-node Nimbus
/// runs, and the HTTP server that hands requests to the FRONTEND. This is the
/// only place that wires transport callbacks to actors.

#include "nimbus/config/config.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace nimbus {

/// A running node. Destroying it stops it.
class node {
public:
  /// Starts a node from a validated config. On failure returns nullptr and
  /// sets `error` to a message fit for the user.
  static std::unique_ptr<node> start(const config::node_config& cfg, std::string& error);

  ~node();

  node(const node&) = delete;
  node& operator=(const node&) = delete;

  /// The port the Lambda API listens on.
  uint16_t api_port() const;

  /// Stops serving: drains HTTP requests, then stops all actors. Idempotent.
  void stop();

private:
  node();
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace nimbus
