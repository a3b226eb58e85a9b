#include "nimbus/transport/io_runner.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace nimbus::transport {

namespace net = boost::asio;

namespace {

// Which runner and shard the calling thread serves (set once per io thread).
thread_local const void* current_runner = nullptr;
thread_local int current_shard_index = -1;

// The CPUs this process may run on, in ascending order.
std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0)
    return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set))
      cpus.push_back(cpu);
  return cpus;
}

} // namespace

struct io_runner::impl {
  struct shard {
    explicit shard(int concurrency) : ioc(concurrency) {}
    net::io_context ioc;
    std::optional<net::executor_work_guard<net::io_context::executor_type>> work{
      net::make_work_guard(ioc)};
    std::vector<std::thread> threads;
    /// Written once more by the shard's thread if pinning fails.
    std::atomic<int> cpu{-1};
  };

  void run(size_t index, std::optional<int> nice) {
    current_runner = this;
    current_shard_index = static_cast<int>(index);
    {
      // On Linux the nice value is per thread.
      int error = 0;
      if (nice && ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), *nice) != 0)
        error = errno;
      std::lock_guard lock{start_mutex};
      if (error != 0 && nice_error == 0)
        nice_error = error;
      ++started;
      start_cv.notify_all();
    }
    auto& s = *shards[index];
    if (int cpu = s.cpu.load(); cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      // Best effort: a CPU taken away meanwhile leaves the thread unpinned.
      if (::sched_setaffinity(0, sizeof set, &set) != 0)
        s.cpu = -1;
    }
    for (;;) {
      try {
        s.ioc.run();
        return;
      } catch (...) {
        // Handlers catch their own errors; a stray exception must not end
        // the thread (and with it every server on this shard).
      }
    }
  }

  std::vector<std::unique_ptr<shard>> shards;
  std::atomic<size_t> next{0};
  bool covers_cpus = false;
  size_t threads_per_context = 1;
  // Threads that have set themselves up; start() and start_sharded() wait
  // for all of them, so nice_error is final when they return.
  std::mutex start_mutex;
  std::condition_variable start_cv;
  size_t started = 0;
  int nice_error = 0;

  void wait_started(size_t threads) {
    std::unique_lock lock{start_mutex};
    start_cv.wait(lock, [&] { return started == threads; });
  }
};

io_runner::io_runner() : impl_(std::make_unique<impl>()) {
}

std::shared_ptr<io_runner> io_runner::start(size_t threads, std::optional<int> nice) {
  // With one thread, asio may keep what a handler posts on that thread;
  // with more, a thread with more work than it can do wakes another.
  if (threads == 0)
    threads = allowed_cpus().size();
  threads = std::max<size_t>(1, threads);
  std::shared_ptr<io_runner> runner{new io_runner()};
  auto* d = runner->impl_.get();
  d->shards.push_back(std::make_unique<impl::shard>(static_cast<int>(threads)));
  d->threads_per_context = threads;
  for (size_t i = 0; i < threads; ++i)
    d->shards[0]->threads.emplace_back([d, nice] { d->run(0, nice); });
  d->wait_started(threads);
  return runner;
}

std::shared_ptr<io_runner> io_runner::start_sharded(size_t shards, bool pin,
                                                    std::optional<int> nice) {
  auto cpus = allowed_cpus();
  if (shards == 0)
    shards = cpus.size();
  shards = std::max<size_t>(1, shards);
  std::shared_ptr<io_runner> runner{new io_runner()};
  auto* d = runner->impl_.get();
  if (!pin)
    cpus.clear();
  d->covers_cpus = !cpus.empty() && shards >= cpus.size();
  for (size_t i = 0; i < shards; ++i) {
    d->shards.push_back(std::make_unique<impl::shard>(1));
    if (!cpus.empty())
      d->shards[i]->cpu = cpus[i % cpus.size()];
  }
  // All shards exist before any thread looks at them.
  for (size_t i = 0; i < shards; ++i)
    d->shards[i]->threads.emplace_back([d, i, nice] { d->run(i, nice); });
  d->wait_started(shards);
  return runner;
}

io_runner::~io_runner() {
  for (auto& s : impl_->shards) {
    s->work.reset();
    s->ioc.stop();
  }
  auto me = std::this_thread::get_id();
  bool detached = false;
  for (auto& s : impl_->shards)
    for (auto& t : s->threads) {
      if (!t.joinable())
        continue;
      if (t.get_id() == me) {
        // Dropped from inside a handler: this thread returns from run()
        // once the handler ends, and must not join itself.
        t.detach();
        detached = true;
        continue;
      }
      t.join();
    }
  // The detached thread still uses its shard: its impl stays alive.
  if (detached)
    impl_.release();
}

size_t io_runner::shards() const {
  return impl_->shards.size();
}

net::io_context& io_runner::context(size_t shard) {
  return impl_->shards[shard % impl_->shards.size()]->ioc;
}

int io_runner::current_shard() const {
  return current_runner == impl_.get() ? current_shard_index : -1;
}

size_t io_runner::threads_per_context() const {
  return impl_->threads_per_context;
}

int io_runner::nice_error() const {
  return impl_->nice_error;
}

int io_runner::cpu(size_t shard) const {
  return impl_->shards[shard % impl_->shards.size()]->cpu;
}

bool io_runner::covers_cpus() const {
  return impl_->covers_cpus;
}

size_t io_runner::next_shard() {
  return impl_->next.fetch_add(1, std::memory_order_relaxed) % impl_->shards.size();
}

void io_runner::post(std::function<void()> fn) {
  net::post(context(next_shard()), std::move(fn));
}

// -- fd_watch -----------------------------------------------------------------

struct fd_watch::state : std::enable_shared_from_this<fd_watch::state> {
  state(std::shared_ptr<io_runner> r, int fd, std::function<bool()> cb, size_t shard)
      : runner(std::move(r)),
        strand(net::make_strand(runner->context(shard))),
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

fd_watch::fd_watch(std::shared_ptr<io_runner> runner, int fd, std::function<bool()> on_readable,
                   size_t shard)
    : state_(std::make_shared<state>(std::move(runner), fd, std::move(on_readable), shard)) {
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
