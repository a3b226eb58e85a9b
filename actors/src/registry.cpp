#include "nimbus/actors/registry.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/code_archive.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/transport/lambda_api.hpp"
#include "nimbus/transport/lambda_codec.hpp"
#include "nimbus/vmm/runtime_catalog.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <chrono>

namespace nimbus {

using storage::function_record;
using transport::lambda::code_update;
using transport::lambda::configuration_patch;
using transport::lambda::delivery_target;
using transport::lambda::event_invoke_update;
using transport::lambda::function_spec;

std::string validate(const registry_config& cfg) {
  if (cfg.region.empty())
    return "registry: region must not be empty";
  if (!cfg.now_ms)
    return "registry: clock missing";
  return {};
}

namespace {

using self_ptr = registry_actor::stateful_pointer<registry_state>;

caf::error not_found(const registry_state& st, const std::string& account,
                     const std::string& name) {
  return make_error(ec::resource_not_found,
                    "Function not found: "
                      + transport::lambda::function_arn(st.config.region, account, name));
}

caf::error runtime_unsupported(const std::string& runtime) {
  std::string all;
  for (const auto& r : vmm::supported_runtimes())
    all += (all.empty() ? "" : ", ") + r.name;
  return make_error(ec::invalid_parameter,
                    "Value " + runtime
                      + " at 'runtime' failed to satisfy constraint: Member must satisfy enum "
                        "value set: ["
                      + all + "] or be a valid ARN");
}

uint64_t account_code_size(const registry_state& st, const std::string& account) {
  uint64_t total = 0;
  if (auto it = st.functions.find(account); it != st.functions.end())
    for (const auto& [_, r] : it->second)
      total += static_cast<uint64_t>(r.code_size);
  return total;
}

// References to stored zips are counted per account: with the code store,
// each account's copy is sealed under its own convergence secret.
std::string code_key(const std::string& account, const std::string& hex) {
  return account + "/" + hex;
}

// True if any account still references a zip with this hash (the plain
// function store keeps one copy for all accounts).
bool zip_in_use(const registry_state& st, const std::string& hex) {
  for (const auto& [key, n] : st.code_refs)
    if (n > 0 && key.size() > hex.size() && key.compare(key.size() - hex.size(), hex.size(), hex) == 0
        && key[key.size() - hex.size() - 1] == '/')
      return true;
  return false;
}

// Validates a zip and stores it if new: flattened into an image of the code
// store, or (without a code store, in tests) as the zip itself. On success
// the record's code_sha256(_hex) and code_image name it.
caf::error store_code(self_ptr self, const std::string& account, const std::string& zip,
                      function_record& r) {
  auto& st = self->state;
  auto report = storage::check_zip(zip, st.config.code_size_unzipped);
  if (!report.ok)
    return make_error(ec::invalid_parameter, report.error);
  if (st.config.code) {
    storage::stored_zip stored;
    if (auto problem = st.config.code->store_zip(account, zip, stored); !problem.empty()) {
      constexpr std::string_view invalid = "invalid: ";
      if (problem.compare(0, invalid.size(), invalid) == 0)
        return make_error(ec::invalid_parameter,
                          "Could not unzip uploaded file. Please check your file, then try to "
                          "upload again. ("
                            + problem.substr(invalid.size()) + ")");
      config::logger("actors")->error("registry failed to store code: {}", problem);
      return make_error(ec::storage_failure, "Failed to store the function code");
    }
    r.code_sha256_hex = stored.sha256_hex;
    r.code_sha256 = stored.sha256_base64;
    r.code_image = stored.image;
    return {};
  }
  auto digest = storage::sha256(zip);
  r.code_sha256_hex = storage::to_hex(digest);
  r.code_sha256 = storage::base64_encode(storage::as_bytes(digest));
  r.code_image.clear();
  if (!zip_in_use(st, r.code_sha256_hex))
    if (auto s = st.store->put_code(r.code_sha256_hex, zip); !s.ok()) {
      config::logger("actors")->error("registry failed to store code: {}", s.error);
      return make_error(ec::storage_failure, "Failed to store the function code");
    }
  return {};
}

// Deletes a zip nothing references any more.
void delete_code(self_ptr self, const std::string& account, const std::string& hex) {
  auto& st = self->state;
  if (st.config.code) {
    if (auto problem = st.config.code->remove_zip(account, hex); !problem.empty())
      // Unreferenced chunks are collected again later, so this leaks nothing.
      config::logger("actors")->warn("registry could not remove unused code: {}", problem);
    return;
  }
  if (zip_in_use(st, hex))
    return;
  if (auto s = st.store->remove_code(hex); !s.ok())
    // The next startup removes unreferenced code, so this leaks nothing.
    config::logger("actors")->warn("registry could not remove unused code: {}", s.error);
}

// Counts a reference of a record to its zip (image functions hold none: a
// pushed image stays with its repository tag).
void retain_code(registry_state& st, const function_record& r) {
  if (r.package_type != "Image" && !r.code_sha256_hex.empty())
    ++st.code_refs[code_key(r.account_id, r.code_sha256_hex)];
}

// Drops one reference to a stored zip and deletes it when unused.
void release_code(self_ptr self, const function_record& r) {
  auto& st = self->state;
  if (r.package_type == "Image" || r.code_sha256_hex.empty())
    return;
  auto it = st.code_refs.find(code_key(r.account_id, r.code_sha256_hex));
  if (it != st.code_refs.end() && --it->second > 0)
    return;
  if (it != st.code_refs.end())
    st.code_refs.erase(it);
  delete_code(self, r.account_id, r.code_sha256_hex);
}

// Removes code stored for a request that then failed, unless it is in use.
void discard_new_code(self_ptr self, const function_record& r) {
  if (r.package_type == "Image" || r.code_sha256_hex.empty())
    return;
  if (self->state.code_refs.count(code_key(r.account_id, r.code_sha256_hex)) == 0)
    delete_code(self, r.account_id, r.code_sha256_hex);
}

// Tells every subscribed cache that a function changed; `revision` is its
// RevisionId now (empty when it was deleted). Actor messages between two
// actors arrive in order, so a cache that asked for the old record before the
// change gets the answer first and the invalidate second.
void announce_change(self_ptr self, const std::string& account, const std::string& name,
                     const std::string& revision) {
  for (const auto& listener : self->state.listeners)
    self->send(listener, invalidate_atom::value, account, name, revision);
}

std::string new_timestamp(const registry_state& st) {
  return storage::format_last_modified(st.config.now_ms());
}

// The codec checked the form of a dead-letter target; here it must belong
// to the function's own account and region (a queue elsewhere is not ours to
// write to).
caf::error check_dead_letter(const registry_state& st, const std::string& account,
                             const std::string& target) {
  if (target.empty())
    return {};
  auto t = transport::lambda::parse_delivery_target(target);
  if (!t || t->account_id != account || t->region != st.config.region)
    return make_error(ec::invalid_parameter,
                      "The dead-letter target ARN " + target
                        + " is invalid: it must be a queue of the function's own account ("
                        + account + ") and region (" + st.config.region + ").");
  return {};
}

// The command, working directory and environment of an image function:
// the image's ENTRYPOINT, CMD and WORKDIR unless ImageConfig overrides them.
void apply_image(function_record& r, const storage::container_config& image) {
  const auto& c = r.image_config;
  r.image_argv = c.entry_point_set ? c.entry_point : image.entrypoint;
  const auto& cmd = c.command_set ? c.command : image.cmd;
  r.image_argv.insert(r.image_argv.end(), cmd.begin(), cmd.end());
  r.image_workdir = c.working_directory_set && !c.working_directory.empty()
                      ? c.working_directory
                      : (image.working_dir.empty() ? "/" : image.working_dir);
  r.image_env = image.env;
}

// Finds the pushed image an ImageUri names (in the caller's own account) and
// points the record at it.
caf::error resolve_image(self_ptr self, const std::string& account, const std::string& uri,
                         function_record& r) {
  auto& st = self->state;
  if (!st.config.code)
    return make_error(ec::invalid_parameter, "This node does not store container images");
  transport::lambda::image_ref ref;
  if (auto e = transport::lambda::parse_image_uri(uri, account, st.config.region, ref))
    return make_error(ec::invalid_parameter, e->message);
  storage::pushed_image image;
  auto problem = st.config.code->resolve_image(account, ref.repository,
                                               ref.tag.empty() ? ref.digest : ref.tag, image);
  if (problem == "not found")
    return make_error(ec::invalid_parameter, "Source image " + uri
                                               + " does not exist. Provide a valid source image.");
  if (!problem.empty()) {
    config::logger("actors")->error("registry failed to read image {}: {}", uri, problem);
    return make_error(ec::storage_failure, "Failed to read the image");
  }
  r.image_uri = uri;
  r.resolved_image_uri = account + ".dkr.ecr." + st.config.region + ".amazonaws.com/"
                         + ref.repository + "@" + image.digest;
  r.code_image = image.image;
  r.code_sha256_hex = image.digest.substr(image.digest.find(':') + 1);
  r.code_sha256 = r.code_sha256_hex;
  r.code_size = 0;
  apply_image(r, image.config);
  return {};
}

// Applies a changed ImageConfig with the image the function is pinned to.
caf::error reapply_image(self_ptr self, function_record& r) {
  auto& st = self->state;
  auto at = r.resolved_image_uri.rfind('@');
  auto slash = r.resolved_image_uri.find('/');
  if (!st.config.code || at == std::string::npos || slash == std::string::npos)
    return make_error(ec::storage_failure, "The function's image is not known");
  storage::pushed_image image;
  if (auto problem = st.config.code->resolve_image(
        r.account_id, r.resolved_image_uri.substr(slash + 1, at - slash - 1),
        r.resolved_image_uri.substr(at + 1), image);
      !problem.empty())
    return make_error(ec::invalid_parameter,
                      "Source image " + r.image_uri
                        + " does not exist. Provide a valid source image.");
  apply_image(r, image.config);
  return {};
}

caf::result<function_record> create(self_ptr self, const std::string& account,
                                    function_spec& spec) {
  auto& st = self->state;
  auto& fns = st.functions[account];
  if (fns.count(spec.name))
    return make_error(ec::resource_conflict, "Function already exist: " + spec.name);
  const bool image = spec.package_type == "Image";
  if (!image && !vmm::find_runtime(spec.runtime))
    return runtime_unsupported(spec.runtime);
  if (auto err = check_dead_letter(st, account, spec.dead_letter_target))
    return err;
  if (account_code_size(st, account) + spec.zip.size() > st.config.total_code_size)
    return make_error(ec::code_storage_exceeded, "Code storage limit exceeded.");
  function_record r;
  r.account_id = account;
  r.image_config = spec.image_config;
  if (auto err = image ? resolve_image(self, account, spec.image_uri, r)
                       : store_code(self, account, spec.zip, r))
    return err;
  r.name = spec.name;
  r.runtime = spec.runtime;
  r.role = spec.role;
  r.handler = spec.handler;
  r.description = spec.description;
  r.timeout = spec.timeout;
  r.memory_size = spec.memory_size;
  r.ephemeral_storage = spec.ephemeral_storage;
  r.environment = spec.environment;
  r.has_environment = spec.has_environment;
  r.architectures = spec.architectures;
  r.package_type = spec.package_type;
  r.dead_letter_target = spec.dead_letter_target;
  if (!image)
    r.code_size = static_cast<int64_t>(spec.zip.size());
  r.last_modified = new_timestamp(st);
  r.revision_id = storage::random_uuid();
  if (auto s = st.store->put_function(r); !s.ok()) {
    config::logger("actors")->error("registry failed to store function {}: {}", r.name, s.error);
    discard_new_code(self, r);
    return make_error(ec::storage_failure, "Failed to store the function");
  }
  retain_code(st, r);
  announce_change(self, account, r.name, r.revision_id);
  config::logger("actors")->info("registry created function {} in account {}", r.name, account);
  return fns.emplace(r.name, r).first->second;
}

function_record* find(registry_state& st, const std::string& account, const std::string& name) {
  auto a = st.functions.find(account);
  if (a == st.functions.end())
    return nullptr;
  auto f = a->second.find(name);
  return f == a->second.end() ? nullptr : &f->second;
}

caf::error check_revision(const function_record& r, const std::optional<std::string>& revision) {
  if (revision && *revision != r.revision_id)
    return make_error(ec::precondition_failed,
                      "The Revision Id provided does not match the latest Revision Id. Call the "
                      "GetFunction/GetAlias API to retrieve the latest Revision Id");
  return {};
}

caf::result<function_record> update_code(self_ptr self, const std::string& account,
                                         const std::string& name, code_update& update) {
  auto& st = self->state;
  auto* current = find(st, account, name);
  if (!current)
    return not_found(st, account, name);
  if (auto err = check_revision(*current, update.revision_id))
    return err;
  if (auto e = transport::lambda::check_code_update(*current, update))
    return make_error(ec::invalid_parameter, e->message);
  if (current->package_type == "Image") {
    auto next = *current;
    if (auto err = resolve_image(self, account, update.image_uri, next))
      return err;
    if (update.dry_run)
      return next;
    next.last_modified = new_timestamp(st);
    next.revision_id = storage::random_uuid();
    if (auto s = st.store->put_function(next); !s.ok()) {
      config::logger("actors")->error("registry failed to store function {}: {}", name, s.error);
      return make_error(ec::storage_failure, "Failed to store the function");
    }
    *current = next;
    announce_change(self, account, name, next.revision_id);
    config::logger("actors")->info("registry updated the image of function {} in account {}",
                                   name, account);
    return next;
  }
  if (account_code_size(st, account) - static_cast<uint64_t>(current->code_size)
        + update.zip.size()
      > st.config.total_code_size)
    return make_error(ec::code_storage_exceeded, "Code storage limit exceeded.");
  if (update.dry_run) {
    auto report = storage::check_zip(update.zip, st.config.code_size_unzipped);
    if (!report.ok)
      return make_error(ec::invalid_parameter, report.error);
    auto preview = *current;
    auto digest = storage::sha256(update.zip);
    preview.code_sha256 = storage::base64_encode(storage::as_bytes(digest));
    preview.code_size = static_cast<int64_t>(update.zip.size());
    return preview;
  }
  auto next = *current;
  if (auto err = store_code(self, account, update.zip, next))
    return err;
  next.code_size = static_cast<int64_t>(update.zip.size());
  next.last_modified = new_timestamp(st);
  next.revision_id = storage::random_uuid();
  if (auto s = st.store->put_function(next); !s.ok()) {
    config::logger("actors")->error("registry failed to store function {}: {}", name, s.error);
    discard_new_code(self, next);
    return make_error(ec::storage_failure, "Failed to store the function");
  }
  retain_code(st, next);
  auto old = *current;
  *current = next;
  release_code(self, old);
  announce_change(self, account, name, next.revision_id);
  config::logger("actors")->info("registry updated code of function {} in account {}", name,
                                 account);
  return next;
}

caf::result<function_record> update_config(self_ptr self, const std::string& account,
                                           const std::string& name,
                                           configuration_patch& patch) {
  auto& st = self->state;
  auto* current = find(st, account, name);
  if (!current)
    return not_found(st, account, name);
  if (auto err = check_revision(*current, patch.revision_id))
    return err;
  if (auto e = transport::lambda::check_configuration_patch(*current, patch))
    return make_error(ec::invalid_parameter, e->message);
  if (patch.runtime && !vmm::find_runtime(*patch.runtime))
    return runtime_unsupported(*patch.runtime);
  if (patch.dead_letter_target)
    if (auto err = check_dead_letter(st, account, *patch.dead_letter_target))
      return err;
  auto next = *current;
  if (patch.runtime) next.runtime = *patch.runtime;
  if (patch.role) next.role = *patch.role;
  if (patch.handler) next.handler = *patch.handler;
  if (patch.description) next.description = *patch.description;
  if (patch.timeout) next.timeout = *patch.timeout;
  if (patch.memory_size) next.memory_size = *patch.memory_size;
  if (patch.ephemeral_storage) next.ephemeral_storage = *patch.ephemeral_storage;
  if (patch.environment) {
    next.environment = *patch.environment;
    next.has_environment = true;
  }
  if (patch.dead_letter_target) next.dead_letter_target = *patch.dead_letter_target;
  if (patch.image_config) {
    next.image_config = *patch.image_config;
    if (auto err = reapply_image(self, next))
      return err;
  }
  next.last_modified = new_timestamp(st);
  next.revision_id = storage::random_uuid();
  if (auto s = st.store->put_function(next); !s.ok()) {
    config::logger("actors")->error("registry failed to store function {}: {}", name, s.error);
    return make_error(ec::storage_failure, "Failed to store the function");
  }
  *current = next;
  announce_change(self, account, name, next.revision_id);
  config::logger("actors")->info("registry updated configuration of function {} in account {}",
                                 name, account);
  return next;
}

caf::result<function_record> set_concurrency(self_ptr self, const std::string& account,
                                             const std::string& name, int32_t value) {
  auto& st = self->state;
  auto* current = find(st, account, name);
  if (!current)
    return not_found(st, account, name);
  if (value >= 0) {
    uint64_t others = 0;
    for (const auto& [n, r] : st.functions[account])
      if (n != name && r.reserved_concurrency > 0)
        others += static_cast<uint64_t>(r.reserved_concurrency);
    if (others + static_cast<uint64_t>(value) + st.config.unreserved_minimum
        > st.config.account_concurrency)
      return make_error(ec::invalid_parameter,
                        "Specified ReservedConcurrentExecutions for function decreases account's "
                        "UnreservedConcurrentExecution below its minimum value of ["
                          + std::to_string(st.config.unreserved_minimum) + "].");
  }
  auto next = *current;
  next.reserved_concurrency = value;
  if (auto s = st.store->put_function(next); !s.ok()) {
    config::logger("actors")->error("registry failed to store function {}: {}", name, s.error);
    return make_error(ec::storage_failure, "Failed to store the function");
  }
  *current = next;
  if (st.config.counter)
    self->send(st.config.counter, reserve_atom::value, account, name, value);
  announce_change(self, account, name, next.revision_id);
  return next;
}

// AWS's answer when a function has no event invoke config (also when the
// function itself does not exist, for Get and Delete).
caf::error no_event_invoke_config(const registry_state& st, const std::string& account,
                                  const std::string& name) {
  return make_error(ec::resource_not_found,
                    "The function "
                      + transport::lambda::function_arn(st.config.region, account, name, "$LATEST")
                      + " doesn't have an EventInvokeConfig");
}

// A destination must be of the function's own account and region and, for a
// function, exist and not be the function itself (as AWS checks).
caf::error check_destination(registry_state& st, const std::string& account,
                             const std::string& name, const std::string& arn) {
  if (arn.empty())
    return {};
  auto t = transport::lambda::parse_delivery_target(arn);
  if (!t || t->account_id != account || t->region != st.config.region)
    return make_error(ec::invalid_parameter,
                      "The destination ARN " + arn
                        + " is invalid: it must be in the function's own account (" + account
                        + ") and region (" + st.config.region + ").");
  if (t->type == delivery_target::kind::function) {
    if (t->name == name)
      return make_error(ec::invalid_parameter,
                        "You can't specify the function as a destination for itself.");
    if (!find(st, account, t->name))
      return make_error(ec::invalid_parameter, "The destination ARN " + arn + " is invalid.");
  }
  return {};
}

caf::result<function_record> put_event_invoke(self_ptr self, const std::string& account,
                                              const std::string& name,
                                              const event_invoke_update& update) {
  auto& st = self->state;
  auto* current = find(st, account, name);
  if (!current)
    return make_error(ec::resource_not_found, "The function doesn't exist.");
  if (!update.replace && !current->event_invoke)
    return no_event_invoke_config(st, account, name);
  for (const auto& arn : {update.on_success, update.on_failure})
    if (arn)
      if (auto err = check_destination(st, account, name, *arn))
        return err;
  storage::event_invoke_config settings;
  if (update.replace) {
    // Put: what the request leaves out is not set.
    settings.maximum_retry_attempts = -1;
    settings.maximum_event_age_seconds = -1;
  } else {
    settings = *current->event_invoke;
  }
  if (update.maximum_retry_attempts)
    settings.maximum_retry_attempts = *update.maximum_retry_attempts;
  if (update.maximum_event_age_seconds)
    settings.maximum_event_age_seconds = *update.maximum_event_age_seconds;
  if (update.on_success)
    settings.on_success = *update.on_success;
  if (update.on_failure)
    settings.on_failure = *update.on_failure;
  settings.last_modified_ms = st.config.now_ms();
  // LastModified and RevisionId of the function stay: AWS keeps them for
  // event invoke config changes, and the assignment keys warm environments
  // by RevisionId.
  auto next = *current;
  next.event_invoke = settings;
  if (auto s = st.store->put_function(next); !s.ok()) {
    config::logger("actors")->error("registry failed to store function {}: {}", name, s.error);
    return make_error(ec::storage_failure, "Failed to store the function");
  }
  *current = next;
  announce_change(self, account, name, next.revision_id);
  config::logger("actors")->info("registry {} the event invoke config of function {} in account {}",
                                 update.replace ? "put" : "updated", name, account);
  return next;
}

caf::result<function_record> delete_event_invoke(self_ptr self, const std::string& account,
                                                 const std::string& name) {
  auto& st = self->state;
  auto* current = find(st, account, name);
  if (!current || !current->event_invoke)
    return no_event_invoke_config(st, account, name);
  auto next = *current;
  next.event_invoke.reset();
  if (auto s = st.store->put_function(next); !s.ok()) {
    config::logger("actors")->error("registry failed to store function {}: {}", name, s.error);
    return make_error(ec::storage_failure, "Failed to store the function");
  }
  *current = next;
  announce_change(self, account, name, next.revision_id);
  config::logger("actors")->info("registry deleted the event invoke config of function {} in "
                                 "account {}",
                                 name, account);
  return next;
}

caf::result<bool> remove(self_ptr self, const std::string& account, const std::string& name) {
  auto& st = self->state;
  auto* current = find(st, account, name);
  if (!current)
    return not_found(st, account, name);
  if (auto s = st.store->remove_function(account, name); !s.ok()) {
    config::logger("actors")->error("registry failed to delete function {}: {}", name, s.error);
    return make_error(ec::storage_failure, "Failed to delete the function");
  }
  auto old = *current;
  bool had_reservation = current->reserved_concurrency >= 0;
  st.functions[account].erase(name);
  if (had_reservation && st.config.counter)
    self->send(st.config.counter, reserve_atom::value, account, name, int32_t{-1});
  release_code(self, old);
  announce_change(self, account, name, std::string{});
  config::logger("actors")->info("registry deleted function {} in account {}", name, account);
  return true;
}

} // namespace

registry_actor::behavior_type registry(self_ptr self, registry_config cfg,
                                       std::shared_ptr<storage::function_store> store,
                                       std::vector<function_record> loaded) {
  auto& st = self->state;
  st.config = std::move(cfg);
  st.store = std::move(store);
  self->set_down_handler([self](const caf::down_msg& msg) {
    auto& ls = self->state.listeners;
    ls.erase(std::remove_if(ls.begin(), ls.end(),
                            [&](const metadata_listener_actor& l) {
                              return l.address() == msg.source;
                            }),
             ls.end());
  });
  for (auto& r : loaded) {
    retain_code(st, r);
    auto account = r.account_id;
    auto name = r.name;
    st.functions[account].emplace(std::move(name), std::move(r));
  }
  return {
    [=](create_atom, const std::string& account,
        function_spec& spec) -> caf::result<function_record> {
      return create(self, account, spec);
    },
    [=](get_atom, const std::string& account,
        const std::string& name) -> caf::result<function_record> {
      if (auto* r = find(self->state, account, name))
        return *r;
      return not_found(self->state, account, name);
    },
    [=](list_atom, const std::string& account, const std::string& marker,
        int32_t max_items) -> caf::result<function_page> {
      function_page page;
      auto a = self->state.functions.find(account);
      if (a == self->state.functions.end())
        return page;
      auto& fns = a->second;
      auto it = marker.empty() ? fns.begin() : fns.upper_bound(marker);
      for (; it != fns.end() && static_cast<int32_t>(page.functions.size()) < max_items; ++it)
        page.functions.push_back(it->second);
      if (it != fns.end() && !page.functions.empty())
        page.next_marker = page.functions.back().name;
      return page;
    },
    [=](update_code_atom, const std::string& account, const std::string& name,
        code_update& update) -> caf::result<function_record> {
      return update_code(self, account, name, update);
    },
    [=](update_config_atom, const std::string& account, const std::string& name,
        configuration_patch& patch) -> caf::result<function_record> {
      return update_config(self, account, name, patch);
    },
    [=](delete_atom, const std::string& account, const std::string& name) -> caf::result<bool> {
      return remove(self, account, name);
    },
    [=](fetch_code_atom, const std::string& account, const std::string& name,
        const std::string& sha_hex) -> caf::result<std::string> {
      auto* r = find(self->state, account, name);
      if (!r || r->package_type == "Image" || r->code_sha256_hex != sha_hex)
        return not_found(self->state, account, name);
      std::string code;
      if (self->state.config.code) {
        if (auto problem = self->state.config.code->read_zip(account, sha_hex, code);
            !problem.empty()) {
          config::logger("actors")->error("registry failed to read code: {}", problem);
          return make_error(ec::storage_failure, "Failed to read the function code");
        }
        return code;
      }
      if (auto s = self->state.store->get_code(sha_hex, code); !s.ok()) {
        config::logger("actors")->error("registry failed to read code: {}", s.error);
        return make_error(ec::storage_failure, "Failed to read the function code");
      }
      return code;
    },
    [=](usage_atom, const std::string& account) -> caf::result<account_usage> {
      account_usage usage;
      usage.total_code_size = account_code_size(self->state, account);
      if (auto a = self->state.functions.find(account); a != self->state.functions.end())
        usage.function_count = a->second.size();
      return usage;
    },
    [=](concurrency_atom, const std::string& account, const std::string& name,
        int32_t value) -> caf::result<function_record> {
      return set_concurrency(self, account, name, value);
    },
    [=](event_config_atom, const std::string& account, const std::string& name,
        const event_invoke_update& update) -> caf::result<function_record> {
      return put_event_invoke(self, account, name, update);
    },
    [=](event_config_atom, delete_atom, const std::string& account,
        const std::string& name) -> caf::result<function_record> {
      return delete_event_invoke(self, account, name);
    },
    [=](subscribe_atom, metadata_listener_actor listener) {
      // A listener that goes away is forgotten.
      self->monitor(listener);
      self->state.listeners.push_back(std::move(listener));
    },
  };
}

registry_actor spawn_registry(caf::actor_system& sys, registry_config cfg,
                              std::shared_ptr<storage::function_store> store,
                              std::vector<function_record> loaded) {
  return sys.spawn(registry, std::move(cfg), std::move(store), std::move(loaded));
}

} // namespace nimbus
