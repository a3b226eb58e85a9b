#include "nimbus/transport/io_runner.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>
#include <vector>

namespace nimbus::transport {

namespace net = boost::asio;

struct io_runner::impl {
  explicit impl(int concurrency) : ioc(concurrency) {}
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work{
    net::make_work_guard(ioc)};
  std::vector<std::thread> threads;
};

io_runner::io_runner(int concurrency) : impl_(std::make_unique<impl>(concurrency)) {
}

std::shared_ptr<io_runner> io_runner::start(size_t threads) {
  // With one thread, asio may keep what a handler posts on that thread;
  // with more, a thread with more work than it can do wakes another.
  std::shared_ptr<io_runner> runner{new io_runner(static_cast<int>(std::max<size_t>(1, threads)))};
  auto* d = runner->impl_.get();
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i)
    d->threads.emplace_back([d] {
      for (;;) {
        try {
          d->ioc.run();
          return;
        } catch (...) {
          // Handlers catch their own errors; a stray exception must not end
          // the thread (and with it every server on this runner).
        }
      }
    });
  return runner;
}

io_runner::~io_runner() {
  impl_->work.reset();
  impl_->ioc.stop();
  auto me = std::this_thread::get_id();
  for (auto& t : impl_->threads) {
    if (!t.joinable())
      continue;
    if (t.get_id() == me) {
      // Dropped from inside a handler: this thread returns from run() once
      // the handler ends, and must not join itself. Its impl stays alive.
      t.detach();
      impl_.release();
      return;
    }
    t.join();
  }
}

net::io_context& io_runner::context() {
  return impl_->ioc;
}

void io_runner::post(std::function<void()> fn) {
  net::post(impl_->ioc, std::move(fn));
}

// -- fd_watch -----------------------------------------------------------------

struct fd_watch::state : std::enable_shared_from_this<fd_watch::state> {
  state(std::shared_ptr<io_runner> r, int fd, std::function<bool()> cb)
      : runner(std::move(r)),
        strand(net::make_strand(runner->context())),
        descriptor(strand, fd),
        on_readable(std::move(cb)) {
  }

  void arm() {
    descriptor.async_wait(net::posix::stream_descriptor::wait_read,
                          [self = shared_from_this()](const boost::system::error_code& ec) {
                            if (ec || self->stopped.load())
                              return;
                            bool again = false;
                            try {
                              again = self->on_readable();
                            } catch (...) {
                            }
                            if (again && !self->stopped.load())
                              self->arm();
                            else
                              self->close();
                          });
  }

  void close() {
    boost::system::error_code ignored;
    descriptor.close(ignored);
  }

  std::shared_ptr<io_runner> runner;
  net::strand<net::io_context::executor_type> strand;
  net::posix::stream_descriptor descriptor;
  std::function<bool()> on_readable;
  std::atomic<bool> stopped{false};
};

fd_watch::fd_watch(std::shared_ptr<io_runner> runner, int fd, std::function<bool()> on_readable)
    : state_(std::make_shared<state>(std::move(runner), fd, std::move(on_readable))) {
  net::post(state_->strand, [s = state_] {
    if (!s->stopped.load())
      s->arm();
    else
      s->close();
  });
}

fd_watch::~fd_watch() {
  stop();
}

void fd_watch::stop() {
  if (!state_ || state_->stopped.exchange(true))
    return;
  net::post(state_->strand, [s = state_] { s->close(); });
}

} // namespace nimbus::transport
