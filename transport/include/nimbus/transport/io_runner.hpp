#pragma once

/// A pool of io threads (one Boost.Asio io_context) that many servers and
/// descriptor watches share. The worker runs the Runtime API of all its
/// execution environments on one io_runner instead of giving each
/// environment threads of its own: with dozens of environments busy at once
/// the threads would mostly wake each other up.

#include <functional>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace nimbus::transport {

/// Threads running one io_context. Keep it in a shared_ptr: servers and
/// watches that use it hold a reference, so it outlives them.
class io_runner {
public:
  /// Starts `threads` (at least 1) io threads.
  static std::shared_ptr<io_runner> start(size_t threads);

  /// Stops the io_context and joins the threads (detaches instead when the
  /// last reference is dropped on one of them).
  ~io_runner();

  io_runner(const io_runner&) = delete;
  io_runner& operator=(const io_runner&) = delete;

  boost::asio::io_context& context();

  /// Runs `fn` on an io thread.
  void post(std::function<void()> fn);

private:
  explicit io_runner(int concurrency);
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
  fd_watch(std::shared_ptr<io_runner> runner, int fd, std::function<bool()> on_readable);

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
