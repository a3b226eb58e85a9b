#pragma once

/// Runs the actors of the invocation path on the thread that has work for
/// them, instead of handing each message to a scheduler thread.
///
/// A warm invoke is a chain of short handlers: frontend, counter,
/// assignment, environment on the way in; environment, assignment, frontend,
/// counter on the way out. Sent from an io thread with caf::anon_send, each
/// chain starts by waking a scheduler thread, and the handlers then bounce
/// between the two scheduler threads and the io threads. On a small machine
/// those wake-ups and context switches cost more than the handlers.
///
/// `inline_unit::send` delivers a message like caf::anon_send, but with the
/// calling thread's own CAF execution unit: when the receiver was idle, CAF
/// hands it to this unit, which resumes it right here, and so on for every
/// actor the chain reaches. CAF's rule stays intact (one thread at a time
/// runs an actor: whoever finds it idle schedules it); only the thread
/// differs.
///
/// Only actors named in `inline_unit::eligible` (their state's `name`: the
/// short, non-blocking handlers of the invocation path) run here. Any other
/// actor that becomes ready, an actor with more messages than a small batch,
/// and whatever is left after a bounded number of resumptions go to the
/// scheduler as usual, so an io thread never runs blocking work (the
/// registry's zip flattening, a worker building a sandbox) and always gets
/// back to its sockets.

#include <caf/actor_system.hpp>
#include <caf/execution_unit.hpp>
#include <caf/message_id.hpp>
#include <caf/send.hpp>

#include <cstddef>
#include <thread>
#include <utility>
#include <vector>

namespace nimbus {

class inline_unit final : public caf::execution_unit {
public:
  /// Messages an actor handles per resumption here (its mailbox may hold
  /// messages other threads sent, which then run here too).
  static constexpr size_t batch = 4;
  /// Resumptions per send() before the rest goes to the scheduler.
  static constexpr size_t max_resumptions = 64;

  /// Sends `xs` to `dest` like caf::anon_send, then runs the actors that
  /// became ready on this thread before returning (see above).
  template <class Dest, class... Ts>
  static void send(const Dest& dest, Ts&&... xs) {
    static_assert(sizeof...(Ts) > 0, "no message to send");
    using token = caf::detail::type_list<caf::detail::strip_and_convert_t<Ts>...>;
    static_assert(caf::response_type_unbox<caf::signatures_of_t<Dest>, token>::valid,
                  "receiver does not accept given message");
    if (!dest)
      return;
    auto& unit = local(dest->home_system());
    dest->eq_impl(caf::make_message_id(), nullptr, &unit, std::forward<Ts>(xs)...);
    unit.drain();
  }

  /// Whether an actor of this name may run on an io thread.
  static bool eligible(const char* actor_name);

  /// Called by CAF when an actor becomes ready while this unit sends or
  /// runs actors.
  void exec_later(caf::resumable* job) override;

  /// Resumptions done here and jobs handed to the scheduler, on this thread
  /// (for tests).
  size_t resumed() const { return resumed_; }
  size_t handed_off() const { return handed_off_; }

  /// The calling thread's unit for `sys`.
  static inline_unit& local(caf::actor_system& sys);

private:
  explicit inline_unit(caf::actor_system& sys);

  void drain();
  void hand_off(caf::resumable* job);

  std::vector<caf::resumable*> jobs_;
  std::thread::id owner_;
  bool draining_ = false;
  size_t resumed_ = 0;
  size_t handed_off_ = 0;
};

} // namespace nimbus
