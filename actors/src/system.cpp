#include "nimbus/actors/system.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/actors/frontend.hpp"
#include "nimbus/actors/inline_unit.hpp"
#include "nimbus/actors/interfaces.hpp"
#include "nimbus/actors/assignment.hpp"
#include "nimbus/actors/counter.hpp"
#include "nimbus/actors/placement.hpp"
#include "nimbus/actors/queue_manager.hpp"
#include "nimbus/actors/registry.hpp"
#include "nimbus/actors/worker.hpp"
#include "nimbus/storage/chunk_cache.hpp"
#include "nimbus/storage/code_store.hpp"
#include "nimbus/storage/function_logs.hpp"
#include "nimbus/vmm/image_library.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/durable_file.hpp"
#include "nimbus/transport/http_server.hpp"
#include "nimbus/transport/io_runner.hpp"
#include "nimbus/transport/lambda_api.hpp"
#include "nimbus/transport/lambda_codec.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <cstring>

namespace nimbus {

namespace {

/// Invokes with payloads up to this size run on the io thread that read them
/// (hashing and parsing a bigger one there would hold up that thread's other
/// connections).
constexpr size_t inline_invoke_bytes = 256 * 1024;

/// Whether a request (or its head) is an Invoke: POST .../invocations.
bool is_invoke(const transport::http_request& req) {
  auto path = req.path();
  constexpr std::string_view suffix = "/invocations";
  return req.method == "POST" && path.size() > suffix.size()
         && path.substr(path.size() - suffix.size()) == suffix;
}

/// CAF settings for our 2-core machines (see shared/docs/CAF-0.17.md §6):
/// two scheduler threads that park at once when idle.
struct actor_system_settings : caf::actor_system_config {
  actor_system_settings() {
    set("scheduler.max-threads", 2);
    set("work-stealing.moderate-poll-attempts", 0);
    set("logger.verbosity", caf::atom("quiet"));
    add_message_types<caf::id_block::nimbus>();
  }
};

// The directory of the running executable (nimbus-jail is installed beside it).
std::string executable_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string{"."} : exe.parent_path().string();
}

// 80% of the machine's memory, in MB.
uint64_t default_memory_mb() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0)
    return 1024;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / (1024 * 1024) * 8 / 10;
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

// Moves zips that an earlier release kept in the function store into the
// code store (flattened and chunked), then drops the old copies.
std::string migrate_zips(storage::function_store& store, storage::code_store& code,
                         std::vector<storage::function_record>& records) {
  auto log = config::logger("actors");
  std::vector<std::string> moved;
  for (auto& r : records) {
    if (r.package_type == "Image" || !r.code_image.empty() || r.code_sha256_hex.empty())
      continue;
    std::string zip;
    if (auto s = store.get_code(r.code_sha256_hex, zip); !s.ok())
      return s.error;
    storage::stored_zip stored;
    if (auto problem = code.store_zip(r.account_id, zip, stored); !problem.empty())
      return problem;
    r.code_image = stored.image;
    if (auto s = store.put_function(r); !s.ok())
      return s.error;
    moved.push_back(r.code_sha256_hex);
  }
  for (const auto& hex : moved)
    store.remove_code(hex);
  if (!moved.empty())
    log->info("moved {} functions' code into the code store", moved.size());
  return {};
}

// Prometheus text for code storage and the worker's chunk cache.
std::string render_code_metrics(const storage::code_store& code,
                                const storage::chunk_cache* cache) {
  auto c = code.stats();
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t value) {
    out += std::string{"# HELP "} + name + " " + help + "\n# TYPE " + name + " counter\n" + name
           + " " + std::to_string(value) + "\n";
  };
  counter("nimbus_code_zips_stored_total", "Zips flattened and stored as chunked images.",
          c.zips_stored);
  counter("nimbus_code_zips_deduplicated_total",
          "Zips whose image the account had already (nothing stored).", c.zips_deduplicated);
  counter("nimbus_code_images_pushed_total", "Container images pushed and stored.",
          c.images_pushed);
  counter("nimbus_code_chunks_written_total", "Sealed chunks written to the chunk store.",
          c.chunks_written);
  counter("nimbus_code_chunks_collected_total", "Unreferenced chunks deleted by GC.",
          c.chunks_collected);
  if (cache) {
    auto s = cache->stats();
    out += "# HELP nimbus_chunk_cache_reads_total Chunk reads of the worker, by the tier that "
           "answered.\n# TYPE nimbus_chunk_cache_reads_total counter\n";
    out += "nimbus_chunk_cache_reads_total{tier=\"memory\"} " + std::to_string(s.memory_hits)
           + "\n";
    out += "nimbus_chunk_cache_reads_total{tier=\"disk\"} " + std::to_string(s.disk_hits) + "\n";
    out += "nimbus_chunk_cache_reads_total{tier=\"store\"} " + std::to_string(s.store_reads)
           + "\n";
    counter("nimbus_chunk_cache_fetched_bytes_total",
            "Sealed bytes the worker fetched from the chunk store.", s.fetched_bytes);
  }
  return out;
}

} // namespace

struct node::impl {
  // Declaration order is destruction order in reverse: the HTTP server (and
  // its io_context) must outlive the actor system, because actors may still
  // hold response callbacks bound to it while the system shuts down.
  /// The Lambda API's io threads (also the Runtime API's, unless [worker]
  /// runtime_io_threads asks for threads of its own); outlives the server.
  std::shared_ptr<transport::io_runner> api_io;
  std::unique_ptr<transport::http_server> server;
  actor_system_settings caf_config;
  std::unique_ptr<caf::actor_system> system;
  registry_actor registry;
  counter_actor counter;
  placement_actor placement;
  worker_actor worker;
  assignment_actor assignment;
  queue_manager_actor queues;
  /// One FRONTEND per io shard of api_io: requests go to the one of the
  /// shard that received them.
  std::vector<frontend_actor> frontends;
  /// Code storage; released after the actors (environments hold images).
  std::shared_ptr<storage::code_store> code;
  std::shared_ptr<storage::chunk_cache> chunk_cache;
  std::shared_ptr<vmm::image_library> images;
  int lock_fd = -1;
  /// Held on the node's cgroup parent: one nimbusd per node name and host.
  int name_lock_fd = -1;
  /// The node's cgroups (null when it runs no functions).
  std::shared_ptr<vmm::cgroup_layout> cgroups;
  bool stopped = false;
  /// Set once stop() begins: core actors ending after this are expected.
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);

  ~impl() {
    if (name_lock_fd >= 0)
      ::close(name_lock_fd);
    if (lock_fd >= 0)
      ::close(lock_fd);
  }
};

node::node() : impl_(std::make_unique<impl>()) {
}

node::~node() {
  stop();
}

uint16_t node::api_port() const {
  return impl_->server ? impl_->server->port() : 0;
}

void node::stop() {
  auto& d = *impl_;
  if (d.stopped)
    return;
  d.stopped = true;
  d.stopping->store(true);
  auto log = config::logger("actors");
  if (d.server)
    d.server->stop();
  if (d.system) {
    for (auto& f : d.frontends)
      caf::anon_send_exit(f, caf::exit_reason::user_shutdown);
    if (d.queues)
      caf::anon_send_exit(d.queues, caf::exit_reason::user_shutdown);
    if (d.assignment)
      caf::anon_send_exit(d.assignment, caf::exit_reason::user_shutdown);
    if (d.worker)
      caf::anon_send_exit(d.worker, caf::exit_reason::user_shutdown);
    if (d.placement)
      caf::anon_send_exit(d.placement, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(d.counter, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(d.registry, caf::exit_reason::user_shutdown);
    d.frontends.clear();
    d.assignment = nullptr;
    d.queues = nullptr;
    d.worker = nullptr;
    d.placement = nullptr;
    d.counter = nullptr;
    d.registry = nullptr;
    d.system.reset(); // waits for all actors
  }
  // Environments are gone: unmount the images and stop the FUSE server.
  d.images.reset();
  d.chunk_cache.reset();
  d.code.reset();
  // Groups of an earlier run that were still emptying when this one started
  // (a node killed with SIGKILL: its sandbox helpers die with it, but not at
  // once) are empty now; ours are gone. We still hold the name lock.
  if (d.cgroups)
    if (auto n = d.cgroups->remove_leftovers(); n > 0)
      log->info("node removed {} empty cgroups left by an earlier run", n);
  log->info("node stopped");
}

std::unique_ptr<node> node::start(const config::node_config& cfg, std::string& error) {
  auto log = config::logger("actors");
  std::unique_ptr<node> n{new node};
  auto& d = *n->impl_;

  // -- data directory: one node per directory ----------------------------------
  if (auto s = storage::make_directories(cfg.data_dir); !s.ok()) {
    error = "cannot create data directory: " + s.error;
    return nullptr;
  }
  auto lock_path = cfg.data_dir + "/LOCK";
  d.lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (d.lock_fd < 0 || ::flock(d.lock_fd, LOCK_EX | LOCK_NB) != 0) {
    error = "data directory " + cfg.data_dir + " is in use by another nimbusd (" + lock_path
            + ": " + std::strerror(errno) + ")";
    return nullptr;
  }

  // -- durable state -----------------------------------------------------------
  std::shared_ptr<storage::function_store> store
    = storage::make_file_function_store(cfg.data_dir + "/registry");
  std::vector<storage::function_record> loaded;
  if (auto s = store->load(loaded); !s.ok()) {
    error = "cannot load functions: " + s.error;
    return nullptr;
  }
  log->info("node {} loaded {} functions from {}", cfg.node_name, loaded.size(), cfg.data_dir);

  // -- code storage ------------------------------------------------------------
  storage::code_store_options co;
  co.dir = cfg.data_dir + "/code";
  co.convergence_domain = cfg.code.convergence_domain;
  co.master_key_file = cfg.code.master_key_file;
  co.limits.max_bytes = cfg.code.image_bytes;
  co.zip_unpacked_bytes = cfg.limits.code_size_unzipped;
  d.code = storage::code_store::open(co, error);
  if (!d.code) {
    error = "cannot open the code store: " + error;
    return nullptr;
  }
  if (auto problem = migrate_zips(*store, *d.code, loaded); !problem.empty()) {
    error = "cannot move stored zips into the code store: " + problem;
    return nullptr;
  }

  // -- actors ------------------------------------------------------------------
  d.system = std::make_unique<caf::actor_system>(d.caf_config);
  counter_config cc;
  cc.account_limit = cfg.limits.concurrent_executions;
  cc.unreserved_minimum = cfg.limits.unreserved_concurrency_minimum;
  cc.scale_burst = cfg.limits.scale_burst;
  cc.scale_refill = cfg.limits.scale_refill;
  cc.now = [] { return std::chrono::steady_clock::now(); };
  std::map<std::pair<std::string, std::string>, int32_t> reservations;
  for (const auto& r : loaded)
    if (r.reserved_concurrency >= 0)
      reservations[{r.account_id, r.name}] = r.reserved_concurrency;
  if (auto problem = validate(cc); !problem.empty()) {
    error = problem;
    return nullptr;
  }
  d.counter = spawn_counter(*d.system, cc, std::move(reservations));

  registry_config rc;
  rc.region = cfg.region;
  rc.code_size_unzipped = cfg.limits.code_size_unzipped;
  rc.total_code_size = cfg.limits.total_code_size;
  rc.now_ms = unix_ms;
  rc.account_concurrency = cfg.limits.concurrent_executions;
  rc.unreserved_minimum = cfg.limits.unreserved_concurrency_minimum;
  rc.counter = d.counter;
  rc.code = d.code;
  if (auto problem = validate(rc); !problem.empty()) {
    error = problem;
    return nullptr;
  }
  d.registry = spawn_registry(*d.system, rc, store, std::move(loaded));

  // Function logs, written by the frontend (sync) and the pollers (async).
  auto function_logs = std::make_shared<storage::function_log_store>(cfg.data_dir + "/logs",
                                                                     cfg.worker.log_file_bytes);

  // The execution-environment host: only where sandboxes can be made.
  // The Lambda API's io threads; by default the Runtime API runs on them too.
  // Pinned, each io thread gets an event loop of its own (a shard) and
  // keeps its connections, frontend and environments on its CPU. Unpinned,
  // shards only lose the scheduler's freedom to balance: all io threads share
  // one event loop instead (measured on the warm C path: unpinned shards 9.7k
  // req/s, one shared loop 10.6k, pinned shards 12.0k; bench/ab_invoke.py).
  d.api_io =
      cfg.api.pin_io_threads
          ? transport::io_runner::start_sharded(cfg.api.io_threads, true, cfg.api.io_threads_nice)
          : transport::io_runner::start(cfg.api.io_threads, cfg.api.io_threads_nice);
  if (int e = d.api_io->nice_error())
    log->warn("io threads keep nimbusd's priority: nice {} not set ({})", cfg.api.io_threads_nice,
              std::strerror(e));
  if (cfg.worker.enabled) {
    std::string problem;
    auto layout = ::geteuid() == 0
                    ? vmm::cgroup_layout::detect("nimbus-" + cfg.node_name, problem)
                    : std::nullopt;
    if (::geteuid() != 0)
      problem = "sandboxes need root";
    if (!layout) {
      log->warn("node {} runs no functions: {}", cfg.node_name, problem);
    } else {
      // The groups under nimbus-<name> belong to one node. A second nimbusd
      // with the same name would take the first one's freshly made (still
      // empty) groups for leftovers and remove them under its sandboxes.
      auto parent = layout->parent("memory");
      d.name_lock_fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (d.name_lock_fd < 0 || ::flock(d.name_lock_fd, LOCK_EX | LOCK_NB) != 0) {
        error = "node name " + cfg.node_name + " is in use by another nimbusd on this host ("
                + parent + ": " + std::strerror(errno) + ")";
        return nullptr;
      }
      if (auto n = layout->remove_leftovers(); n > 0)
        log->info("node {} removed {} empty cgroups left by an earlier run", cfg.node_name, n);
      worker_config wc;
      wc.host.jail_helper = cfg.worker.jail_helper.empty() ? executable_dir() + "/nimbus-jail"
                                                           : cfg.worker.jail_helper;
      wc.host.runtimes_dir = cfg.worker.runtimes_dir.empty() ? std::string{NIMBUS_RUNTIMES_DIR}
                                                             : cfg.worker.runtimes_dir;
      wc.host.jails_dir = cfg.data_dir + "/jails";
      wc.host.code_cache_dir = cfg.data_dir + "/code-cache";
      wc.host.code_size_unzipped = cfg.limits.code_size_unzipped;
      wc.host.cgroups = std::make_shared<vmm::cgroup_layout>(*layout);
      d.cgroups = wc.host.cgroups;
      wc.host.netns = std::make_shared<vmm::netns_pool>(cfg.data_dir + "/netns", 8);
      wc.host.sandboxes = std::make_shared<vmm::sandbox_pool>(wc.host.jail_helper,
                                                              wc.host.cgroups, 4);
      wc.host.init_timeout = cfg.worker.init_timeout;
      if (cfg.worker.runtime_io_threads == 0) {
        wc.host.runtime_io = d.api_io;
      } else {
        wc.host.runtime_io = cfg.api.pin_io_threads
                                 ? transport::io_runner::start_sharded(
                                     cfg.worker.runtime_io_threads, true, cfg.api.io_threads_nice)
                                 : transport::io_runner::start(cfg.worker.runtime_io_threads,
                                                               cfg.api.io_threads_nice);
      }
      wc.host.pin_below_mb = static_cast<int32_t>(cfg.worker.pin_below_mb);
      wc.first_uid = cfg.worker.first_uid;
      wc.memory_total_mb = cfg.worker.memory_mb > 0 ? cfg.worker.memory_mb : default_memory_mb();
      wc.registry = d.registry;
      // Code images: chunks through the worker's cache, served by FUSE and
      // mounted as erofs while environments use them.
      d.chunk_cache = std::make_shared<storage::chunk_cache>(
        d.code->chunks(), cfg.data_dir + "/worker/chunk-cache", cfg.code.cache_memory_bytes,
        cfg.code.cache_disk_bytes);
      auto code = d.code;
      vmm::image_resolver resolve = [code](const std::string& account, const std::string& name,
                                           uint64_t& size,
                                           std::vector<storage::chunk_ref>& chunks) {
        storage::image_manifest manifest;
        if (auto problem = code->images().manifest(account, name, manifest); !problem.empty())
          return problem;
        size = manifest.size;
        chunks = std::move(manifest.chunks);
        return std::string{};
      };
      vmm::linger_policy linger;
      linger.time = cfg.code.mount_linger;
      d.images = vmm::image_library::open(cfg.data_dir + "/worker/images", d.chunk_cache, resolve,
                                          cfg.code.lazy, error, linger);
      if (!d.images) {
        error = "cannot prepare code images: " + error;
        return nullptr;
      }
      wc.host.images = d.images;
      // Left over from a previous run: sandboxes died with it.
      std::error_code ec;
      std::filesystem::remove_all(wc.host.jails_dir, ec);
      std::filesystem::remove_all(wc.host.code_cache_dir, ec);
      for (const auto& dir : {wc.host.jails_dir, wc.host.code_cache_dir})
        if (auto s = storage::make_directories(dir); !s.ok()) {
          error = s.error;
          return nullptr;
        }
      if (auto problem = validate(wc); !problem.empty()) {
        error = problem;
        return nullptr;
      }
      d.worker = spawn_worker(*d.system, wc);
      placement_config pc;
      pc.packing = cfg.worker.packing;
      d.placement = spawn_placement(*d.system, pc);
      caf::anon_send(d.placement, register_atom::value, d.worker);
      assignment_config ac;
      ac.region = cfg.region;
      ac.keep_alive = cfg.worker.keep_alive;
      ac.max_lifetime = cfg.worker.max_lifetime;
      ac.counter = d.counter;
      ac.placement = d.placement;
      ac.registry = d.registry;
      if (auto problem = validate(ac); !problem.empty()) {
        error = problem;
        return nullptr;
      }
      d.assignment = spawn_assignment(*d.system, ac);
      // The async path: durable queue partitions and their pollers.
      queue_manager_config qc;
      qc.region = cfg.region;
      qc.dir = cfg.data_dir + "/queues";
      qc.mq_dir = cfg.data_dir + "/message-queues";
      qc.async = cfg.async;
      qc.registry = d.registry;
      qc.counter = d.counter;
      qc.assignment = d.assignment;
      qc.logs = function_logs;
      auto queues = spawn_queue_manager(*d.system, qc, error);
      if (!queues) {
        error = "cannot open the event queues: " + error;
        return nullptr;
      }
      d.queues = *queues;
      // About ten descriptors per environment (see nimbusd.cpp), plus the
      // node's own; the smallest environment has 128 MB.
      rlimit nofile{};
      ::getrlimit(RLIMIT_NOFILE, &nofile);
      uint64_t fd_room = nofile.rlim_cur > 200 ? (nofile.rlim_cur - 200) / 10 : 0;
      log->info("node {} runs functions: {} MB for environments; open files limit {} (about {} "
                "environments)",
                cfg.node_name, wc.memory_total_mb, static_cast<uint64_t>(nofile.rlim_cur), fd_room);
      if (fd_room < wc.memory_total_mb / 128)
        log->warn("node {}: the open files limit ({}) allows fewer environments than memory "
                  "does ({}); raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                  cfg.node_name, static_cast<uint64_t>(nofile.rlim_cur), wc.memory_total_mb / 128);
    }
  }

  frontend_config fc;
  fc.node_name = cfg.node_name;
  fc.region = cfg.region;
  fc.accounts = cfg.accounts;
  fc.clock_skew = cfg.api.clock_skew;
  fc.authenticate = cfg.api.authenticate;
  if (!cfg.api.authenticate)
    log->warn("node {} does NOT verify signatures (api.authenticate = false): every request "
              "acts as account {}",
              cfg.node_name, cfg.accounts.front().id);
  fc.request_timeout = cfg.api.request_timeout;
  fc.codec.code_size_zipped = cfg.limits.code_size_zipped;
  fc.codec.environment_bytes = cfg.limits.environment_bytes;
  fc.limits = cfg.limits;
  fc.now = [] { return std::chrono::system_clock::now(); };
  fc.metrics = std::make_shared<transport::api_metrics>();
  fc.queues = d.queues;
  fc.async_payload_bytes = cfg.async.payload_bytes;
  fc.logs = function_logs;
  fc.code = d.code;
  fc.extra_metrics = [code = d.code, cache = d.chunk_cache] {
    return render_code_metrics(*code, cache.get());
  };
  if (auto problem = validate(fc); !problem.empty()) {
    error = problem;
    return nullptr;
  }
  // One frontend per io shard, so that two io threads do not queue up behind
  // one actor and hand each other's invocations across CPUs. They share the
  // metrics, the download key and the metadata cache (which the registry's
  // change notices keep coherent: a notice reaches every frontend before the
  // change is answered).
  fc.invocations = std::make_shared<invoke_metrics>();
  fc.cache = std::make_shared<metadata_cache>();
  fc.download_key = storage::random_bytes(32);
  for (size_t i = 0; i < d.api_io->shards(); ++i)
    d.frontends.push_back(spawn_frontend(*d.system, fc, d.registry, d.counter, d.assignment));

  // -- HTTP --------------------------------------------------------------------
  transport::http_server_options options;
  options.address = cfg.api.listen_address;
  options.port = cfg.api.listen_port;
  options.io_threads = cfg.api.io_threads;
  options.runner = d.api_io;
  options.max_header_bytes = cfg.api.max_header_bytes;
  options.header_deadline = cfg.api.header_timeout;
  options.body_deadline = cfg.api.body_timeout;
  options.idle_timeout = cfg.api.idle_timeout;
  options.max_pipeline = cfg.api.max_pipeline;
  // Pushed container images stream to disk (hashed as they arrive), never
  // into memory.
  auto spool_dir = cfg.data_dir + "/spool";
  {
    std::error_code ec;
    std::filesystem::remove_all(spool_dir, ec);
    if (auto s = storage::make_directories(spool_dir); !s.ok()) {
      error = s.error;
      n->stop();
      return nullptr;
    }
  }
  options.spool_path = [spool_dir](const transport::http_request& head) -> std::string {
    if (head.method != "PUT" || head.path().rfind("/nimbus/images/", 0) != 0)
      return {};
    return spool_dir + "/upload-" + storage::request_hex(16);
  };
  options.max_spool_bytes = cfg.code.image_bytes;

  transport::http_server_hooks hooks;
  auto frontends = d.frontends;
  // The core actors answer every request (the frontend bounds its registry
  // calls by request_timeout, an invocation ends by the function timeout at
  // the latest), and the node stops if one of them dies (below). So the
  // bridge waits without a timeout of its own: an invocation may take up to
  // 15 minutes, far longer than any control-plane call, and a timeout would
  // wake CAF's clock thread once per request.
  auto stopping = d.stopping;
  auto fail_stop = [stopping, log](const char* name) {
    return [stopping, log, name](const caf::error& reason) {
      if (stopping->load() || reason == caf::exit_reason::user_shutdown)
        return;
      log->critical("the {} actor ended unexpectedly ({}): stopping the node so that no request "
                    "waits forever",
                    name, caf::to_string(reason));
      log->flush();
      std::_Exit(70);
    };
  };
  for (auto& f : d.frontends)
    f->attach_functor(fail_stop("frontend"));
  d.registry->attach_functor(fail_stop("registry"));
  d.counter->attach_functor(fail_stop("counter"));
  if (d.assignment) {
    d.assignment->attach_functor(fail_stop("assignment"));
    d.worker->attach_functor(fail_stop("worker"));
    d.placement->attach_functor(fail_stop("placement"));
    d.queues->attach_functor(fail_stop("queue manager"));
  }
  hooks.on_request = [frontends](transport::http_request req, transport::respond_fn respond) {
    // The request goes to the frontend with its respond function: no actor
    // and no reply message per request. For an invoke with a small payload,
    // the frontend and the actors it reaches run right here when they are
    // idle (see inline_unit.hpp), which saves waking a scheduler thread per
    // hop. Everything else (control-plane bodies of many megabytes to hash
    // and parse, image pushes) goes to the scheduler, off the io threads.
    bool small_invoke = is_invoke(req) && req.body.size() <= inline_invoke_bytes;
    const auto& frontend = frontends[req.shard > 0 ? size_t(req.shard) % frontends.size() : 0];
    http_exchange x{std::move(req), std::make_shared<transport::respond_fn>(std::move(respond))};
    if (small_invoke)
      inline_unit::send(frontend, std::move(x));
    else
      caf::anon_send(frontend, std::move(x));
  };
  const auto control_limit = cfg.limits.control_body_bytes;
  const auto invoke_limit = cfg.limits.invoke_payload_bytes;
  const auto async_limit = cfg.async.payload_bytes;
  hooks.body_limit = [control_limit, invoke_limit,
                      async_limit](const transport::http_request& head) -> uint64_t {
    if (is_invoke(head)) {
      // Event payloads have their own, smaller limit (AWS: 1 MB).
      auto type = head.header("X-Amz-Invocation-Type");
      return type && *type == "Event" ? async_limit : invoke_limit;
    }
    if (head.method == "POST" || head.method == "PUT")
      return control_limit;
    return 64 * 1024;
  };
  hooks.too_large = [](const transport::http_request& head, uint64_t limit) {
    auto m = transport::lambda::match(head.method, head.target);
    if (m.matched && m.matched->op == transport::lambda::operation::invoke) {
      auto type = head.header("X-Amz-Invocation-Type");
      bool async = type && *type == "Event";
      return transport::lambda::error_response(
        {413, "RequestTooLargeException",
         "Request must be smaller than " + std::to_string(limit) + " bytes for the "
           + (async ? "InvokeAsync" : "InvokeFunction") + " operation"});
    }
    auto op = m.matched ? std::string{transport::lambda::operation_name(m.matched->op)}
                        : std::string{"this"};
    return transport::lambda::error_response(
      {413, "RequestEntityTooLargeException",
       "Request must be smaller than " + std::to_string(limit) + " bytes for the " + op
         + " operation"});
  };
  hooks.bad_request = [](std::string_view reason, int status) {
    return transport::lambda::error_response(
      {status, "InvalidRequestContentException", std::string{reason}});
  };
  try {
    d.server = std::make_unique<transport::http_server>(options, hooks);
  } catch (const std::exception& e) {
    error = "cannot listen on " + cfg.api.listen_address + ":"
            + std::to_string(cfg.api.listen_port) + ": " + e.what();
    n->stop();
    return nullptr;
  }
  log->info("nimbusd listening on {}:{} (region {})", cfg.api.listen_address,
            d.server->port(), cfg.region);
  return n;
}

} // namespace nimbus
