#include "nimbus/actors/worker.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <sys/stat.h>

namespace nimbus {

std::string validate(const worker_config& cfg) {
  if (cfg.host.jail_helper.empty())
    return "worker: jail helper path missing";
  if (cfg.host.jails_dir.empty())
    return "worker: jails directory missing";
  if (!cfg.host.cgroups)
    return "worker: cgroup layout missing";
  if (cfg.memory_total_mb == 0)
    return "worker: no memory to hand out";
  return {};
}

worker_state::~worker_state() {
  // Environments are actors of their own; tell them to end (their state
  // tears the sandbox down).
  for (auto& [_, e] : environments)
    caf::anon_send_exit(e.handle, caf::exit_reason::user_shutdown);
}

namespace {

using self_ptr = worker_actor::stateful_pointer<worker_state>;

void forget(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto it = st.environments.find(id);
  if (it == st.environments.end())
    return;
  st.memory_used_mb -= static_cast<uint64_t>(it->second.memory_mb);
  st.uids_in_use.erase(it->second.uid);
  st.environments.erase(it);
}

// Destroys an environment in the background and forgets it at once.
void discard(self_ptr self, const std::string& id) {
  auto it = self->state.environments.find(id);
  if (it == self->state.environments.end())
    return;
  auto handle = it->second.handle;
  forget(self, id);
  self->request(handle, std::chrono::seconds{30}, destroy_atom::value)
    .then([](bool) {}, [](caf::error&) {});
}

} // namespace

worker_actor::behavior_type worker(self_ptr self, worker_config cfg) {
  self->state.config = std::move(cfg);
  self->set_down_handler([self](const caf::down_msg& msg) {
    for (auto& [id, e] : self->state.environments)
      if (e.handle.address() == msg.source) {
        config::logger("actors")->warn("worker lost environment {}", id);
        if (e.pending.pending())
          e.pending.deliver(
            make_error(ec::environment_unavailable, "the environment stopped unexpectedly"));
        forget(self, id);
        return;
      }
  });
  return {
    [=](create_atom, environment_spec& spec) -> caf::result<environment_ready> {
      auto& st = self->state;
      if (st.environments.count(spec.environment_id))
        return make_error(ec::resource_conflict, "environment exists: " + spec.environment_id);
      auto memory = static_cast<uint64_t>(spec.memory_mb);
      if (st.memory_used_mb + memory > st.config.memory_total_mb)
        return make_error(ec::environment_unavailable, "worker has no memory left");
      // The lowest uid no live environment uses.
      uint32_t uid = st.config.first_uid;
      while (st.uids_in_use.count(uid))
        ++uid;
      if (uid >= st.config.first_uid + st.config.uid_count)
        return make_error(ec::environment_unavailable, "worker has no free uid left");
      auto id = spec.environment_id;
      auto timeout = spec.timeout_s;
      auto memory_mb = spec.memory_mb;
      auto host = st.config.host;
      host.uid = uid;
      host.gid = uid;
      st.uids_in_use.insert(uid);
      st.memory_used_mb += memory;
      auto rp = self->make_response_promise<environment_ready>();
      // Spawns the environment and runs its INIT, once the code is at hand.
      auto launch = [=](environment_spec spec) mutable {
        auto env = spawn_environment(self->system(), host, std::move(spec));
        self->monitor(env);
        self->state.environments.emplace(id, worker_state::entry{env, memory_mb, timeout, uid, {}});
        auto limit = host.init_timeout + std::chrono::seconds{15};
        self->request(env, limit, init_atom::value)
          .then(
            [rp, env](environment_ready& ready) mutable {
              ready.environment = caf::actor_cast<caf::actor>(env);
              rp.deliver(std::move(ready));
            },
                [=](caf::error& err) mutable {
                  discard(self, id);
                  rp.deliver(std::move(err));
                });
      };
      auto give_back = [=] {
        self->state.memory_used_mb -= memory;
        self->state.uids_in_use.erase(uid);
      };
      bool cached = false;
      if (spec.code_dir.empty() && !spec.code_sha256_hex.empty()) {
        struct stat sb {};
        cached = ::stat((host.code_cache_dir + "/" + spec.code_sha256_hex).c_str(), &sb) == 0;
      }
      // A code image is mounted by the environment itself.
      bool image = !spec.code_image.empty() && host.images;
      if (image || !spec.code_dir.empty() || cached || !st.config.registry) {
        launch(std::move(spec));
        return rp;
      }
      auto account = spec.account_id;
      auto name = spec.function_name;
      auto hex = spec.code_sha256_hex;
      self->request(st.config.registry, std::chrono::seconds{60}, fetch_code_atom::value, account,
                    name, hex)
        .then(
          [=](std::string& zip) mutable {
            spec.code_zip = std::move(zip);
            launch(std::move(spec));
          },
          [=](caf::error& err) mutable {
            give_back();
            rp.deliver(std::move(err));
          });
      return rp;
    },
    [=](invoke_atom, const std::string& id,
        invocation_request& req) -> caf::result<invocation_result> {
      auto it = self->state.environments.find(id);
      if (it == self->state.environments.end())
        return make_error(ec::environment_unavailable, "no such environment: " + id);
      auto rp = self->make_response_promise<invocation_result>();
      // No timeout here (a timeout costs a wake-up of CAF's clock thread per
      // invocation): the environment enforces the function timeout itself,
      // and the down handler answers if the environment actor dies.
      it->second.pending = rp;
      self->request(it->second.handle, caf::infinite, invoke_atom::value, std::move(req))
        .then(
          [=](invocation_result& result) mutable {
            if (auto e = self->state.environments.find(id); e != self->state.environments.end())
              e->second.pending = {};
            if (result.environment_lost)
              discard(self, id);
            rp.deliver(std::move(result));
          },
          [=](caf::error& err) mutable {
            if (auto e = self->state.environments.find(id); e != self->state.environments.end())
              e->second.pending = {};
            discard(self, id);
            rp.deliver(std::move(err));
          });
      return rp;
    },
    [=](destroy_atom, const std::string& id) -> caf::result<bool> {
      auto it = self->state.environments.find(id);
      if (it == self->state.environments.end())
        return make_error(ec::environment_unavailable, "no such environment: " + id);
      auto handle = it->second.handle;
      forget(self, id);
      auto rp = self->make_response_promise<bool>();
      self->request(handle, std::chrono::seconds{30}, destroy_atom::value)
        .then([rp](bool ok) mutable { rp.deliver(ok); },
              [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [=](capacity_atom) -> worker_capacity {
      auto& st = self->state;
      return {st.config.memory_total_mb, st.memory_used_mb,
              static_cast<uint32_t>(st.environments.size())};
    },
  };
}

worker_actor spawn_worker(caf::actor_system& sys, worker_config cfg) {
  // One io thread serves the Runtime APIs of all environments: under load
  // it handles many connections per wake-up instead of one thread per
  // environment waking for each message.
  if (!cfg.host.runtime_io)
    cfg.host.runtime_io = transport::io_runner::start(1);
  if (!cfg.host.sandbox_threads)
    cfg.host.sandbox_threads = transport::io_runner::start(2);
  return sys.spawn(worker, std::move(cfg));
}

} // namespace nimbus
