#include "nimbus/actors/code_builder.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/json.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>

namespace nimbus {

namespace {

code_builder_actor::behavior_type code_builder(code_builder_actor::pointer self,
                                               code_builder_config cfg) {
  return {
    [=](build_atom, const std::string& account, const std::string& archive,
        const std::string& repository, const std::string& tag) -> caf::result<std::string> {
      auto log = config::logger("actors");
      auto started = std::chrono::steady_clock::now();
      storage::pushed_image image;
      auto problem = cfg.code->push_image(account, archive, repository, tag, image);
      self->quit();
      if (!problem.empty()) {
        constexpr std::string_view invalid = "invalid: ";
        if (problem.compare(0, invalid.size(), invalid) == 0) {
          log->info("code builder refused image {}:{} of account {}: {}", repository, tag,
                    account, problem.substr(invalid.size()));
          return make_error(ec::invalid_parameter,
                            "The image archive is not usable: " + problem.substr(invalid.size()));
        }
        log->error("code builder failed to store image {}:{} of account {}: {}", repository, tag,
                   account, problem);
        return make_error(ec::storage_failure, "Failed to store the image");
      }
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - started)
                  .count();
      log->info("code builder stored image {}:{} ({}) of account {}: {} bytes, {} new chunks, "
                "{} ms",
                repository, tag, image.digest, account, image.image_bytes, image.new_chunks, ms);
      storage::json_writer w;
      w.begin_object();
      w.key("repository").value(repository);
      w.key("tag").value(tag);
      w.key("imageDigest").value(image.digest);
      w.key("imageUri").value(account + ".dkr.ecr." + cfg.region + ".amazonaws.com/" + repository
                              + ":" + tag);
      w.key("imageSizeInBytes").value(image.image_bytes);
      w.end_object();
      return w.take();
    },
  };
}

} // namespace

code_builder_actor spawn_code_builder(caf::actor_system& sys, code_builder_config cfg) {
  return sys.spawn<caf::detached>(code_builder, std::move(cfg));
}

} // namespace nimbus
