#pragma once

// The deterministic fixture for actor tests: CAF's test coordinator runs every
// actor on the test's own thread, one message at a time, so tests need no
// sleeps and see the same interleaving on every run. CAF's own expect() macros
// do not work under doctest (CAF-0.17.md §5); this fixture replaces them.

#include "nimbus/actors/interfaces.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

namespace nimbus::test {

struct actor_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  caf::scheduler::test_coordinator& sched;

  static caf::actor_system_config& init(caf::actor_system_config& c) {
    c.set("scheduler.policy", caf::atom("testing"));
    c.set("logger.verbosity", caf::atom("quiet"));
    c.add_message_types<caf::id_block::nimbus>();
    return c;
  }

  actor_fixture()
    : sys(init(cfg)),
      self(sys, true),
      sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {
  }

  ~actor_fixture() {
    sched.run();
  }

  /// Sends a request, runs all actors until idle, and returns the answer.
  /// The request has no timeout: an actor that never answers hangs the test
  /// (and ctest's timeout ends it), so tests only ask what must be answered.
  template <class T, class Handle, class... Ts>
  caf::expected<T> request(const Handle& hdl, Ts&&... xs) {
    auto rh = self->request(hdl, caf::infinite, std::forward<Ts>(xs)...);
    sched.run();
    caf::expected<T> result{caf::sec::request_timeout};
    bool answered = false;
    rh.receive(
      [&](T& x) {
        result = std::move(x);
        answered = true;
      },
      [&](caf::error& e) {
        result = std::move(e);
        answered = true;
      });
    return result;
  }

  template <class Handle>
  void stop(const Handle& hdl) {
    self->send_exit(hdl, caf::exit_reason::user_shutdown);
    sched.run();
  }
};

} // namespace nimbus::test
