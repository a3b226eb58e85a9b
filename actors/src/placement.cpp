#include "nimbus/actors/placement.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <cstdio>
#include <algorithm>
#include <memory>

namespace nimbus {

std::optional<placement_choice> choose_worker(const std::vector<worker_load>& workers,
                                              uint64_t memory_mb, double packing) {
  std::optional<placement_choice> best;
  uint32_t best_envs = 0;
  for (size_t i = 0; i < workers.size(); ++i) {
    const auto& w = workers[i];
    if (w.memory_total_mb == 0 || w.memory_used_mb + memory_mb > w.memory_total_mb)
      continue;
    double total = static_cast<double>(w.memory_total_mb);
    double u = static_cast<double>(w.memory_used_mb + memory_mb) / total;
    double score = packing * u - (1.0 - packing) * u * u;
    bool better = !best || score > best->score + 1e-12
                  || (score > best->score - 1e-12 && w.environments < best_envs);
    if (better) {
      char reason[160];
      std::snprintf(reason, sizeof reason,
                    "worker %zu: %llu/%llu MB used, %u environments, score %.3f (packing %.2f)",
                    i, static_cast<unsigned long long>(w.memory_used_mb),
                    static_cast<unsigned long long>(w.memory_total_mb), w.environments, score,
                    packing);
      best = placement_choice{i, score, reason};
      best_envs = w.environments;
    }
  }
  return best;
}

placement_actor::behavior_type placement(placement_actor::stateful_pointer<placement_state> self,
                                         placement_config cfg) {
  self->state.config = cfg;
  self->set_down_handler([self](const caf::down_msg& msg) {
    auto& ws = self->state.workers;
    ws.erase(std::remove_if(ws.begin(), ws.end(),
                            [&](const worker_actor& w) { return w.address() == msg.source; }),
             ws.end());
  });
  return {
    [=](register_atom, worker_actor w) {
      self->monitor(w);
      self->state.workers.push_back(std::move(w));
    },
    [=](place_atom, int32_t memory_mb) -> caf::result<worker_actor> {
      auto workers = self->state.workers;
      if (workers.empty())
        return make_error(ec::environment_unavailable, "no worker is registered");
      // Ask every worker for its current load, then score.
      auto rp = self->make_response_promise<worker_actor>();
      struct round {
        std::vector<worker_load> loads;
        size_t answers = 0;
      };
      auto r = std::make_shared<round>();
      r->loads.resize(workers.size());
      auto packing = self->state.config.packing;
      auto decide = [=]() mutable {
        auto choice = choose_worker(r->loads, static_cast<uint64_t>(memory_mb), packing);
        if (!choice) {
          rp.deliver(make_error(ec::environment_unavailable,
                                "no worker has " + std::to_string(memory_mb) + " MB free"));
          return;
        }
        config::logger("actors")->debug("placement chose {}", choice->reason);
        rp.deliver(workers[choice->index]);
      };
      for (size_t i = 0; i < workers.size(); ++i)
        self->request(workers[i], std::chrono::seconds{2}, capacity_atom::value)
          .then(
            [=](worker_capacity& c) mutable {
              r->loads[i] = {c.memory_total_mb, c.memory_used_mb, c.environments};
              if (++r->answers == workers.size())
                decide();
            },
            [=](caf::error&) mutable {
              // An unresponsive worker gets no environments.
              r->loads[i] = {};
              if (++r->answers == workers.size())
                decide();
            });
      return rp;
    },
  };
}

placement_actor spawn_placement(caf::actor_system& sys, placement_config cfg) {
  return sys.spawn(placement, cfg);
}

} // namespace nimbus
