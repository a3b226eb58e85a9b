// inline_unit: the actors of the invocation path run on the thread that sends
// to them; other actors, and chains that do not end, go to CAF's scheduler.
// These tests use CAF's real (threaded) scheduler, because what they check is
// which thread runs an actor. Actors are spawned with lazy_init so that they
// are idle, not scheduled, when the test sends the first message.

#include "nimbus/actors/inline_unit.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/logger.hpp>
#include <caf/stateful_actor.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <memory>
#include <thread>

using namespace nimbus;

namespace {

// Test actors named like the real ones: eligibility goes by name.
struct as_frontend {
  static constexpr const char* name = "frontend";
};
struct as_counter {
  static constexpr const char* name = "counter";
};
struct as_registry {
  static constexpr const char* name = "registry";
};

using thread_promise = std::shared_ptr<std::promise<std::thread::id>>;

struct system_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;

  static caf::actor_system_config& init(caf::actor_system_config& c) {
    c.set("scheduler.max-threads", 2);
    c.set("logger.verbosity", caf::atom("quiet"));
    return c;
  }

  system_fixture() : sys(init(cfg)) {
  }
};

// Records the thread it runs on, then passes the message on to `next`.
template <class State>
caf::behavior recorder(caf::stateful_actor<State>* self, thread_promise where, caf::actor next) {
  return {
    [=](int x) {
      where->set_value(std::this_thread::get_id());
      if (next)
        self->send(next, x);
      self->quit();
    },
  };
}

// Bounces a countdown to its peer until it reaches zero.
caf::behavior bouncer(caf::stateful_actor<as_counter>* self,
                      std::shared_ptr<std::promise<void>> done) {
  return {
    [=](const caf::actor& peer, int left) {
      if (left == 0) {
        done->set_value();
        return;
      }
      self->send(peer, caf::actor_cast<caf::actor>(self), left - 1);
    },
  };
}

std::thread::id wait_for(const thread_promise& p) {
  auto f = p->get_future();
  // Generous: only a hang fails this, never slowness.
  REQUIRE(f.wait_for(std::chrono::seconds{30}) == std::future_status::ready);
  return f.get();
}

} // namespace

TEST_CASE("inline unit: only the invocation path's actors are eligible") {
  CHECK(inline_unit::eligible("frontend"));
  CHECK(inline_unit::eligible("counter"));
  CHECK(inline_unit::eligible("assignment"));
  CHECK(inline_unit::eligible("environment"));
  CHECK_FALSE(inline_unit::eligible("registry"));
  CHECK_FALSE(inline_unit::eligible("worker"));
  CHECK_FALSE(inline_unit::eligible("user.scheduled-actor"));
  CHECK_FALSE(inline_unit::eligible(nullptr));
}

TEST_CASE("inline unit: an idle eligible actor, and the chain it starts, run on the sender's "
          "thread") {
  system_fixture f;
  auto second_ran = std::make_shared<std::promise<std::thread::id>>();
  auto first_ran = std::make_shared<std::promise<std::thread::id>>();
  auto second = f.sys.spawn<caf::lazy_init>(recorder<as_counter>, second_ran, caf::actor{});
  auto first = f.sys.spawn<caf::lazy_init>(recorder<as_frontend>, first_ran, second);
  auto& unit = inline_unit::local(f.sys);
  auto resumed_before = unit.resumed();
  inline_unit::send(first, 1);
  // Both ran before send() returned, on this thread.
  auto first_future = first_ran->get_future();
  auto second_future = second_ran->get_future();
  REQUIRE(first_future.wait_for(std::chrono::seconds{0}) == std::future_status::ready);
  REQUIRE(second_future.wait_for(std::chrono::seconds{0}) == std::future_status::ready);
  CHECK(first_future.get() == std::this_thread::get_id());
  CHECK(second_future.get() == std::this_thread::get_id());
  CHECK(unit.resumed() - resumed_before == 2);
}

TEST_CASE("inline unit: an actor that is not eligible runs on the scheduler") {
  system_fixture f;
  auto ran = std::make_shared<std::promise<std::thread::id>>();
  auto blocking = f.sys.spawn<caf::lazy_init>(recorder<as_registry>, ran, caf::actor{});
  auto& unit = inline_unit::local(f.sys);
  auto handed_before = unit.handed_off();
  auto resumed_before = unit.resumed();
  inline_unit::send(blocking, 1);
  CHECK(unit.handed_off() - handed_before == 1);
  CHECK(unit.resumed() == resumed_before);
  CHECK(wait_for(ran) != std::this_thread::get_id());
}

TEST_CASE("inline unit: an eligible actor reached from a non-eligible one stays on the "
          "scheduler") {
  system_fixture f;
  auto eligible_ran = std::make_shared<std::promise<std::thread::id>>();
  auto blocking_ran = std::make_shared<std::promise<std::thread::id>>();
  auto eligible = f.sys.spawn<caf::lazy_init>(recorder<as_counter>, eligible_ran, caf::actor{});
  auto blocking = f.sys.spawn<caf::lazy_init>(recorder<as_registry>, blocking_ran, eligible);
  inline_unit::send(blocking, 1);
  auto blocking_thread = wait_for(blocking_ran);
  CHECK(blocking_thread != std::this_thread::get_id());
  // The scheduler thread sent it: this thread's unit is not involved.
  CHECK(wait_for(eligible_ran) != std::this_thread::get_id());
}

TEST_CASE("inline unit: a chain that does not end goes to the scheduler after a bounded number "
          "of resumptions") {
  system_fixture f;
  auto done = std::make_shared<std::promise<void>>();
  auto a = f.sys.spawn<caf::lazy_init>(bouncer, done);
  auto b = f.sys.spawn<caf::lazy_init>(bouncer, done);
  auto& unit = inline_unit::local(f.sys);
  auto resumed_before = unit.resumed();
  auto handed_before = unit.handed_off();
  // 10,000 bounces: send() returns after at most max_resumptions of them.
  inline_unit::send(a, b, 10'000);
  CHECK(unit.resumed() - resumed_before <= inline_unit::max_resumptions);
  CHECK(unit.handed_off() - handed_before >= 1);
  // The scheduler finishes the rest.
  auto fut = done->get_future();
  REQUIRE(fut.wait_for(std::chrono::seconds{30}) == std::future_status::ready);
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
}

TEST_CASE("inline unit: an actor that spawns while running here does not keep the actor system "
          "from shutting down") {
  // CAF keeps a reference to its logger in a thread_local of each thread
  // that spawns, and ~actor_system waits for it to go. Here the sending
  // thread lives on until after the system is gone, as nimbusd's io threads
  // do (the test's own thread spawned too, but ~actor_system resets the
  // reference of the thread that runs it).
  auto spawned = std::make_shared<std::promise<std::thread::id>>();
  std::promise<bool> sent;
  std::promise<void> system_gone;
  std::thread io;
  {
    system_fixture f;
    auto spawner = f.sys.spawn<caf::lazy_init>([spawned](caf::stateful_actor<as_frontend>* self) {
      return caf::behavior{
        [=](int) {
          auto child = self->spawn([](caf::event_based_actor*) { return caf::behavior{}; });
          self->send_exit(child, caf::exit_reason::user_shutdown);
          spawned->set_value(std::this_thread::get_id());
          self->quit();
        },
      };
    });
    io = std::thread{[&, spawner]() mutable {
      inline_unit::send(spawner, 1);
      spawner = nullptr;
      sent.set_value(caf::logger::current_logger() == nullptr);
      system_gone.get_future().wait();
    }};
    CHECK(sent.get_future().get());
  } // ~actor_system: hangs (and the test times out) if the reference stayed
  system_gone.set_value();
  auto io_id = io.get_id();
  io.join();
  CHECK(wait_for(spawned) == io_id);
}
