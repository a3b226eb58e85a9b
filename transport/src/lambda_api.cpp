#include "nimbus/transport/lambda_api.hpp"

#include "nimbus/transport/uri.hpp"

namespace nimbus::transport::lambda {

std::string_view operation_name(operation op) {
  switch (op) {
    case operation::create_function: return "CreateFunction";
    case operation::list_functions: return "ListFunctions";
    case operation::get_function: return "GetFunction";
    case operation::get_function_configuration: return "GetFunctionConfiguration";
    case operation::delete_function: return "DeleteFunction";
    case operation::update_function_code: return "UpdateFunctionCode";
    case operation::update_function_configuration: return "UpdateFunctionConfiguration";
    case operation::get_account_settings: return "GetAccountSettings";
    case operation::invoke: return "Invoke";
    case operation::put_function_concurrency: return "PutFunctionConcurrency";
    case operation::get_function_concurrency: return "GetFunctionConcurrency";
    case operation::delete_function_concurrency: return "DeleteFunctionConcurrency";
    case operation::put_function_event_invoke_config: return "PutFunctionEventInvokeConfig";
    case operation::update_function_event_invoke_config: return "UpdateFunctionEventInvokeConfig";
    case operation::get_function_event_invoke_config: return "GetFunctionEventInvokeConfig";
    case operation::delete_function_event_invoke_config: return "DeleteFunctionEventInvokeConfig";
    case operation::list_function_event_invoke_configs: return "ListFunctionEventInvokeConfigs";
    case operation::get_function_logs: return "GetFunctionLogs";
    case operation::receive_queue_messages: return "ReceiveQueueMessages";
    case operation::delete_queue_message: return "DeleteQueueMessage";
    case operation::health: return "Health";
    case operation::metrics: return "Metrics";
    case operation::download_code: return "DownloadCode";
    case operation::push_image: return "PushImage";
  }
  return "Unknown";
}

bool is_public(operation op) {
  return op == operation::health || op == operation::metrics || op == operation::download_code;
}

std::optional<std::string> route::param(std::string_view name) const {
  for (const auto& [k, v] : query)
    if (k == name)
      return v;
  return std::nullopt;
}

namespace {

// Splits a raw path into its raw (still encoded) segments; "/a/b/" gives
// {"a", "b", ""}.
std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  out.reserve(8); // the longest route has 6 segments
  if (path.empty() || path.front() != '/')
    return out;
  path.remove_prefix(1);
  while (true) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos)
      break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

route_error not_found() {
  return {404, "UnknownOperationException", "Unknown operation"};
}

route_error bad_method() {
  return {405, "UnknownOperationException", "Method not allowed for this resource"};
}

} // namespace

match_result match(std::string_view method, std::string_view target) {
  match_result result;
  auto q = target.find('?');
  auto path = target.substr(0, q);
  auto raw_query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  auto query = parse_query(raw_query);
  if (!query) {
    result.error = {400, "InvalidRequestContentException", "Malformed query string"};
    return result;
  }
  auto seg = segments(path);
  auto ok = [&](operation op, std::string name = {}) {
    result.matched = route{op, std::move(name), {}, std::move(*query)};
    return result;
  };
  auto fail = [&](route_error e) {
    result.error = std::move(e);
    return result;
  };
  if (seg.size() == 1 && seg[0] == "health")
    return method == "GET" ? ok(operation::health) : fail(bad_method());
  if (seg.size() == 1 && seg[0] == "metrics")
    return method == "GET" ? ok(operation::metrics) : fail(bad_method());
  // PUT/DELETE /2017-10-31/functions/{name}/concurrency,
  // GET /2019-09-30/functions/{name}/concurrency.
  if (seg.size() == 4 && (seg[0] == "2017-10-31" || seg[0] == "2019-09-30")
      && seg[1] == "functions" && seg[3] == "concurrency") {
    auto name = uri_decode(seg[2]);
    if (!name || name->empty())
      return fail({400, "InvalidParameterValueException", "Malformed function name in the path"});
    if (seg[0] == "2017-10-31" && method == "PUT")
      return ok(operation::put_function_concurrency, std::move(*name));
    if (seg[0] == "2017-10-31" && method == "DELETE")
      return ok(operation::delete_function_concurrency, std::move(*name));
    if (seg[0] == "2019-09-30" && method == "GET")
      return ok(operation::get_function_concurrency, std::move(*name));
    return fail(bad_method());
  }
  // PUT/POST/GET/DELETE /2019-09-25/functions/{name}/event-invoke-config,
  // GET /2019-09-25/functions/{name}/event-invoke-config/list.
  if ((seg.size() == 4 || (seg.size() == 5 && seg[4] == "list")) && seg[0] == "2019-09-25"
      && seg[1] == "functions" && seg[3] == "event-invoke-config") {
    auto name = uri_decode(seg[2]);
    if (!name || name->empty())
      return fail({400, "InvalidParameterValueException", "Malformed function name in the path"});
    if (seg.size() == 5)
      return method == "GET" ? ok(operation::list_function_event_invoke_configs, std::move(*name))
                             : fail(bad_method());
    if (method == "PUT")
      return ok(operation::put_function_event_invoke_config, std::move(*name));
    if (method == "POST")
      return ok(operation::update_function_event_invoke_config, std::move(*name));
    if (method == "GET")
      return ok(operation::get_function_event_invoke_config, std::move(*name));
    if (method == "DELETE")
      return ok(operation::delete_function_event_invoke_config, std::move(*name));
    return fail(bad_method());
  }
  if (seg.size() == 3 && seg[0] == "nimbus" && seg[1] == "logs") {
    auto name = uri_decode(seg[2]);
    if (!name || name->empty())
      return fail(not_found());
    return method == "GET" ? ok(operation::get_function_logs, std::move(*name)) : fail(bad_method());
  }
  if (seg.size() >= 4 && seg[0] == "nimbus" && seg[1] == "queues") {
    auto name = uri_decode(seg[2]);
    if (!name || name->empty())
      return fail(not_found());
    if (seg.size() == 4 && seg[3] == "receive")
      return method == "POST" ? ok(operation::receive_queue_messages, std::move(*name))
                              : fail(bad_method());
    if (seg.size() == 5 && seg[3] == "messages") {
      auto receipt = uri_decode(seg[4]);
      if (!receipt || receipt->empty())
        return fail(not_found());
      if (method != "DELETE")
        return fail(bad_method());
      ok(operation::delete_queue_message, std::move(*name));
      result.matched->labels = {std::move(*receipt)};
      return result;
    }
    return fail(not_found());
  }
  if (seg.size() == 5 && seg[0] == "nimbus" && seg[1] == "code") {
    if (method != "GET")
      return fail(bad_method());
    std::vector<std::string> labels;
    for (size_t i = 2; i < 5; ++i) {
      auto label = uri_decode(seg[i]);
      if (!label || label->empty())
        return fail(not_found());
      labels.push_back(std::move(*label));
    }
    ok(operation::download_code, labels[1]);
    result.matched->labels = std::move(labels);
    return result;
  }
  // PUT /nimbus/images/{repository}:{tag}; the repository may hold '/', so
  // the label is everything after "/nimbus/images/", and the tag follows the
  // last ':' (sent raw by curl, or as %3A).
  if (seg.size() >= 3 && seg[0] == "nimbus" && seg[1] == "images") {
    constexpr std::string_view prefix = "/nimbus/images/";
    auto label = uri_decode(path.substr(prefix.size()));
    if (!label || label->empty())
      return fail(not_found());
    if (method != "PUT")
      return fail(bad_method());
    auto colon = label->rfind(':');
    if (colon == std::string::npos)
      return fail({400, "InvalidParameterValueException",
                   "The image reference '" + *label + "' must have the form <repository>:<tag>"});
    std::string repository = label->substr(0, colon);
    std::string tag = label->substr(colon + 1);
    if (!valid_repository_name(repository))
      return fail({400, "InvalidParameterValueException",
                   "1 validation error detected: Value '" + repository
                     + "' at 'repositoryName' failed to satisfy constraint: Member must satisfy "
                       "regular expression pattern: "
                       "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*"});
    if (!valid_image_tag(tag))
      return fail({400, "InvalidParameterValueException",
                   "1 validation error detected: Value '" + tag
                     + "' at 'imageTag' failed to satisfy constraint: Member must satisfy "
                       "regular expression pattern: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"});
    ok(operation::push_image);
    result.matched->labels = {std::move(repository), std::move(tag)};
    return result;
  }
  // The CLI sends /2016-08-19/account-settings/ with a trailing slash.
  if ((seg.size() == 2 || (seg.size() == 3 && seg[2].empty())) && seg[0] == "2016-08-19"
      && seg[1] == "account-settings")
    return method == "GET" ? ok(operation::get_account_settings) : fail(bad_method());
  if (seg.empty() || seg[0] != "2015-03-31" || seg.size() < 2 || seg[1] != "functions")
    return fail(not_found());
  // /2015-03-31/functions and /2015-03-31/functions/ (the CLI adds the slash).
  if (seg.size() == 2 || (seg.size() == 3 && seg[2].empty())) {
    if (method == "GET")
      return ok(operation::list_functions);
    if (method == "POST")
      return ok(operation::create_function);
    return fail(bad_method());
  }
  auto name = uri_decode(seg[2]);
  if (!name || name->empty())
    return fail({400, "InvalidParameterValueException", "Malformed function name in the path"});
  if (seg.size() == 3) {
    if (method == "GET")
      return ok(operation::get_function, std::move(*name));
    if (method == "DELETE")
      return ok(operation::delete_function, std::move(*name));
    return fail(bad_method());
  }
  if (seg.size() == 4 && seg[3] == "configuration") {
    if (method == "GET")
      return ok(operation::get_function_configuration, std::move(*name));
    if (method == "PUT")
      return ok(operation::update_function_configuration, std::move(*name));
    return fail(bad_method());
  }
  if (seg.size() == 4 && seg[3] == "invocations") {
    if (method == "POST")
      return ok(operation::invoke, std::move(*name));
    return fail(bad_method());
  }
  if (seg.size() == 4 && seg[3] == "code") {
    if (method == "PUT")
      return ok(operation::update_function_code, std::move(*name));
    return fail(bad_method());
  }
  return fail(not_found());
}

namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
         || c == '_';
}

bool valid_qualifier(std::string_view q) {
  if (q == "$LATEST")
    return true;
  if (q.empty() || q.size() > 128)
    return false;
  for (char c : q)
    if (!name_char(c))
      return false;
  return true;
}

bool valid_account(std::string_view a) {
  if (a.size() != 12)
    return false;
  for (char c : a)
    if (c < '0' || c > '9')
      return false;
  return true;
}

bool valid_region(std::string_view r) {
  if (r.empty() || r.size() > 32)
    return false;
  for (char c : r)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  return true;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    auto pos = s.find(sep);
    out.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos)
      return out;
    s.remove_prefix(pos + 1);
  }
}

} // namespace

bool valid_repository_name(std::string_view name) {
  if (name.empty() || name.size() > 255)
    return false;
  // Components separated by '/', each [a-z0-9]+([._-][a-z0-9]+)*: every
  // separator sits between two lowercase letters or digits.
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool after_alnum = false;
  for (char c : name) {
    if (alnum(c)) {
      after_alnum = true;
    } else if (c == '.' || c == '_' || c == '-' || c == '/') {
      if (!after_alnum)
        return false;
      after_alnum = false;
    } else {
      return false;
    }
  }
  return after_alnum;
}

bool valid_image_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128)
    return false;
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  if (!word(tag[0]))
    return false;
  for (char c : tag.substr(1))
    if (!word(c) && c != '.' && c != '-')
      return false;
  return true;
}

bool valid_function_name(std::string_view name) {
  if (name.empty() || name.size() > 64)
    return false;
  for (char c : name)
    if (!name_char(c))
      return false;
  return true;
}

std::optional<function_ref> parse_function_name(std::string_view text, size_t max_length) {
  if (text.empty() || text.size() > max_length)
    return std::nullopt;
  auto parts = split(text, ':');
  function_ref ref;
  std::string_view name;
  std::optional<std::string_view> qualifier;
  if (parts.size() >= 7 && parts[0] == "arn") {
    // arn:aws:lambda:region:account:function:name[:qualifier]
    if (parts.size() > 8 || parts[1].substr(0, 3) != "aws" || parts[2] != "lambda"
        || !valid_region(parts[3]) || !valid_account(parts[4]) || parts[5] != "function")
      return std::nullopt;
    ref.region = std::string{parts[3]};
    ref.account_id = std::string{parts[4]};
    name = parts[6];
    if (parts.size() == 8)
      qualifier = parts[7];
  } else if (parts.size() >= 3 && parts[1] == "function") {
    // account:function:name[:qualifier]
    if (parts.size() > 4 || !valid_account(parts[0]))
      return std::nullopt;
    ref.account_id = std::string{parts[0]};
    name = parts[2];
    if (parts.size() == 4)
      qualifier = parts[3];
  } else if (parts.size() <= 2) {
    name = parts[0];
    if (parts.size() == 2)
      qualifier = parts[1];
  } else {
    return std::nullopt;
  }
  if (!valid_function_name(name))
    return std::nullopt;
  if (qualifier && !valid_qualifier(*qualifier))
    return std::nullopt;
  ref.name = std::string{name};
  if (qualifier)
    ref.qualifier = std::string{*qualifier};
  return ref;
}

std::string function_arn(std::string_view region, std::string_view account_id,
                         std::string_view name, std::string_view qualifier) {
  std::string arn = "arn:aws:lambda:";
  arn += region;
  arn += ':';
  arn += account_id;
  arn += ":function:";
  arn += name;
  if (!qualifier.empty()) {
    arn += ':';
    arn += qualifier;
  }
  return arn;
}

} // namespace nimbus::transport::lambda
