#include "nimbus/actors/frontend.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/json.hpp"
#include "nimbus/transport/lambda_api.hpp"
#include "nimbus/transport/sigv4.hpp"
#include "nimbus/transport/uri.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace nimbus {

using namespace transport;
using namespace transport::lambda;
using storage::function_record;

std::string validate(const frontend_config& cfg) {
  if (cfg.accounts.empty())
    return "frontend: no accounts configured";
  if (!cfg.now)
    return "frontend: clock missing";
  if (!cfg.metrics)
    return "frontend: metrics sink missing";
  return {};
}

namespace {

using self_ptr = frontend_actor::stateful_pointer<frontend_state>;
using response_promise = caf::typed_response_promise<http_response>;

/// How long a GetFunction code link stays valid (as on AWS).
constexpr std::chrono::minutes download_link_lifetime{10};

// Maps an actor error to the AWS error a client sees.
api_error to_api_error(const caf::error& err) {
  if (err.category() == caf::atom("nimbus")) {
    auto msg = error_message(err);
    switch (static_cast<ec>(err.code())) {
      case ec::invalid_parameter: return {400, "InvalidParameterValueException", msg};
      case ec::invalid_request_content: return {400, "InvalidRequestContentException", msg};
      case ec::resource_not_found: return {404, "ResourceNotFoundException", msg};
      case ec::resource_conflict: return {409, "ResourceConflictException", msg};
      case ec::precondition_failed: return {412, "PreconditionFailedException", msg};
      case ec::code_storage_exceeded: return {400, "CodeStorageExceededException", msg};
      case ec::storage_failure:
      case ec::service_failure:
      case ec::init_failed:
      case ec::environment_unavailable:
      case ec::none: break;
    }
    return {500, "ServiceException", msg};
  }
  if (err == caf::sec::request_timeout)
    return {500, "ServiceException", "The service did not answer in time"};
  return {500, "ServiceException", "Internal service error"};
}

// Completes a request: records metrics and logs failures.
void finish(self_ptr self, response_promise& rp, std::string_view op_name,
            std::chrono::steady_clock::time_point start, http_response res) {
  auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
    std::chrono::steady_clock::now() - start);
  self->state.config.metrics->record(op_name, res.status, elapsed);
  if (res.status >= 500)
    config::logger("actors")->error("frontend answered {} with {}", op_name, res.status);
  rp.deliver(std::move(res));
}

void finish(self_ptr self, response_promise& rp, operation op,
            std::chrono::steady_clock::time_point start, http_response res) {
  finish(self, rp, operation_name(op), start, std::move(res));
}

// The {FunctionName} label resolved against the caller's account and region.
struct resolved_name {
  std::string name;
  std::optional<std::string> qualifier;
  std::optional<api_error> error;
};

resolved_name resolve(const frontend_state& st, const std::string& account,
                      const route& r, size_t max_length) {
  resolved_name out;
  auto ref = parse_function_name(r.function_name, max_length);
  if (!ref) {
    out.error = invalid_parameter("functionName", r.function_name,
                                  "Member must satisfy regular expression pattern: "
                                  "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                                  "(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?");
    return out;
  }
  out.name = ref->name;
  out.qualifier = ref->qualifier;
  if (auto q = r.param("Qualifier")) {
    if (out.qualifier && *out.qualifier != *q) {
      out.error = api_error{400, "InvalidParameterValueException",
                            "The derived qualifier from the function name does not match the "
                            "specified qualifier."};
      return out;
    }
    out.qualifier = *q;
  }
  // Another account's or region's ARN never reaches anything: to the caller it
  // is a function that does not exist.
  if ((!ref->account_id.empty() && ref->account_id != account)
      || (!ref->region.empty() && ref->region != st.config.region)) {
    out.error = api_error{404, "ResourceNotFoundException",
                          "Function not found: "
                            + function_arn(ref->region.empty() ? st.config.region : ref->region,
                                           ref->account_id, ref->name)};
    return out;
  }
  return out;
}

std::string download_signature(const frontend_state& st, const std::string& account,
                               const std::string& name, const std::string& hex,
                               const std::string& expires) {
  return storage::to_hex(
    storage::hmac_sha256(st.config.download_key, account + "/" + name + "/" + hex + "/" + expires));
}

// Caches a record read from the registry, evicting an arbitrary entry when
// full (a stale entry is impossible: the registry invalidates on change).
void remember(frontend_state& st, const std::pair<std::string, std::string>& key,
              const function_record& r) {
  if (st.cache.size() >= st.cache_capacity && st.cache.count(key) == 0)
    st.cache.erase(st.cache.begin());
  st.cache[key] = r;
}

std::string code_location(const frontend_state& st, const std::string& host,
                          const function_record& r) {
  auto expires = std::chrono::duration_cast<std::chrono::seconds>(
                   (st.config.now() + download_link_lifetime).time_since_epoch())
                   .count();
  auto exp = std::to_string(expires);
  return "http://" + host + "/nimbus/code/" + r.account_id + "/" + uri_encode(r.name) + "/"
         + r.code_sha256_hex + "?Expires=" + exp
         + "&Signature=" + download_signature(st, r.account_id, r.name, r.code_sha256_hex, exp);
}

api_error auth_failure(const sigv4::verify_result& v) {
  switch (v.error) {
    case sigv4::auth_error::missing_authentication:
      return {403, "MissingAuthenticationTokenException", "Missing Authentication Token"};
    case sigv4::auth_error::malformed:
      return {400, "IncompleteSignatureException", v.message};
    case sigv4::auth_error::unknown_access_key:
      return {403, "UnrecognizedClientException",
              "The security token included in the request is invalid."};
    case sigv4::auth_error::signature_mismatch:
      return {403, "InvalidSignatureException",
              "The request signature we calculated does not match the signature you provided. "
              "Check your AWS Secret Access Key and signing method. Consult the service "
              "documentation for details."};
    case sigv4::auth_error::expired:
    case sigv4::auth_error::wrong_scope:
      return {403, "InvalidSignatureException", v.message};
  }
  return {403, "InvalidSignatureException", v.message};
}

// Asks the registry and renders a record with `render`.
template <class Render, class... Ts>
void ask_registry(self_ptr self, response_promise rp, operation op,
                  std::chrono::steady_clock::time_point start, Render render, Ts&&... xs) {
  self->request(self->state.registry, self->state.config.request_timeout, std::forward<Ts>(xs)...)
    .then(
      [=](function_record& r) mutable { finish(self, rp, op, start, render(r)); },
      [=](caf::error& err) mutable {
        finish(self, rp, op, start, error_response(to_api_error(err)));
      });
}

caf::result<http_response> handle(self_ptr self, http_request& req) {
  auto start = std::chrono::steady_clock::now();
  auto& st = self->state;
  auto rp = self->make_response_promise<http_response>();
  auto m = match(req.method, req.target);
  if (!m.matched) {
    finish(self, rp, "Unknown", start,
           error_response({m.error.status, m.error.type, m.error.message}));
    return rp;
  }
  auto& r = *m.matched;
  auto op = r.op;
  auto answer = [&](http_response res) { finish(self, rp, op, start, std::move(res)); };
  auto fail = [&](const api_error& e) { answer(error_response(e)); };

  // -- public operations ------------------------------------------------------
  if (op == operation::health) {
    storage::json_writer w;
    w.begin_object().key("status").value("ok").key("node").value(st.config.node_name).end_object();
    answer(json_response(200, w.take()));
    return rp;
  }
  if (op == operation::metrics) {
    http_response res;
    res.body = st.config.metrics->render();
    res.body += "# HELP nimbus_frontend_metadata_cache_total Function metadata lookups, by "
                "where they were answered.\n"
                "# TYPE nimbus_frontend_metadata_cache_total counter\n"
                "nimbus_frontend_metadata_cache_total{result=\"hit\"} "
                + std::to_string(st.cache_hits) + "\nnimbus_frontend_metadata_cache_total{result=\"miss\"} "
                + std::to_string(st.cache_misses) + "\n";
    res.set_header("Content-Type", "text/plain; version=0.0.4");
    answer(std::move(res));
    return rp;
  }
  if (op == operation::download_code) {
    auto expires = r.param("Expires").value_or("");
    auto signature = r.param("Signature").value_or("");
    auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 st.config.now().time_since_epoch())
                 .count();
    const auto& account = r.labels[0];
    const auto& name = r.labels[1];
    const auto& hex = r.labels[2];
    bool valid = !expires.empty() && expires.size() < 20
                 && expires.find_first_not_of("0123456789") == std::string::npos
                 && std::stoll(expires) >= now
                 && storage::constant_time_equal(
                   signature, download_signature(st, account, name, hex, expires));
    if (!valid) {
      fail({403, "AccessDeniedException", "The code link is invalid or has expired"});
      return rp;
    }
    self->request(st.registry, st.config.request_timeout, fetch_code_atom::value, account, name, hex)
      .then(
        [=](std::string& code) mutable {
          http_response res;
          res.body = std::move(code);
          res.set_header("Content-Type", "application/zip");
          finish(self, rp, op, start, std::move(res));
        },
        [=](caf::error& err) mutable {
          finish(self, rp, op, start, error_response(to_api_error(err)));
        });
    return rp;
  }

  // -- authentication ---------------------------------------------------------
  sigv4::verify_options options{st.config.region, "lambda", st.config.clock_skew};
  auto lookup = [&](std::string_view key) -> std::optional<std::string> {
    auto it = st.by_access_key.find(std::string{key});
    if (it == st.by_access_key.end())
      return std::nullopt;
    return it->second.secret_access_key;
  };
  auto verified = sigv4::verify(req, lookup, options, st.config.now());
  if (!verified.ok) {
    config::logger("actors")->info("frontend rejected a request from {}: {}", req.remote,
                                   verified.message);
    fail(auth_failure(verified));
    return rp;
  }
  const auto account = st.by_access_key.at(verified.access_key_id).id;

  // -- operations -------------------------------------------------------------
  const auto region = st.config.region;
  auto render_config = [region](int status) {
    return [region, status](function_record& rec) {
      return json_response(status, configuration_json(rec, region));
    };
  };
  switch (op) {
    case operation::create_function: {
      auto p = parse_create_function(req.body, st.config.codec);
      if (!p.value) {
        fail(p.error);
        return rp;
      }
      ask_registry(self, rp, op, start, render_config(201), create_atom::value, account,
                   std::move(*p.value));
      return rp;
    }
    case operation::get_function:
    case operation::get_function_configuration: {
      auto n = resolve(st, account, r, 170);
      if (n.error) {
        fail(*n.error);
        return rp;
      }
      if (n.qualifier && *n.qualifier != "$LATEST") {
        fail({404, "ResourceNotFoundException",
              "Function not found: " + function_arn(region, account, n.name, *n.qualifier)});
        return rp;
      }
      std::function<http_response(function_record&)> render = render_config(200);
      if (op == operation::get_function) {
        auto host = std::string{req.header("Host").value_or("127.0.0.1")};
        render = [self, region, host](function_record& rec) {
          return json_response(200, get_function_json(rec, region,
                                                      code_location(self->state, host, rec)));
        };
      }
      auto key = std::make_pair(account, n.name);
      if (auto hit = st.cache.find(key); hit != st.cache.end()) {
        ++st.cache_hits;
        answer(render(hit->second));
        return rp;
      }
      ++st.cache_misses;
      ask_registry(
        self, rp, op, start,
        [self, key, render](function_record& rec) {
          remember(self->state, key, rec);
          return render(rec);
        },
        get_atom::value, account, n.name);
      return rp;
    }
    case operation::list_functions: {
      int32_t max_items = 50;
      if (auto mi = r.param("MaxItems")) {
        if (mi->empty() || mi->size() > 5 || mi->find_first_not_of("0123456789") != std::string::npos
            || std::stoi(*mi) < 1 || std::stoi(*mi) > 10000) {
          fail(invalid_parameter("maxItems", *mi,
                                 "Member must have value between 1 and 10000"));
          return rp;
        }
        // AWS returns at most 50 functions per page whatever MaxItems says.
        max_items = std::min(std::stoi(*mi), 50);
      }
      std::string marker;
      if (auto mk = r.param("Marker"); mk && !mk->empty()) {
        auto decoded = storage::base64_decode(*mk);
        if (!decoded || !valid_function_name(*decoded)) {
          fail({400, "InvalidParameterValueException", "Invalid Marker"});
          return rp;
        }
        marker = *decoded;
      }
      self->request(st.registry, st.config.request_timeout, list_atom::value, account, marker,
                    max_items)
        .then(
          [=](function_page& page) mutable {
            auto next = page.next_marker.empty() ? std::string{}
                                                 : storage::base64_encode(page.next_marker);
            finish(self, rp, op, start,
                   json_response(200, list_functions_json(page.functions, region, next)));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, op, start, error_response(to_api_error(err)));
          });
      return rp;
    }
    case operation::delete_function: {
      auto n = resolve(st, account, r, 140);
      if (n.error) {
        fail(*n.error);
        return rp;
      }
      if (n.qualifier) {
        if (*n.qualifier == "$LATEST")
          fail({400, "InvalidParameterValueException",
                "$LATEST version cannot be deleted without deleting the function."});
        else
          fail({404, "ResourceNotFoundException",
                "Function not found: " + function_arn(region, account, n.name, *n.qualifier)});
        return rp;
      }
      self->request(st.registry, st.config.request_timeout, delete_atom::value, account, n.name)
        .then(
          [=](bool) mutable {
            http_response res;
            res.status = 204;
            finish(self, rp, op, start, std::move(res));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, op, start, error_response(to_api_error(err)));
          });
      return rp;
    }
    case operation::update_function_code:
    case operation::update_function_configuration: {
      auto n = resolve(st, account, r, 140);
      if (n.error) {
        fail(*n.error);
        return rp;
      }
      if (n.qualifier && *n.qualifier != "$LATEST") {
        fail({400, "InvalidParameterValueException",
              "Only $LATEST can be updated; a qualifier must not be given"});
        return rp;
      }
      if (op == operation::update_function_code) {
        auto p = parse_update_code(req.body, st.config.codec);
        if (!p.value) {
          fail(p.error);
          return rp;
        }
        ask_registry(self, rp, op, start, render_config(200), update_code_atom::value, account,
                     n.name, std::move(*p.value));
      } else {
        auto p = parse_update_configuration(req.body, st.config.codec);
        if (!p.value) {
          fail(p.error);
          return rp;
        }
        ask_registry(self, rp, op, start, render_config(200), update_config_atom::value,
                     account, n.name, std::move(*p.value));
      }
      return rp;
    }
    case operation::get_account_settings: {
      const auto limits = st.config.limits;
      self->request(st.registry, st.config.request_timeout, usage_atom::value, account)
        .then(
          [=](account_usage& usage) mutable {
            account_settings s;
            s.total_code_size_limit = limits.total_code_size;
            s.code_size_unzipped_limit = limits.code_size_unzipped;
            s.code_size_zipped_limit = limits.code_size_zipped;
            s.concurrent_executions = limits.concurrent_executions;
            s.unreserved_concurrent_executions = limits.concurrent_executions;
            s.total_code_size = usage.total_code_size;
            s.function_count = usage.function_count;
            finish(self, rp, op, start, json_response(200, account_settings_json(s)));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, op, start, error_response(to_api_error(err)));
          });
      return rp;
    }
    case operation::health:
    case operation::metrics:
    case operation::download_code:
      break;
  }
  fail({500, "ServiceException", "Unhandled operation"});
  return rp;
}

} // namespace

frontend_actor::behavior_type frontend(self_ptr self, frontend_config cfg,
                                       registry_actor registry) {
  auto& st = self->state;
  st.config = std::move(cfg);
  if (st.config.download_key.empty())
    st.config.download_key = storage::random_bytes(32);
  st.registry = std::move(registry);
  for (const auto& a : st.config.accounts)
    st.by_access_key.emplace(a.access_key_id, a);
  self->send(st.registry, subscribe_atom::value,
             metadata_listener_actor{caf::actor_cast<frontend_actor>(self)});
  return {
    [=](invalidate_atom, const std::string& account, const std::string& name) {
      self->state.cache.erase(std::make_pair(account, name));
    },
    [=](http_request& req) -> caf::result<http_response> {
      // Exceptions would kill the actor in CAF 0.17; contain them here.
      try {
        return handle(self, req);
      } catch (const std::exception& e) {
        config::logger("actors")->error("frontend failed on a request: {}", e.what());
        return error_response({500, "ServiceException", "Internal service error"});
      }
    },
  };
}

frontend_actor spawn_frontend(caf::actor_system& sys, frontend_config cfg,
                              registry_actor registry) {
  return sys.spawn(frontend, std::move(cfg), std::move(registry));
}

} // namespace nimbus
