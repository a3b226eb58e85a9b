#include "nimbus/actors/inline_unit.hpp"

#include <caf/local_actor.hpp>
#include <caf/logger.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduled_actor.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

#include <cstring>
#include <memory>

namespace nimbus {

namespace {

// The names of the invocation path's actors (their state's `name`). Their
// handlers only look at memory, send messages and write to non-blocking
// sockets: none of them blocks.
constexpr const char* inline_actors[] = {"frontend", "counter", "assignment", "environment"};

} // namespace

inline_unit::inline_unit(caf::actor_system& sys)
    : caf::execution_unit(&sys), owner_(std::this_thread::get_id()) {
  jobs_.reserve(8);
}

bool inline_unit::eligible(const char* actor_name) {
  if (actor_name == nullptr)
    return false;
  for (auto name : inline_actors)
    if (std::strcmp(name, actor_name) == 0)
      return true;
  return false;
}

inline_unit& inline_unit::local(caf::actor_system& sys) {
  // One unit per thread and actor system (tests run several systems).
  thread_local std::vector<std::unique_ptr<inline_unit>> units;
  for (auto& u : units)
    if (&u->system() == &sys)
      return *u;
  units.emplace_back(new inline_unit(sys));
  return *units.back();
}

void inline_unit::hand_off(caf::resumable* job) {
  // The reference CAF took for scheduling goes with the job.
  ++handed_off_;
  system().scheduler().enqueue(job);
}

void inline_unit::exec_later(caf::resumable* job) {
  // CAF calls this only from code this unit runs, so on the owner thread;
  // anything else (a stale context pointer) goes to the scheduler.
  if (std::this_thread::get_id() != owner_ || job->subtype() != caf::resumable::scheduled_actor) {
    hand_off(job);
    return;
  }
  // A resumable of this subtype is a scheduled_actor (a plain base class:
  // no dynamic_cast needed, which showed in profiles).
  auto actor = static_cast<caf::scheduled_actor*>(job);
  if (!eligible(actor->name())) {
    hand_off(job);
    return;
  }
  jobs_.push_back(job);
}

void inline_unit::drain() {
  if (draining_)
    return; // the outer drain() on this thread picks the new jobs up
  draining_ = true;
  // An actor that spawns another one makes CAF keep a reference to its
  // logger in a thread_local of the spawning thread; the actor system's
  // destructor waits for that reference to go. CAF's threads end before it
  // waits, io threads may not: let go of it again.
  bool had_logger = caf::logger::current_logger() != nullptr;
  size_t rounds = 0;
  while (!jobs_.empty()) {
    auto job = jobs_.back();
    jobs_.pop_back();
    if (rounds++ >= max_resumptions) {
      hand_off(job);
      continue;
    }
    ++resumed_;
    switch (job->resume(this, batch)) {
      case caf::resumable::resume_later:
        // More mail than one batch: the scheduler runs the rest, so a busy
        // actor cannot keep this thread from its sockets.
        hand_off(job);
        break;
      case caf::resumable::done:
      case caf::resumable::awaiting_message:
      case caf::resumable::shutdown_execution_unit:
        caf::intrusive_ptr_release(job);
        break;
    }
  }
  if (!had_logger && caf::logger::current_logger() != nullptr)
    caf::logger::set_current_actor_system(nullptr);
  draining_ = false;
}

} // namespace nimbus
