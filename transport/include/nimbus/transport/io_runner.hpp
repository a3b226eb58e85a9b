#pragma once

/// A pool of io threads (Boost.Asio io_contexts) that many servers and
/// descriptor watches share. The worker runs the Runtime API of all its
/// execution environments on one io_runner instead of giving each
/// environment threads of its own: with dozens of environments busy at once
/// the threads would mostly wake each other up.

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace nimbus::transport {

/// Io threads in one of two shapes:
///  - shared (start()): one io_context run by every thread; a handler runs
///    on whichever thread is free. Good for blocking helper work.
///  - sharded (start_sharded()): one io_context per thread, each thread
///    optionally pinned to a CPU of its own. A connection, its handlers and
///    the actors they run inline then stay on one CPU: on a small VM a
///    wake-up across CPUs costs ten times one on the same CPU (see
///    bench/per_core_emulation.py).
/// Keep it in a shared_ptr: servers and watches that use it hold a
/// reference, so it outlives them.
class io_runner {
public:
  /// Starts `threads` io threads sharing one io_context (0: one per CPU
  /// this process may run on). `nice` is the threads' nice value (see
  /// nice_error()); without, they inherit the caller's.
  static std::shared_ptr<io_runner> start(size_t threads, std::optional<int> nice = {});

  /// Starts `shards` io_contexts with one thread each (0: one per CPU this
  /// process may run on). With `pin`, shard i's thread is bound to the i-th
  /// of those CPUs (wrapping around when there are more shards than CPUs).
  static std::shared_ptr<io_runner> start_sharded(size_t shards, bool pin,
                                                  std::optional<int> nice = {});

  /// 0 when the io threads got the nice value they were started with (or
  /// were given none), else the errno of setting it (EACCES: lowering it
  /// needs CAP_SYS_NICE); they then run at their starter's.
  int nice_error() const;

  /// Stops the io_contexts and joins the threads (detaches the calling
  /// thread instead when the last reference is dropped on one of them).
  ~io_runner();

  io_runner(const io_runner&) = delete;
  io_runner& operator=(const io_runner&) = delete;

  /// Number of io_contexts (1 when shared).
  size_t shards() const;
  /// Threads that run each io_context: 1 when sharded, else all of them.
  /// With one, handlers on an io_context never run concurrently.
  size_t threads_per_context() const;

  /// The io_context of shard `shard` (taken modulo shards()).
  boost::asio::io_context& context(size_t shard = 0);

  /// The shard whose io thread calls this, or -1 when the caller is not one
  /// of this runner's io threads.
  int current_shard() const;

  /// The CPU shard `shard`'s thread is pinned to, or -1 when not pinned.
  int cpu(size_t shard) const;

  /// Whether the shards are pinned and every CPU this process could run on
  /// at start has one: only then may work that follows a shard be bound to
  /// its CPU without leaving CPUs idle.
  bool covers_cpus() const;

  /// A shard for new work that brings no hint of its own (round robin).
  size_t next_shard();

  /// Runs `fn` on an io thread (sharded: of the next shard).
  void post(std::function<void()> fn);

private:
  io_runner();
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Calls a function on an io thread whenever a descriptor is readable.
/// Owns the descriptor (pass a dup() to keep your own): it is deregistered
/// and closed on an io thread after stop(), so its number cannot be reused
/// while the io_context still knows it.
class fd_watch {
public:
  /// `on_readable` runs on an io thread while the descriptor is readable;
  /// it returns false to stop watching. It never runs after stop() returned
  /// on the io thread, but may be running while stop() is called elsewhere:
  /// capture only what outlives that (shared_ptr, actor handles).
  /// With a sharded runner, the watch runs on shard `shard` (modulo).
  fd_watch(std::shared_ptr<io_runner> runner, int fd, std::function<bool()> on_readable,
           size_t shard = 0);

  /// Stops (see stop()).
  ~fd_watch();

  fd_watch(const fd_watch&) = delete;
  fd_watch& operator=(const fd_watch&) = delete;

  /// Stops watching and closes the descriptor. Idempotent.
  void stop();

private:
  struct state;
  std::shared_ptr<state> state_;
};

} // namespace nimbus::transport
