#include "nimbus/actors/assignment.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/transport/lambda_api.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>

namespace nimbus {

std::string validate(const assignment_config& cfg) {
  if (!cfg.counter || !cfg.placement || !cfg.registry)
    return "assignment: counter, placement and registry are required";
  if (cfg.keep_alive.count() <= 0 || cfg.max_lifetime.count() <= 0)
    return "assignment: keep-alive and lifetime must be positive";
  return {};
}

namespace {

using self_ptr = assignment_actor::stateful_pointer<assignment_state>;
using phase = assignment_state::phase;
using clock = std::chrono::steady_clock;

// How many of the most recently used idle environments a warm invoke looks
// through for one on its own io shard.
constexpr size_t shard_search = 8;

// Environments are keyed by revision: a new RevisionId never reuses them.
std::string key_of(const std::string& account, const std::string& name,
                   const std::string& revision) {
  return account + "/" + name + "/" + revision;
}

std::string key_of(const storage::function_record& f) {
  return key_of(f.account_id, f.name, f.revision_id);
}

int64_t micros_since(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t).count();
}

void drop_idle(assignment_state& st, const std::string& key, const std::string& id) {
  auto it = st.idle.find(key);
  if (it == st.idle.end())
    return;
  auto& v = it->second;
  v.erase(std::remove(v.begin(), v.end(), id), v.end());
  if (v.empty())
    st.idle.erase(it);
}

// Destroys an environment on its worker and forgets it.
void destroy(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto it = st.environments.find(id);
  if (it == st.environments.end())
    return;
  drop_idle(st, it->second.key, id);
  auto worker = it->second.worker;
  if (it->second.handle)
    self->demonitor(it->second.handle.address());
  st.environments.erase(it);
  self->request(worker, std::chrono::seconds{30}, destroy_atom::value, id)
    .then([](bool) {}, [](caf::error&) {});
}

// Retires every environment of (account, function) except those of `keep`.
void retire_function(self_ptr self, const std::string& account, const std::string& function,
                     const std::string& keep) {
  std::vector<std::string> now;
  for (auto& [id, e] : self->state.environments) {
    if (e.account != account || e.function != function || e.key == keep)
      continue;
    if (e.state == phase::idle)
      now.push_back(id);
    else
      e.state = phase::retiring;
  }
  for (auto& id : now)
    destroy(self, id);
}

// Runs the invocation on an environment that is busy for it.
void run(self_ptr self, const std::string& id, invocation_request req, int32_t timeout_s,
         caf::typed_response_promise<invoke_outcome> rp, invoke_outcome outcome) {
  auto& e = self->state.environments.at(id);
  // No timeout: the environment answers every invocation (it enforces the
  // function timeout), the down handler answers if it dies, and a timeout
  // would wake CAF's clock thread once per invocation.
  (void) timeout_s;
  auto on_result = [=](invocation_result& result) mutable {
    auto& st = self->state;
    auto it = st.environments.find(id);
    if (it != st.environments.end()) {
      if (!it->second.pending.pending())
        return; // the down handler has answered already
      it->second.pending = {};
      if (result.environment_lost && !it->second.handle) {
        // Answered through the worker, which has discarded it already.
        drop_idle(st, it->second.key, id);
        st.environments.erase(it);
      } else if (result.environment_lost) {
        destroy(self, id); // the worker forgets it too
      } else if (it->second.state == phase::retiring) {
        destroy(self, id);
      } else {
        it->second.state = phase::idle;
        it->second.last_used = self->clock().now();
        st.idle[it->second.key].push_back(id);
      }
    }
    outcome.result = std::move(result);
    rp.deliver(std::move(outcome));
  };
  auto on_error = [=](caf::error& err) mutable {
    auto& st = self->state;
    if (auto it = st.environments.find(id); it != st.environments.end()) {
      if (!it->second.pending.pending())
        return;
      it->second.pending = {};
    }
    destroy(self, id);
    rp.deliver(std::move(err));
  };
  // The promise is kept for the down handler; the `.then` handlers answer
  // through their own copy.
  e.pending = rp;
  if (e.handle)
    self->request(e.handle, caf::infinite, invoke_atom::value, std::move(req))
      .then(std::move(on_result), std::move(on_error));
  else
    self->request(e.worker, caf::infinite, invoke_atom::value, id, std::move(req))
      .then(std::move(on_result), std::move(on_error));
}

caf::result<invoke_outcome> invoke(self_ptr self, invoke_order& order) {
  auto& st = self->state;
  if (!order.function)
    return make_error(ec::service_failure, "an invocation without its function");
  const auto& f = *order.function;
  auto key = key_of(f);
  // LAM-9: an older revision's environments never serve this function again.
  // Only a revision this partition has not seen for the function can leave
  // any behind, so the scan over all environments is skipped otherwise.
  if (auto& seen = st.revisions[{f.account_id, f.name}]; seen != key) {
    retire_function(self, f.account_id, f.name, key);
    seen = key;
  }
  auto rp = self->make_response_promise<invoke_outcome>();
  if (auto it = st.idle.find(key); it != st.idle.end() && !it->second.empty()) {
    auto& idle = it->second;
    auto pick = idle.end() - 1;
    // The most recently used idle environment, but among the last few one
    // served by the io shard (and usually the CPU) the request arrived on:
    // its wake-ups then stay on that CPU.
    if (order.shard >= 0) {
      auto stop = idle.size() > shard_search ? idle.end() - shard_search : idle.begin();
      for (auto c = idle.end(); c != stop;) {
        --c;
        if (st.environments.at(*c).shard == order.shard) {
          pick = c;
          break;
        }
      }
    }
    auto id = *pick;
    idle.erase(pick);
    if (idle.empty())
      st.idle.erase(it);
    st.environments.at(id).state = phase::busy;
    ++st.warm_starts;
    invoke_outcome outcome;
    outcome.environment_id = id;
    run(self, id, std::move(order.request), f.timeout, rp, std::move(outcome));
    return rp;
  }
  // Cold: scale token, then a worker, then a new environment.
  auto function = f;
  auto request = std::move(order.request);
  auto shard = order.shard;
  auto start = clock::now();
  self->request(st.config.counter, std::chrono::seconds{5}, scale_atom::value, f.account_id, f.name)
    .then(
      [=](bool) mutable {
        self->request(self->state.config.placement, std::chrono::seconds{5}, place_atom::value,
                      function.memory_size)
          .then(
            [=](worker_actor& worker) mutable {
              invoke_outcome outcome;
              outcome.cold = true;
              outcome.placement_us = micros_since(start);
              environment_spec spec;
              spec.environment_id = "env-" + storage::to_hex(storage::random_bytes(8));
              spec.account_id = function.account_id;
              spec.function_name = function.name;
              spec.version = function.version;
              spec.function_arn = transport::lambda::function_arn(
                self->state.config.region, function.account_id, function.name);
              spec.runtime = function.runtime;
              spec.handler = function.handler;
              spec.memory_mb = function.memory_size;
              spec.timeout_s = function.timeout;
              spec.ephemeral_mb = function.ephemeral_storage;
              spec.variables = function.environment;
              spec.region = self->state.config.region;
              spec.code_sha256_hex = function.code_sha256_hex;
              spec.package_type = function.package_type;
              spec.code_image = function.code_image;
              spec.image_argv = function.image_argv;
              spec.image_workdir = function.image_workdir;
              spec.image_env = function.image_env;
              spec.shard = shard;
              auto id = spec.environment_id;
              assignment_state::environment e;
              e.id = id;
              e.key = key;
              e.account = function.account_id;
              e.function = function.name;
              e.worker = worker;
              e.created = self->clock().now();
              e.last_used = e.created;
              self->state.environments.emplace(id, e);
              ++self->state.cold_starts;
              self->request(worker, std::chrono::seconds{60}, create_atom::value, std::move(spec))
                .then(
                  [=](environment_ready& ready) mutable {
                    auto it = self->state.environments.find(id);
                    if (it == self->state.environments.end()) {
                      rp.deliver(make_error(ec::environment_unavailable, "environment retired"));
                      return;
                    }
                    if (it->second.state == phase::initializing)
                      it->second.state = phase::busy;
                    it->second.shard = ready.shard;
                    if (auto env = caf::actor_cast<environment_actor>(ready.environment)) {
                      it->second.handle = env;
                      self->monitor(env);
                    }
                    outcome.environment_id = id;
                    outcome.sandbox_us = ready.sandbox_us;
                    outcome.init_us = ready.init_us;
                    run(self, id, std::move(request), function.timeout, rp, std::move(outcome));
                  },
                  [=](caf::error& err) mutable {
                    self->state.environments.erase(id);
                    rp.deliver(std::move(err));
                  });
            },
            [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
      },
      [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

} // namespace

assignment_actor::behavior_type assignment(self_ptr self, assignment_config cfg) {
  self->state.config = std::move(cfg);
  self->send(self->state.config.registry, subscribe_atom::value,
             metadata_listener_actor{caf::actor_cast<assignment_actor>(self)});
  self->delayed_send(self, self->state.config.sweep_interval, tick_atom::value);
  self->set_down_handler([self](const caf::down_msg& msg) {
    auto& st = self->state;
    for (auto& [key, e] : st.environments)
      if (e.handle && e.handle.address() == msg.source) {
        auto id = key; // destroy() erases the entry and its key
        config::logger("actors")->warn("assignment lost environment {}", id);
        auto pending = e.pending;
        e.pending = {};
        destroy(self, id); // the worker forgets it too
        if (pending.pending())
          pending.deliver(
            make_error(ec::environment_unavailable, "the environment stopped unexpectedly"));
        return;
      }
  });
  return {
    [=](invoke_atom, invoke_order& order) -> caf::result<invoke_outcome> {
      return invoke(self, order);
    },
    [=](stats_atom) -> std::map<std::string, uint64_t> {
      std::map<std::string, uint64_t> counts{
        {"initializing", 0}, {"idle", 0}, {"busy", 0}, {"retiring", 0}};
      for (const auto& [_, e] : self->state.environments)
        switch (e.state) {
          case phase::initializing: ++counts["initializing"]; break;
          case phase::idle: ++counts["idle"]; break;
          case phase::busy: ++counts["busy"]; break;
          case phase::retiring: ++counts["retiring"]; break;
        }
      return counts;
    },
    [=](invalidate_atom, const std::string& account, const std::string& function,
        const std::string& revision) {
      // The function is gone (no revision) or changed: environments of any
      // other revision may not serve it again. A change that keeps the
      // revision (concurrency, event invoke config) keeps them warm.
      auto keep = revision.empty() ? std::string{} : key_of(account, function, revision);
      retire_function(self, account, function, keep);
      if (keep.empty())
        self->state.revisions.erase({account, function});
      else
        self->state.revisions[{account, function}] = keep;
    },
    [=](tick_atom) {
      auto& st = self->state;
      auto now = self->clock().now();
      std::vector<std::string> expired;
      for (auto& [id, e] : st.environments) {
        bool too_old = now - e.created > st.config.max_lifetime;
        bool unused = e.state == phase::idle && now - e.last_used > st.config.keep_alive;
        if (e.state == phase::idle && (too_old || unused))
          expired.push_back(id);
        else if (too_old && e.state == phase::busy)
          e.state = phase::retiring;
      }
      for (auto& id : expired) {
        config::logger("actors")->debug("assignment retires idle environment {}", id);
        destroy(self, id);
      }
      self->delayed_send(self, st.config.sweep_interval, tick_atom::value);
    },
  };
}

assignment_actor spawn_assignment(caf::actor_system& sys, assignment_config cfg) {
  return sys.spawn(assignment, std::move(cfg));
}

} // namespace nimbus
