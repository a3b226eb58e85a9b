#include "nimbus/actors/environment.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/actors/inline_unit.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/code_archive.hpp"
#include "nimbus/storage/json.hpp"
#include "nimbus/transport/http_server.hpp"
#include "nimbus/transport/runtime_api.hpp"
#include "nimbus/vmm/image_library.hpp"
#include "nimbus/vmm/jail.hpp"
#include "nimbus/vmm/runtime_catalog.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace nimbus {

namespace {

using clock = std::chrono::steady_clock;

int64_t micros_since(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t).count();
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Output of the runtime: the read end of the pipe its stdout and stderr go
/// to, and what was read from it. Pumped by an fd_watch on the io threads
/// while output arrives, and right when the runtime answers (on the io thread
/// that received the answer), so everything written before the answer is in
/// the buffer by the time the environment frames the invocation's log.
struct log_pipe {
  explicit log_pipe(int read_fd) : fd(read_fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  ~log_pipe() {
    if (fd >= 0)
      ::close(fd);
  }
  log_pipe(const log_pipe&) = delete;
  log_pipe& operator=(const log_pipe&) = delete;

  /// Reads whatever is in the pipe. False once the pipe is closed.
  bool pump() {
    std::lock_guard<std::mutex> guard{mutex};
    char chunk[16384];
    for (;;) {
      auto n = ::read(fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK;
      if (n == 0)
        return false;
      auto room = text.size() < limit ? limit - text.size() : 0;
      auto take = std::min(room, static_cast<size_t>(n));
      text.append(chunk, take);
      dropped += static_cast<size_t>(n) - take;
    }
  }

  /// Takes what the runtime wrote so far; with `fresh`, reads the pipe first
  /// (else only what the io thread has pumped already, without a syscall).
  std::string take(bool fresh = true) {
    if (fresh)
      pump();
    std::lock_guard<std::mutex> guard{mutex};
    std::string out = std::move(text);
    text.clear();
    if (dropped > 0) {
      out += "[nimbus: " + std::to_string(dropped) + " bytes of output dropped]\n";
      dropped = 0;
    }
    return out;
  }

  int fd = -1;
  std::mutex mutex;
  std::string text;
  /// Output beyond this is dropped until the next take (a chatty function
  /// must not exhaust the worker's memory).
  size_t limit = 1 << 20;
  size_t dropped = 0;
};

/// Everything one sandbox is made of. Built on a helper thread, then owned by
/// the actor, and torn down on a helper thread again (or in the actor's
/// destructor at node shutdown).
struct sandbox {
  std::shared_ptr<transport::io_runner> runner;
  /// The runner's shard that serves this sandbox (Runtime API and watches).
  size_t shard = 0;
  std::optional<vmm::cgroup> group;
  std::shared_ptr<vmm::jail_process> jail;
  std::shared_ptr<transport::runtime_api> api;
  std::unique_ptr<transport::http_server> server;
  std::shared_ptr<log_pipe> logs;
  std::unique_ptr<transport::fd_watch> log_watch;
  std::unique_ptr<transport::fd_watch> exit_watch;
  std::string root_dir;
  /// The pooled network namespace this sandbox uses (empty: its own).
  std::string netns;
  /// Gives back the code image this sandbox holds mounted (may be empty).
  std::function<void()> release_image;
  int64_t sandbox_us = 0;

  /// Ends the sandbox and releases everything; blocking, idempotent.
  void teardown() {
    if (exit_watch)
      exit_watch->stop();
    if (log_watch)
      log_watch->stop();
    // Kill first: the runtime's connections then close at once, and the
    // server stops without waiting out its grace period.
    if (jail)
      jail->kill();
    if (group)
      group->kill_all();
    if (server) {
      server->stop(std::chrono::milliseconds{100});
      server.reset();
    }
    jail.reset();
    if (group) {
      group->remove();
      group.reset();
    }
    exit_watch.reset();
    log_watch.reset();
    logs.reset();
    // After the jail: its mount namespace held binds of the image's mount.
    if (release_image) {
      auto release = std::move(release_image);
      release_image = nullptr;
      release();
    }
    if (!root_dir.empty()) {
      ::rmdir(root_dir.c_str());
      root_dir.clear();
    }
    if (!netns.empty()) {
      vmm::netns_pool::release(netns);
      netns.clear();
    }
    api.reset();
  }

  ~sandbox() {
    teardown();
  }
};

/// The environment of an image function: the image's ENV, then Lambda's
/// variables, then the function's own. The image keeps its PATH and
/// LD_LIBRARY_PATH unless the function sets them: its programs live there.
std::vector<std::string> image_environment(const std::vector<std::string>& image_env,
                                           const std::vector<std::string>& lambda_env,
                                           const std::map<std::string, std::string>& own) {
  std::vector<std::pair<std::string, std::string>> merged;
  auto set = [&](const std::string& entry, bool keep_existing) {
    auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0)
      return;
    auto key = entry.substr(0, eq);
    for (auto& [k, v] : merged)
      if (k == key) {
        if (!keep_existing)
          v = entry.substr(eq + 1);
        return;
      }
    merged.emplace_back(key, entry.substr(eq + 1));
  };
  for (const auto& e : image_env)
    set(e, false);
  for (const auto& e : lambda_env) {
    auto key = e.substr(0, e.find('='));
    bool image_path = key == "PATH" || key == "LD_LIBRARY_PATH";
    set(e, image_path && own.count(key) == 0);
  }
  std::vector<std::string> out;
  out.reserve(merged.size());
  for (auto& [k, v] : merged)
    out.push_back(k + "=" + v);
  return out;
}

std::string error_json(std::string_view type, std::string_view message) {
  storage::json_writer w;
  w.begin_object().key("errorMessage").value(message).key("errorType").value(type).end_object();
  return w.take();
}

std::string format_ms(int64_t us) {
  return storage::format_millis(us, 2);
}

std::string log_stream_name(const std::string& version, const std::string& id) {
  auto t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char date[16];
  std::strftime(date, sizeof date, "%Y/%m/%d", &tm);
  return std::string{date} + "/[" + version + "]" + id;
}

} // namespace

/// State of the ENVIRONMENT actor.
struct environment_state {
  static constexpr const char* name = "environment";

  enum class phase { created, initializing, idle, busy, stopping, dead };

  environment_host_config host;
  environment_spec spec;
  phase state = phase::created;

  /// The sandbox; null until built, and while a helper thread builds it.
  std::shared_ptr<sandbox> box;
  /// A helper thread is building the sandbox: do not touch `box`.
  bool building = false;

  clock::time_point init_start;
  int64_t sandbox_us = 0;
  int64_t init_us = 0;
  /// The io shard serving the Runtime API.
  int32_t shard = -1;
  bool first_invoke = true;
  caf::typed_response_promise<environment_ready> init_promise;

  /// Sequence number of the current invocation.
  uint64_t sequence = 0;
  /// At most one invocation timer and one idle timer are pending at a time:
  /// CAF 0.17 cannot cancel a delayed message, and one timer per invocation
  /// would pile up thousands under load. A timer that fires early (armed for
  /// an earlier invocation) re-arms itself for the rest.
  clock::time_point deadline;
  bool deadline_armed = false;
  clock::time_point idle_since;
  bool idle_armed = false;
  /// Interval of the idle check: freeze_after, doubled (up to
  /// idle_check_limit times) each time the check finds the sandbox in use.
  std::chrono::milliseconds idle_check{0};
  std::string request_id;
  clock::time_point invoke_start;
  caf::typed_response_promise<invocation_result> invoke_promise;
  caf::typed_response_promise<bool> destroy_promise;
  bool destroy_pending = false;
  /// True while the cgroup is frozen.
  bool frozen = false;

  ~environment_state() {
    // Node shutdown (or a crash of the actor): remove the sandbox now. A
    // helper thread that is still building keeps its own reference and tears
    // the sandbox down when it finds nobody to hand it to.
    if (box && !building)
      box->teardown();
  }

  /// Takes what the runtime wrote so far. `fresh = false` when the io thread
  /// has just pumped the pipe (the runtime answered: it wrote its output
  /// before), which saves a read() on the invocation path.
  std::string drain_logs(bool fresh = true) {
    return box && box->logs ? box->logs->take(fresh) : std::string{};
  }
};

namespace {

using self_ptr = environment_actor::stateful_pointer<environment_state>;

caf::error init_failure(std::string_view type, std::string_view message) {
  return make_error(ec::init_failed, error_json(type, message));
}

// Makes the sandbox (blocking; runs on a helper thread). On success the
// runtime is assembled and waits for go(); the actor lets it start.
caf::error build_sandbox(sandbox& sb, const environment_host_config& host,
                         const environment_spec& spec, std::string code_zip,
                         environment_actor me) {
  auto log = config::logger("actors");
  auto started = clock::now();
  bool image_function = spec.package_type == "Image";
  // Image functions bring their own runtime; Lambda's variables are those of
  // a provided runtime.
  auto runtime = vmm::find_runtime(image_function ? "provided.al2023" : spec.runtime);
  if (!runtime)
    return init_failure("Runtime.InvalidRuntime", "Unsupported runtime " + spec.runtime);
  auto code_dir = spec.code_dir;
  std::string image_root;
  if (!spec.code_image.empty() && host.images) {
    std::string root;
    if (auto problem = host.images->acquire(spec.account_id, spec.code_image, root);
        !problem.empty()) {
      log->error("environment {} cannot mount its code image: {}", spec.environment_id,
                 problem);
      return init_failure("Sandbox.Failed", "cannot load the function code");
    }
    sb.release_image = [images = host.images, account = spec.account_id,
                        image = spec.code_image] { images->release(account, image); };
    if (image_function)
      image_root = root;
    else
      code_dir = root;
  } else if (image_function) {
    return init_failure("Sandbox.Failed", "the function's image is not available");
  } else if (code_dir.empty()) {
    // Unpack into the shared cache: into a private directory first, then
    // rename, so a concurrent environment never sees a half-written tree.
    auto target = host.code_cache_dir + "/" + spec.code_sha256_hex;
    struct stat sb_stat {};
    if (::stat(target.c_str(), &sb_stat) != 0) {
      auto temp = host.code_cache_dir + "/.unpack-" + spec.environment_id;
      auto problem = storage::extract_zip(code_zip, temp, host.code_size_unzipped);
      if (!problem.empty()) {
        log->error("environment {} cannot unpack its code: {}", spec.environment_id, problem);
        return init_failure("Runtime.InvalidEntrypoint", "cannot unpack the function code");
      }
      if (::rename(temp.c_str(), target.c_str()) != 0) {
        // Another environment was faster: use its copy.
        std::error_code ec;
        std::filesystem::remove_all(temp, ec);
      }
    }
    code_zip.clear();
    code_dir = target;
  }
  std::string error;
  vmm::cgroup_limits limits;
  limits.memory_bytes = static_cast<uint64_t>(spec.memory_mb) << 20;
  limits.cpu_shares = vmm::cpu_shares_for_memory(limits.memory_bytes);
  // A helper started ahead of time has joined its cgroup already (the slow
  // part on cgroup v1); otherwise the cgroup is made now.
  std::optional<vmm::prepared_sandbox> prepared;
  if (host.sandboxes)
    prepared = host.sandboxes->take();
  if (prepared) {
    if (auto problem = prepared->group.set_limits(limits); !problem.empty()) {
      log->error("environment {} cannot limit its cgroup: {}", spec.environment_id, problem);
      ::close(prepared->output_fd);
      return init_failure("Sandbox.Failed", "cannot limit the cgroup");
    }
    sb.group.emplace(std::move(prepared->group));
  } else {
    sb.group = vmm::cgroup::create(*host.cgroups, spec.environment_id, limits, error);
    if (!sb.group) {
      log->error("environment {} cannot create its cgroup: {}", spec.environment_id, error);
      return init_failure("Sandbox.Failed", "cannot create the cgroup");
    }
  }
  auto t_cgroup = clock::now();
  sb.root_dir = host.jails_dir + "/" + spec.environment_id;
  if (::mkdir(sb.root_dir.c_str(), 0700) != 0) {
    log->error("environment {} cannot create {}: {}", spec.environment_id, sb.root_dir,
               std::strerror(errno));
    sb.root_dir.clear();
    return init_failure("Sandbox.Failed", "cannot create the sandbox root");
  }
  // One pipe for stdout and stderr keeps their order; a large pipe buffer
  // keeps a chatty runtime from blocking between reads.
  int out[2] = {-1, -1};
  if (prepared) {
    sb.logs = std::make_shared<log_pipe>(prepared->output_fd);
  } else {
    if (::pipe2(out, O_CLOEXEC) != 0)
      return init_failure("Sandbox.Failed", "cannot create the log pipe");
    ::fcntl(out[0], F_SETPIPE_SZ, 1 << 20);
    sb.logs = std::make_shared<log_pipe>(out[0]);
  }
  vmm::function_environment fn;
  fn.function_name = spec.function_name;
  fn.version = spec.version;
  fn.handler = spec.handler;
  fn.region = spec.region;
  fn.memory_mb = spec.memory_mb;
  fn.log_stream = log_stream_name(spec.version, spec.environment_id);
  fn.variables = spec.variables;
  vmm::jail_spec js;
  js.id = spec.environment_id;
  js.root_dir = sb.root_dir;
  if (image_function) {
    if (spec.image_argv.empty())
      return init_failure("Runtime.InvalidEntrypoint",
                          "The image has no ENTRYPOINT or CMD, and ImageConfig sets none");
    js.image_root = image_root;
    js.workdir = spec.image_workdir;
    js.argv = spec.image_argv;
    js.env = image_environment(spec.image_env, vmm::runtime_environment(*runtime, fn),
                               spec.variables);
  } else {
    js.code_dir = code_dir;
    js.runtime_dir = host.runtimes_dir;
    js.argv = vmm::runtime_command(*runtime);
    js.env = vmm::runtime_environment(*runtime, fn);
  }
  js.uid = host.uid;
  js.gid = host.gid;
  js.tmp_bytes = static_cast<uint64_t>(spec.ephemeral_mb) << 20;
  // A function with less than a CPU's worth of memory runs on the CPU of its
  // io shard (when every CPU has a pinned shard): the runtime and the thread
  // that wakes it per invocation then share a CPU and its caches. Larger
  // functions may use several CPUs, as on Lambda.
  if (spec.memory_mb < host.pin_below_mb && sb.runner->covers_cpus())
    js.cpu = sb.runner->cpu(sb.shard);
  if (host.netns) {
    sb.netns = host.netns->take();
    js.netns = sb.netns;
  }
  if (prepared) {
    sb.jail = std::move(prepared->jail);
    if (!sb.jail->configure(js, std::chrono::seconds{10}, error))
      sb.jail.reset();
  } else {
    js.cgroup_procs = sb.group->procs_files();
    sb.jail = vmm::jail_process::start(host.jail_helper, js, out[1], out[1],
                                       std::chrono::seconds{10}, error);
    ::close(out[1]);
  }
  if (!sb.jail) {
    log->error("environment {} sandbox failed: {}", spec.environment_id, error);
    // The one setup step that fails on the function's own settings (an
    // image's WORKDIR or ImageConfig.WorkingDirectory): AWS's name for it.
    if (error.find(": workdir ") != std::string::npos)
      return init_failure("Runtime.InvalidWorkingDirectory", error);
    return init_failure("Sandbox.Failed", error);
  }
  // The output pipe and the helper's status pipe are watched on the shared
  // io threads (each watch owns a duplicate of its descriptor).
  auto logs = sb.logs;
  int log_dup = ::fcntl(logs->fd, F_DUPFD_CLOEXEC, 0);
  int status_dup = ::fcntl(sb.jail->status_fd(), F_DUPFD_CLOEXEC, 0);
  if (log_dup < 0 || status_dup < 0) {
    if (log_dup >= 0)
      ::close(log_dup);
    if (status_dup >= 0)
      ::close(status_dup);
    return init_failure("Sandbox.Failed", "cannot watch the sandbox");
  }
  sb.log_watch = std::make_unique<transport::fd_watch>(
    sb.runner, log_dup, [logs] { return logs->pump(); }, sb.shard);
  auto jail = sb.jail;
  sb.exit_watch = std::make_unique<transport::fd_watch>(sb.runner, status_dup, [jail, me] {
    auto exit = jail->poll_exit();
    if (!exit)
      return true; // other news, or a partial line: keep watching
    caf::anon_send(me, sandbox_exit_atom::value, exit->exited,
                   static_cast<int32_t>(exit->code));
    return false;
  }, sb.shard);
  auto t_jail = clock::now();
  // The Runtime API listens inside the sandbox's network namespace.
  int listen_fd = vmm::listen_in_netns(sb.jail->init_pid(), "127.0.0.1", 9001, error);
  if (listen_fd < 0) {
    log->error("environment {} cannot listen in its namespace: {}", spec.environment_id, error);
    return init_failure("Sandbox.Failed", "cannot start the Runtime API");
  }
  // Answers and errors pump the output pipe first, on the io thread that
  // received them: the runtime wrote its output before it answered.
  transport::runtime_api_callbacks callbacks;
  callbacks.on_ready = [me] { inline_unit::send(me, rt_ready_atom::value); };
  callbacks.on_response = [me, logs](const std::string& id, std::string body) {
    logs->pump();
    inline_unit::send(me, rt_response_atom::value, id, std::move(body));
  };
  callbacks.on_error = [me, logs](const std::string& id, std::string type, std::string body) {
    logs->pump();
    inline_unit::send(me, rt_error_atom::value, id, std::move(type), std::move(body));
  };
  callbacks.on_init_error = [me, logs](std::string type, std::string body) {
    logs->pump();
    inline_unit::send(me, rt_init_error_atom::value, std::move(type), std::move(body));
  };
  sb.api = std::make_shared<transport::runtime_api>(std::move(callbacks));
  transport::http_server_options options;
  options.listen_fd = listen_fd;
  options.runner = sb.runner;
  options.shard = static_cast<int>(sb.shard);
  options.max_pipeline = 2;
  options.request_ids = false;
  // /next may wait for minutes between invocations.
  options.idle_timeout = std::chrono::hours{24};
  options.body_deadline = std::chrono::seconds{60};
  try {
    sb.server = std::make_unique<transport::http_server>(
      options, transport::runtime_api::hooks(sb.api));
  } catch (const std::exception& e) {
    ::close(listen_fd);
    return init_failure("Sandbox.Failed", std::string{"Runtime API: "} + e.what());
  }
  sb.sandbox_us = micros_since(started);
  auto us = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
  };
  log->debug("environment {} sandbox phases: cgroup {} us, jail {} us, runtime api {} us",
             spec.environment_id, us(started, t_cgroup), us(t_cgroup, t_jail),
             us(t_jail, clock::now()));
  return {};
}

// Hands the sandbox to a helper thread that removes it, then tells the actor
// (which may be gone by then: the message is dropped).
void retire_sandbox(self_ptr self) {
  auto& st = self->state;
  if (!st.box || st.building)
    return;
  auto me = caf::actor_cast<environment_actor>(self);
  st.host.sandbox_threads->post([box = std::move(st.box), me]() mutable {
    box->teardown();
    box.reset();
    caf::anon_send(me, stopped_atom::value);
  });
}

// Arms the idle timer unless one is pending.
void arm_idle(self_ptr self) {
  auto& st = self->state;
  st.idle_since = clock::now();
  if (!st.idle_armed) {
    st.idle_armed = true;
    if (st.idle_check.count() == 0)
      st.idle_check = st.host.freeze_after;
    self->delayed_send(self, st.idle_check, idle_atom::value, uint64_t{0});
  }
}

// `answered`: the runtime answered the invocation (its output pipe was just
// pumped on the io thread that received the answer).
void finish_invocation(self_ptr self, invocation_result result, bool answered = false) {
  auto& st = self->state;
  result.request_id = st.request_id;
  result.duration_us = micros_since(st.invoke_start);
  result.max_memory_bytes =
    st.box && !st.building && st.box->group ? st.box->group->peak_memory() : 0;
  if (st.first_invoke) {
    result.init_duration_us = st.init_us;
    st.first_invoke = false;
  }
  auto billed = (result.duration_us + 999) / 1000;
  // Built in one buffer: this runs for every invocation.
  auto output = st.drain_logs(!answered);
  std::string log;
  log.reserve(256 + output.size());
  auto number = [&log](int64_t v) {
    char digits[24];
    log.append(digits, std::to_chars(digits, digits + sizeof digits, v).ptr);
  };
  log += "START RequestId: ";
  log += st.request_id;
  log += " Version: ";
  log += st.spec.version;
  log += '\n';
  log += output;
  if (result.outcome == "timeout") {
    log += "Task timed out after ";
    number(st.spec.timeout_s);
    log += ".00 seconds\n";
  }
  log += "END RequestId: ";
  log += st.request_id;
  log += "\nREPORT RequestId: ";
  log += st.request_id;
  log += "\tDuration: ";
  log += format_ms(result.duration_us);
  log += " ms\tBilled Duration: ";
  number(billed);
  log += " ms\tMemory Size: ";
  number(st.spec.memory_mb);
  log += " MB\tMax Memory Used: ";
  number(static_cast<int64_t>(result.max_memory_bytes >> 20));
  log += " MB";
  if (result.init_duration_us > 0) {
    log += "\tInit Duration: ";
    log += format_ms(result.init_duration_us);
    log += " ms";
  }
  log += '\n';
  result.log = std::move(log);
  st.request_id.clear();
  ++st.sequence;
  if (result.environment_lost) {
    st.state = environment_state::phase::dead;
  } else {
    st.state = environment_state::phase::idle;
    // Idle environments use no CPU until the next invocation; freezing waits
    // a moment so that back-to-back invocations skip freeze and thaw.
    arm_idle(self);
  }
  st.invoke_promise.deliver(std::move(result));
}

// The sandbox is gone for good: kill whatever remains and mark it dead (the
// owner destroys the actor, which removes the rest).
void lose_sandbox(self_ptr self) {
  auto& st = self->state;
  if (st.box && !st.building) {
    if (st.box->jail)
      st.box->jail->kill();
    if (st.box->group) {
      st.box->group->thaw();
      st.box->group->kill_all();
    }
  }
  st.frozen = false;
  st.state = environment_state::phase::dead;
}

} // namespace

environment_actor::behavior_type environment(self_ptr self, environment_host_config host,
                                             environment_spec spec) {
  self->state.host = std::move(host);
  self->state.spec = std::move(spec);
  using phase = environment_state::phase;
  return {
    [=](init_atom) -> caf::result<environment_ready> {
      auto& st = self->state;
      if (st.state != phase::created)
        return make_error(ec::environment_unavailable, "environment already initialized");
      st.state = phase::initializing;
      st.box = std::make_shared<sandbox>();
      st.box->runner = st.host.runtime_io;
      // The shard of the request that asked for this environment, so its
      // invocations, arriving there too, stay on one io thread.
      auto& runner = *st.box->runner;
      st.box->shard = st.spec.shard >= 0 ? static_cast<size_t>(st.spec.shard) % runner.shards()
                                         : runner.next_shard();
      st.shard = static_cast<int32_t>(st.box->shard);
      st.building = true;
      // Making a sandbox blocks for milliseconds (fork, mounts, cgroup
      // files): a sandbox thread does it, so the scheduler keeps serving
      // warm invocations meanwhile.
      st.host.sandbox_threads->post([box = st.box, host = st.host, spec = st.spec,
                                     zip = std::move(st.spec.code_zip),
                                     me = caf::actor_cast<environment_actor>(self)]() mutable {
        auto err = build_sandbox(*box, host, spec, std::move(zip), me);
        box.reset();
        caf::anon_send(me, built_atom::value, std::move(err));
      });
      st.init_promise = self->make_response_promise<environment_ready>();
      self->delayed_send(self, st.host.init_timeout, timeout_atom::value, uint64_t{0});
      return st.init_promise;
    },
    [=](built_atom, caf::error& err) {
      auto& st = self->state;
      st.building = false;
      if (st.state != phase::initializing) {
        // Timed out or destroyed while being made.
        retire_sandbox(self);
        if (st.destroy_pending) {
          st.destroy_pending = false;
          st.destroy_promise.deliver(true);
          self->quit();
        }
        return;
      }
      if (!err) {
        st.sandbox_us = st.box->sandbox_us;
        st.init_start = clock::now();
        if (!st.box->jail->go())
          err = init_failure("Sandbox.Failed", "the sandbox did not start");
      }
      if (err) {
        retire_sandbox(self);
        st.state = phase::dead;
        st.init_promise.deliver(std::move(err));
      }
    },
    [=](rt_ready_atom) {
      auto& st = self->state;
      if (st.state != phase::initializing)
        return;
      st.init_us = micros_since(st.init_start);
      st.state = phase::idle;
      arm_idle(self);
      st.init_promise.deliver(
        environment_ready{st.spec.environment_id, st.sandbox_us, st.init_us, {}, st.shard});
    },
    [=](rt_init_error_atom, std::string& type, std::string& body) {
      auto& st = self->state;
      if (st.state != phase::initializing)
        return;
      config::logger("actors")->info("environment {} failed INIT: {}", st.spec.environment_id,
                                     type);
      lose_sandbox(self);
      st.init_promise.deliver(make_error(ec::init_failed, std::move(body)));
    },
    [=](invoke_atom, invocation_request& req) -> caf::result<invocation_result> {
      auto& st = self->state;
      if (st.state != phase::idle)
        return make_error(ec::environment_unavailable, "environment is not idle");
      st.state = phase::busy;
      st.request_id = req.request_id;
      st.invoke_promise = self->make_response_promise<invocation_result>();
      st.invoke_start = clock::now();
      // Output produced while idle (there should be none) is not this
      // invocation's; init output goes with the first invocation. What the
      // io thread pumped is enough: a read() here would cost every warm
      // invocation a syscall for output that hardly ever exists.
      if (!st.first_invoke)
        st.drain_logs(false);
      if (st.frozen) {
        st.box->group->thaw();
        st.frozen = false;
      }
      transport::runtime_invocation inv;
      inv.request_id = req.request_id;
      inv.payload = std::move(req.payload);
      inv.deadline_ms = unix_ms_now() + int64_t{st.spec.timeout_s} * 1000;
      inv.invoked_function_arn = st.spec.function_arn;
      inv.trace_id = req.trace_id;
      inv.client_context = std::move(req.client_context);
      st.box->api->submit(std::move(inv));
      st.deadline = clock::now() + std::chrono::seconds{st.spec.timeout_s};
      if (!st.deadline_armed) {
        st.deadline_armed = true;
        self->delayed_send(self, std::chrono::seconds{st.spec.timeout_s}, timeout_atom::value,
                           uint64_t{1});
      }
      return st.invoke_promise;
    },
    [=](rt_response_atom, const std::string& id, std::string& body) {
      auto& st = self->state;
      if (st.state != phase::busy || id != st.request_id)
        return;
      invocation_result r;
      r.outcome = "success";
      r.payload = std::move(body);
      finish_invocation(self, std::move(r), true);
    },
    [=](rt_error_atom, const std::string& id, std::string& type, std::string& body) {
      auto& st = self->state;
      if (st.state != phase::busy || id != st.request_id)
        return;
      invocation_result r;
      r.outcome = "function_error";
      r.error_type = std::move(type);
      r.payload = std::move(body);
      finish_invocation(self, std::move(r), true);
    },
    [=](timeout_atom, uint64_t which) {
      auto& st = self->state;
      if (which == ~uint64_t{0}) {
        // Shutdown grace is over: kill; sandbox_exit completes the destroy.
        if (st.state == phase::stopping && st.box) {
          if (st.box->jail)
            st.box->jail->kill();
          if (st.box->group)
            st.box->group->kill_all();
        }
        return;
      }
      if (which == 0 && st.state == phase::initializing) {
        config::logger("actors")->info("environment {} INIT timed out", st.spec.environment_id);
        lose_sandbox(self);
        auto secs = std::chrono::duration_cast<std::chrono::seconds>(st.host.init_timeout).count();
        st.init_promise.deliver(init_failure(
          "Runtime.InitTimeout", "Init timed out after " + std::to_string(secs) + ".00 seconds"));
        return;
      }
      if (which == 1)
        st.deadline_armed = false;
      if (which == 1 && st.state == phase::busy && clock::now() < st.deadline) {
        // Armed for an earlier invocation: wait for the rest of this one's.
        st.deadline_armed = true;
        self->delayed_send(self, st.deadline - clock::now(), timeout_atom::value, uint64_t{1});
        return;
      }
      if (which == 1 && st.state == phase::busy) {
        // The whole sandbox dies: nothing the function started may outlive
        // its invocation.
        lose_sandbox(self);
        invocation_result r;
        r.outcome = "timeout";
        r.error_type = "Sandbox.Timedout";
        r.payload = error_json("Sandbox.Timedout", "Task timed out after "
                                                     + std::to_string(st.spec.timeout_s)
                                                     + ".00 seconds");
        r.environment_lost = true;
        finish_invocation(self, std::move(r));
      }
    },
    [=](sandbox_exit_atom, bool exited, int32_t code) {
      auto& st = self->state;
      auto how = exited ? "exit status " + std::to_string(code)
                        : "signal " + std::to_string(code);
      bool oom = st.box && !st.building && st.box->group && st.box->group->oom_kills() > 0;
      if (st.state == phase::initializing) {
        lose_sandbox(self);
        st.init_promise.deliver(
          oom ? init_failure("Runtime.OutOfMemory", "Runtime exited: out of memory")
          // nimbus-jail exits 127 when the command can not be started: for an
          // image function that is its ENTRYPOINT/CMD (or ImageConfig).
          : exited && code == 127 && st.spec.package_type == "Image"
            ? init_failure("Runtime.InvalidEntrypoint",
                           "Runtime exited with error: exit status 127 (the image's command "
                           "could not be started; see the function log)")
            : init_failure("Runtime.ExitError", "Runtime exited with error: " + how));
      } else if (st.state == phase::busy) {
        lose_sandbox(self);
        invocation_result r;
        r.outcome = oom ? "out_of_memory" : "runtime_exit";
        r.error_type = oom ? "Runtime.OutOfMemory" : "Runtime.ExitError";
        r.payload = error_json(r.error_type, oom ? "Runtime exited with error: signal: killed "
                                                   "(out of memory)"
                                                 : "Runtime exited with error: " + how);
        r.environment_lost = true;
        finish_invocation(self, std::move(r));
      } else if (st.state == phase::stopping) {
        retire_sandbox(self);
        st.state = phase::dead;
      } else {
        lose_sandbox(self);
      }
    },
    [=](stopped_atom) {
      auto& st = self->state;
      if (st.destroy_pending) {
        st.destroy_pending = false;
        st.destroy_promise.deliver(true);
        self->quit();
      }
    },
    [=](idle_atom, uint64_t) {
      auto& st = self->state;
      st.idle_armed = false;
      // In steady use: check less often (the next arm_idle, or the re-arm
      // below, waits longer), so that busy environments do not keep CAF's
      // clock thread busy.
      auto back_off = [&] {
        st.idle_check = std::min(st.idle_check * 2,
                                 st.host.freeze_after * environment_host_config::idle_check_limit);
      };
      if (st.state == phase::busy) {
        back_off(); // finish_invocation arms the check again
        return;
      }
      if (st.state != phase::idle || st.frozen || !st.box || !st.box->group)
        return;
      auto idle_for = clock::now() - st.idle_since;
      if (idle_for < st.host.freeze_after) {
        // Used again since the check was armed (the new interval is at
        // least the freeze_after - idle_for that is left).
        back_off();
        st.idle_armed = true;
        self->delayed_send(self, st.idle_check, idle_atom::value, uint64_t{0});
        return;
      }
      st.frozen = st.box->group->freeze();
      st.idle_check = st.host.freeze_after;
    },
    [=](destroy_atom) -> caf::result<bool> {
      auto& st = self->state;
      if (st.state == phase::stopping || st.destroy_pending)
        return make_error(ec::environment_unavailable, "already stopping");
      if (st.init_promise.pending())
        st.init_promise.deliver(
          make_error(ec::environment_unavailable, "the environment was destroyed during INIT"));
      if (st.building) {
        // The helper thread is still making the sandbox: finish when it
        // reports (the built handler removes it).
        st.state = phase::dead;
        st.destroy_pending = true;
        st.destroy_promise = self->make_response_promise<bool>();
        return st.destroy_promise;
      }
      if (!st.box || !st.box->jail || st.state == phase::dead || st.state == phase::created) {
        retire_sandbox(self);
        st.state = phase::dead;
        self->quit();
        return true;
      }
      // Graceful: SIGTERM to the runtime, SIGKILL after the grace period
      // (the sandbox_exit handler removes the sandbox, stopped answers).
      st.state = phase::stopping;
      if (st.box->group)
        st.box->group->thaw();
      st.frozen = false;
      st.box->jail->terminate();
      st.destroy_pending = true;
      st.destroy_promise = self->make_response_promise<bool>();
      self->delayed_send(self, st.host.shutdown_grace, timeout_atom::value, ~uint64_t{0});
      return st.destroy_promise;
    },
  };
}

environment_actor spawn_environment(caf::actor_system& sys, environment_host_config host,
                                    environment_spec spec) {
  if (!host.runtime_io)
    host.runtime_io = transport::io_runner::start(1);
  if (!host.sandbox_threads)
    host.sandbox_threads = transport::io_runner::start(2);
  return sys.spawn(environment, std::move(host), std::move(spec));
}

} // namespace nimbus
