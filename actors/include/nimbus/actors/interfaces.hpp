#pragma once

/// Every typed actor interface of Nimbus, with the atoms they use and the type
/// ID block that registers all message types with CAF. One `//` line per
/// handler says what it does.

#include "nimbus/actors/messages.hpp"

#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <map>
#include <string>

namespace nimbus {

// -- atoms (verbs, at most 10 characters) -------------------------------------

using create_atom = caf::atom_constant<caf::atom("create")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using delete_atom = caf::atom_constant<caf::atom("delete")>;
using update_code_atom = caf::atom_constant<caf::atom("updcode")>;
using update_config_atom = caf::atom_constant<caf::atom("updconf")>;
using fetch_code_atom = caf::atom_constant<caf::atom("fetchcode")>;
using usage_atom = caf::atom_constant<caf::atom("usage")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using invalidate_atom = caf::atom_constant<caf::atom("invalidate")>;
using init_atom = caf::atom_constant<caf::atom("init")>;
using invoke_atom = caf::atom_constant<caf::atom("invoke")>;
using destroy_atom = caf::atom_constant<caf::atom("destroy")>;
using capacity_atom = caf::atom_constant<caf::atom("capacity")>;
// Internal events of an ENVIRONMENT, sent by its own threads.
using rt_ready_atom = caf::atom_constant<caf::atom("rtready")>;
using rt_response_atom = caf::atom_constant<caf::atom("rtresponse")>;
using rt_error_atom = caf::atom_constant<caf::atom("rterror")>;
using rt_init_error_atom = caf::atom_constant<caf::atom("rtiniterr")>;
using sandbox_exit_atom = caf::atom_constant<caf::atom("sbxexit")>;
using built_atom = caf::atom_constant<caf::atom("built")>;
using stopped_atom = caf::atom_constant<caf::atom("stopped")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using acquire_atom = caf::atom_constant<caf::atom("acquire")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using scale_atom = caf::atom_constant<caf::atom("scale")>;
using reserve_atom = caf::atom_constant<caf::atom("reserve")>;
using register_atom = caf::atom_constant<caf::atom("register")>;
using place_atom = caf::atom_constant<caf::atom("place")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using concurrency_atom = caf::atom_constant<caf::atom("concur")>;
using event_config_atom = caf::atom_constant<caf::atom("evconfig")>;
using enqueue_atom = caf::atom_constant<caf::atom("enqueue")>;
using lease_atom = caf::atom_constant<caf::atom("lease")>;
using complete_atom = caf::atom_constant<caf::atom("complete")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using committed_atom = caf::atom_constant<caf::atom("committed")>;
using build_atom = caf::atom_constant<caf::atom("build")>;
using poll_atom = caf::atom_constant<caf::atom("poll")>;
using retire_atom = caf::atom_constant<caf::atom("retire")>;
using send_atom = caf::atom_constant<caf::atom("send")>;
using receive_atom = caf::atom_constant<caf::atom("receive")>;

// -- interfaces ---------------------------------------------------------------

/// The METADATA LISTENER actor interface: whoever caches function metadata
/// (frontends) or runs functions (assignment) and must hear when a function
/// changes.
using metadata_listener_actor = caf::typed_actor<
  // Drops cached metadata of one function (account id, name, its RevisionId
  // after the change: empty when it was deleted). Changes that keep the
  // RevisionId (concurrency, event invoke config) leave environments warm.
  caf::reacts_to<invalidate_atom, std::string, std::string, std::string>>;

/// The REGISTRY actor interface: the single source of truth for functions and
/// their code. All handlers take the caller's account id first; a function is
/// only ever visible to its own account.
using registry_actor = caf::typed_actor<
  // Creates a function from a validated spec; fails if it exists.
  caf::replies_to<create_atom, std::string, transport::lambda::function_spec>::with<
    storage::function_record>,
  // Returns one function by name.
  caf::replies_to<get_atom, std::string, std::string>::with<storage::function_record>,
  // Lists functions after a marker, at most the given count.
  caf::replies_to<list_atom, std::string, std::string, int32_t>::with<function_page>,
  // Replaces a function's code.
  caf::replies_to<update_code_atom, std::string, std::string,
                  transport::lambda::code_update>::with<storage::function_record>,
  // Changes a function's configuration.
  caf::replies_to<update_config_atom, std::string, std::string,
                  transport::lambda::configuration_patch>::with<storage::function_record>,
  // Deletes a function and, when nothing else uses it, its code.
  caf::replies_to<delete_atom, std::string, std::string>::with<bool>,
  // Returns a function's code (the zip) if its hex SHA-256 still matches.
  caf::replies_to<fetch_code_atom, std::string, std::string, std::string>::with<std::string>,
  // Reports what an account uses.
  caf::replies_to<usage_atom, std::string>::with<account_usage>,
  // Sends the listener an invalidate for every later change of a function.
  caf::reacts_to<subscribe_atom, metadata_listener_actor>,
  // Sets (>= 0) or removes (-1) a function's reserved concurrency.
  caf::replies_to<concurrency_atom, std::string, std::string, int32_t>::with<
    storage::function_record>,
  // Puts (replaces) or updates (merges) a function's event invoke config.
  caf::replies_to<event_config_atom, std::string, std::string,
                  transport::lambda::event_invoke_update>::with<storage::function_record>,
  // Deletes a function's event invoke config; fails if it has none.
  caf::replies_to<event_config_atom, delete_atom, std::string, std::string>::with<
    storage::function_record>>;

/// The FRONTEND actor interface: authenticates, routes and answers API
/// requests handed over by the HTTP server.
using frontend_actor = metadata_listener_actor::extend<
  // Answers one HTTP request.
  caf::replies_to<transport::http_request>::with<transport::http_response>,
  // Answers one HTTP request through its respond function (the HTTP server's
  // path: no reply message).
  caf::reacts_to<http_exchange>>;

/// The ENVIRONMENT actor interface: one sandbox with one runtime in it. It
/// runs on the scheduler; the blocking work of making and removing a sandbox
/// runs on a helper thread that reports back with `built` and `stopped`.
using environment_actor = caf::typed_actor<
  // Starts the sandbox and the runtime; answers when the runtime first asks
  // for work (INIT done) or fails with the init error.
  caf::replies_to<init_atom>::with<environment_ready>,
  // Runs one invocation; one at a time.
  caf::replies_to<invoke_atom, invocation_request>::with<invocation_result>,
  // Shuts the environment down (SIGTERM, 2 s, SIGKILL) and removes it.
  caf::replies_to<destroy_atom>::with<bool>,
  // Internal: the runtime's first /next.
  caf::reacts_to<rt_ready_atom>,
  // Internal: the runtime answered (request id, body).
  caf::reacts_to<rt_response_atom, std::string, std::string>,
  // Internal: the runtime reported an error (request id, type, body).
  caf::reacts_to<rt_error_atom, std::string, std::string, std::string>,
  // Internal: the runtime could not initialize (type, body).
  caf::reacts_to<rt_init_error_atom, std::string, std::string>,
  // Internal: the sandbox ended (exited normally?, code or signal).
  caf::reacts_to<sandbox_exit_atom, bool, int32_t>,
  // Internal: the helper thread made the sandbox (or failed: the init error).
  caf::reacts_to<built_atom, caf::error>,
  // Internal: the helper thread removed the sandbox.
  caf::reacts_to<stopped_atom>,
  // Internal: a deadline may have passed (0: init, 1: invocation,
  // all ones: shutdown grace).
  caf::reacts_to<timeout_atom, uint64_t>,
  // Internal: the idle timer fired; freeze if idle long enough.
  caf::reacts_to<idle_atom, uint64_t>>;

/// The COUNTER actor interface: concurrency leases per account and function,
/// and the scale-rate token buckets for new environments.
using counter_actor = caf::typed_actor<
  // Takes a lease for one invocation (account, function); fails with
  // ec::throttled and the AWS Reason when over a limit.
  caf::replies_to<acquire_atom, std::string, std::string>::with<uint64_t>,
  // Returns a lease.
  caf::reacts_to<release_atom, uint64_t>,
  // Takes a token to create a new environment (account, function).
  caf::replies_to<scale_atom, std::string, std::string>::with<bool>,
  // A function's reserved concurrency changed (-1: none).
  caf::reacts_to<reserve_atom, std::string, std::string, int32_t>,
  // Reports an account's figures.
  caf::replies_to<stats_atom, std::string>::with<counter_stats>>;

/// The WORKER actor interface: the execution environments of one host.
using worker_actor = caf::typed_actor<
  // Creates an environment and runs its INIT.
  caf::replies_to<create_atom, environment_spec>::with<environment_ready>,
  // Runs an invocation in an environment.
  caf::replies_to<invoke_atom, std::string, invocation_request>::with<invocation_result>,
  // Destroys an environment.
  caf::replies_to<destroy_atom, std::string>::with<bool>,
  // Reports capacity and use.
  caf::replies_to<capacity_atom>::with<worker_capacity>>;

/// The PLACEMENT actor interface: chooses the worker for each new
/// environment.
using placement_actor = caf::typed_actor<
  // A worker joins the pool.
  caf::reacts_to<register_atom, worker_actor>,
  // Chooses a worker for an environment of the given memory (MB).
  caf::replies_to<place_atom, int32_t>::with<worker_actor>>;

/// The ASSIGNMENT partition actor interface: the execution environments of
/// the function versions hashed to it. It is also a metadata listener: a
/// changed function's environments are retired.
using assignment_actor = metadata_listener_actor::extend<
  // Runs an invocation on a warm environment, or on a new one.
  caf::replies_to<invoke_atom, invoke_order>::with<invoke_outcome>,
  // Counts environments by state ("initializing", "idle", "busy", "retiring").
  caf::replies_to<stats_atom>::with<std::map<std::string, uint64_t>>,
  // Internal: periodic retirement of expired environments.
  caf::reacts_to<tick_atom>>;

/// A QUEUE PARTITION actor interface: durable queue of async events for the
/// functions hashed to it (ARCHITECTURE.md §1). Every state change is in its
/// durable log before it is acknowledged.
using queue_actor = caf::typed_actor<
  // Stores an event durably; answers with its request id once it is on disk.
  caf::replies_to<enqueue_atom, queued_event>::with<std::string>,
  // Leases up to N visible events (waits until there is one); the lease is
  // durable before the answer.
  caf::replies_to<lease_atom, uint32_t>::with<std::vector<queued_event>>,
  // The same without waiting: an empty answer when nothing is visible (the
  // bool is ignored; reads of Nimbus message queues).
  caf::replies_to<lease_atom, uint32_t, bool>::with<std::vector<queued_event>>,
  // Finishes a leased event (seq, lease, condition); false if the lease is
  // no longer current (counted as a stale completion).
  caf::replies_to<complete_atom, uint64_t, uint64_t, std::string>::with<bool>,
  // Puts a leased event back until a Unix ms time, with its updated
  // counters; false if the lease is no longer current.
  caf::replies_to<retry_atom, queued_event, int64_t>::with<bool>,
  // Reports depth, oldest age and counters.
  caf::replies_to<stats_atom>::with<queue_stats>,
  // Internal: a log append is durable (token, seq, error).
  caf::reacts_to<committed_atom, uint64_t, uint64_t, std::string>,
  // Internal: expire leases, wake delayed events, trim the log.
  caf::reacts_to<tick_atom>>;

/// A POLLER actor interface: takes events from one queue partition and runs
/// them through the synchronous invoke path.
using poller_actor = caf::typed_actor<
  // Internal: lease the next event.
  caf::reacts_to<poll_atom>,
  // Finish the current event, then stop.
  caf::reacts_to<retire_atom>>;

/// The QUEUE MANAGER actor interface: owns the queue partitions and their
/// pollers, routes events to partitions, scales pollers with backlog.
/// CODE BUILDER: flattens one pushed container image archive into the code
/// store, off the scheduler (a detached actor: it blocks for seconds).
using code_builder_actor = caf::typed_actor<
  // Flattens and stores the archive at a path for (account, repository,
  // tag); answers the push response as JSON.
  caf::replies_to<build_atom, std::string, std::string, std::string, std::string>::with<
    std::string>>;

using queue_manager_actor = caf::typed_actor<
  // Stores an event in its function's partition (see queue_actor).
  caf::replies_to<enqueue_atom, queued_event>::with<std::string>,
  // Sums the partitions' counters; also reports the number of pollers.
  caf::replies_to<stats_atom>::with<queue_stats, uint32_t>,
  // Stores a message in a Nimbus message queue (queue name; the event holds
  // account, body and attributes); answers its message id once durable.
  caf::replies_to<send_atom, std::string, queued_event>::with<std::string>,
  // Receives up to N messages of a queue (account, queue name, N); each stays
  // invisible for 30 s unless deleted.
  caf::replies_to<receive_atom, std::string, std::string, uint32_t>::with<
    std::vector<queued_event>>,
  // Deletes a received message (account, queue name, seq, lease); false for
  // an unknown or expired receipt.
  caf::replies_to<complete_atom, std::string, std::string, uint64_t, uint64_t>::with<bool>,
  // Internal: scale pollers.
  caf::reacts_to<tick_atom>>;

} // namespace nimbus

// -- type IDs -----------------------------------------------------------------

CAF_BEGIN_TYPE_ID_BLOCK(nimbus, caf::first_custom_type_id)
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::http_request))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::http_response))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::lambda::function_spec))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::lambda::configuration_patch))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::lambda::code_update))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::transport::lambda::event_invoke_update))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::storage::function_record))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::function_page))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::account_usage))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::environment_spec))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::environment_ready))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::invocation_request))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::invocation_result))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::worker_capacity))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::invoke_order))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::invoke_outcome))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::counter_stats))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::counter_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::placement_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::assignment_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::environment_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::worker_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::metadata_listener_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::registry_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::frontend_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::queued_event))
  CAF_ADD_TYPE_ID(nimbus, (std::vector<nimbus::queued_event>))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::queue_stats))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::queue_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::poller_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::queue_manager_actor))
  CAF_ADD_TYPE_ID(nimbus, (nimbus::code_builder_actor))
CAF_END_TYPE_ID_BLOCK(nimbus)
