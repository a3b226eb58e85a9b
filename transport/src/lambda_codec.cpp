#include "nimbus/transport/lambda_codec.hpp"

#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/json.hpp"
#include "nimbus/transport/lambda_api.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <set>

namespace nimbus::transport::lambda {

using storage::json_writer;
namespace dom = simdjson::dom;

api_error invalid_parameter(std::string_view field, std::string_view value,
                            std::string_view constraint) {
  std::string msg = "1 validation error detected: Value '";
  msg += value;
  msg += "' at '";
  msg += field;
  msg += "' failed to satisfy constraint: ";
  msg += constraint;
  return {400, "InvalidParameterValueException", std::move(msg)};
}

namespace {

api_error invalid(std::string message) {
  return {400, "InvalidParameterValueException", std::move(message)};
}

api_error not_json(std::string_view detail) {
  return {400, "InvalidRequestContentException",
          "Could not parse request body into json: " + std::string{detail}};
}

// AWS's wording for package-type mismatches.
constexpr std::string_view image_without_runtime
  = "Please don't provide Handler or Runtime or Layer when the intended function PackageType is "
    "Image.";
constexpr std::string_view image_needs_uri
  = "Please provide ImageUri when the intended function PackageType is Image.";
constexpr std::string_view image_without_zip
  = "Please don't provide ZipFile when the intended function PackageType is Image.";
constexpr std::string_view zip_without_image_uri
  = "Please don't provide ImageUri when the intended function PackageType is Zip.";
constexpr std::string_view zip_without_image_config
  = "ImageConfig is supported only for functions with PackageType Image.";
constexpr std::string_view update_zip_with_image_uri
  = "Please don't provide ImageUri when updating a function with packageType Zip.";
constexpr std::string_view update_image_needs_uri
  = "Please provide ImageUri when updating a function with packageType Image.";

/// ImageConfig bounds (the AWS model).
constexpr size_t image_config_max_entries = 1500;
constexpr size_t image_config_max_chars = 1000;

bool lower_hex(std::string_view s, size_t n) {
  if (s.size() != n)
    return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

// Reads the fields of one JSON object, checking types; the first problem is
// kept in `error` and later reads become no-ops.
class object_reader {
public:
  object_reader(dom::object obj, std::optional<api_error>& error) : obj_(obj), error_(error) {
  }

  bool has(std::string_view key) const {
    dom::element e;
    return !obj_[key].get(e) && !e.is_null();
  }

  std::optional<std::string> string(std::string_view key) {
    dom::element e;
    if (error_ || obj_[key].get(e) || e.is_null())
      return std::nullopt;
    std::string_view v;
    if (e.get_string().get(v)) {
      type_error(key, "a string");
      return std::nullopt;
    }
    return std::string{v};
  }

  std::optional<int64_t> integer(std::string_view key) {
    dom::element e;
    if (error_ || obj_[key].get(e) || e.is_null())
      return std::nullopt;
    int64_t v = 0;
    if (e.get_int64().get(v)) {
      type_error(key, "an integer");
      return std::nullopt;
    }
    return v;
  }

  std::optional<bool> boolean(std::string_view key) {
    dom::element e;
    if (error_ || obj_[key].get(e) || e.is_null())
      return std::nullopt;
    bool v = false;
    if (e.get_bool().get(v)) {
      type_error(key, "a boolean");
      return std::nullopt;
    }
    return v;
  }

  std::optional<dom::object> object(std::string_view key) {
    dom::element e;
    if (error_ || obj_[key].get(e) || e.is_null())
      return std::nullopt;
    dom::object v;
    if (e.get_object().get(v)) {
      type_error(key, "an object");
      return std::nullopt;
    }
    return v;
  }

  std::optional<dom::array> array(std::string_view key) {
    dom::element e;
    if (error_ || obj_[key].get(e) || e.is_null())
      return std::nullopt;
    dom::array v;
    if (e.get_array().get(v)) {
      type_error(key, "a list");
      return std::nullopt;
    }
    return v;
  }

  void type_error(std::string_view key, std::string_view expected) {
    if (!error_)
      error_ = invalid("Field " + std::string{key} + " must be " + std::string{expected});
  }

  void fail(api_error e) {
    if (!error_)
      error_ = std::move(e);
  }

  bool failed() const {
    return error_.has_value();
  }

private:
  dom::object obj_;
  std::optional<api_error>& error_;
};

// Parses `body` as one JSON object.
bool parse_object(dom::parser& parser, std::string_view body, dom::object& out,
                  api_error& error) {
  dom::element doc;
  if (auto err = parser.parse(body.data(), body.size()).get(doc)) {
    error = not_json(simdjson::error_message(err));
    return false;
  }
  if (doc.get_object().get(out)) {
    error = not_json("the request body is not a JSON object");
    return false;
  }
  return true;
}

bool env_key_valid(std::string_view k) {
  if (k.size() < 2)
    return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!alpha(k[0]))
    return false;
  for (char c : k.substr(1))
    if (!alpha(c) && !(c >= '0' && c <= '9') && c != '_')
      return false;
  return true;
}

const std::set<std::string_view>& reserved_env_keys() {
  static const std::set<std::string_view> keys = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"};
  return keys;
}

// Environment: {"Variables": {"K": "V", ...}}.
std::optional<std::map<std::string, std::string>>
read_environment(object_reader& top, const codec_limits& limits) {
  auto env = top.object("Environment");
  if (!env)
    return std::nullopt;
  std::optional<api_error> err;
  object_reader reader{*env, err};
  std::map<std::string, std::string> vars;
  auto variables = reader.object("Variables");
  if (err) {
    top.fail(*err);
    return std::nullopt;
  }
  if (!variables)
    return vars;
  size_t total = 0;
  std::string reserved;
  for (auto field : *variables) {
    std::string_view value;
    if (field.value.get_string().get(value)) {
      top.fail(invalid("Environment variable values must be strings (key "
                       + std::string{field.key} + ")"));
      return std::nullopt;
    }
    if (!env_key_valid(field.key)) {
      top.fail(invalid_parameter("environment.variables", std::string{field.key},
                                 "Member must satisfy regular expression pattern: "
                                 "[a-zA-Z]([a-zA-Z0-9_])+"));
      return std::nullopt;
    }
    if (reserved_env_keys().count(field.key)) {
      if (!reserved.empty())
        reserved += ",";
      reserved += field.key;
    }
    total += field.key.size() + value.size();
    vars.emplace(std::string{field.key}, std::string{value});
  }
  if (!reserved.empty()) {
    top.fail(invalid("Lambda was unable to configure your environment variables because the "
                     "environment variables you have provided contains reserved keys that are "
                     "currently not supported for modification. Reserved keys used in this "
                     "request: "
                     + reserved));
    return std::nullopt;
  }
  if (total > limits.environment_bytes) {
    top.fail(invalid("Lambda was unable to configure your environment variables because the "
                     "environment variables you have provided exceeded the "
                     + std::to_string(limits.environment_bytes / 1024) + "KB limit."));
    return std::nullopt;
  }
  return vars;
}

void check_range(object_reader& r, std::string_view field, std::optional<int64_t> v, int64_t min,
                 int64_t max) {
  if (!v)
    return;
  if (*v < min)
    r.fail(invalid_parameter(field, std::to_string(*v),
                             "Member must have value greater than or equal to "
                               + std::to_string(min)));
  else if (*v > max)
    r.fail(invalid_parameter(field, std::to_string(*v),
                             "Member must have value less than or equal to "
                               + std::to_string(max)));
}

bool role_valid(std::string_view role) {
  // arn:aws:iam::<12 digits>:role/<path and name>
  constexpr std::string_view prefix = "arn:aws";
  if (role.substr(0, prefix.size()) != prefix)
    return false;
  auto iam = role.find(":iam::");
  if (iam == std::string_view::npos)
    return false;
  auto rest = role.substr(iam + 6);
  if (rest.size() < 19 || rest[12] != ':' || rest.substr(13, 5) != "role/")
    return false;
  for (size_t i = 0; i < 12; ++i)
    if (rest[i] < '0' || rest[i] > '9')
      return false;
  return rest.size() > 18 && role.size() <= 2048;
}

// Common configuration fields of Create and UpdateConfiguration.
void read_common(object_reader& r, std::optional<std::string>& runtime,
                 std::optional<std::string>& role, std::optional<std::string>& handler,
                 std::optional<std::string>& description, std::optional<int32_t>& timeout,
                 std::optional<int32_t>& memory, std::optional<int32_t>& ephemeral) {
  runtime = r.string("Runtime");
  role = r.string("Role");
  if (role && !role_valid(*role))
    r.fail(invalid_parameter("role", *role,
                             "Member must satisfy regular expression pattern: "
                             "arn:(aws[a-zA-Z-]*)?:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"));
  handler = r.string("Handler");
  if (handler && (handler->empty() || handler->size() > 128))
    r.fail(invalid_parameter("handler", *handler, "Member must have length between 1 and 128"));
  description = r.string("Description");
  if (description && description->size() > 256)
    r.fail(invalid_parameter("description", description->substr(0, 32) + "...",
                             "Member must have length less than or equal to 256"));
  auto t = r.integer("Timeout");
  check_range(r, "timeout", t, 1, 900);
  if (t)
    timeout = static_cast<int32_t>(*t);
  auto m = r.integer("MemorySize");
  check_range(r, "memorySize", m, 128, 10240);
  if (m)
    memory = static_cast<int32_t>(*m);
  if (auto eph = r.object("EphemeralStorage")) {
    std::optional<api_error> err;
    object_reader er{*eph, err};
    auto size = er.integer("Size");
    if (err)
      r.fail(*err);
    else if (!size)
      r.fail(invalid("EphemeralStorage.Size is required"));
    check_range(r, "ephemeralStorage.size", size, 512, 10240);
    if (size)
      ephemeral = static_cast<int32_t>(*size);
  }
}

// Rejects options Nimbus does not implement, with a clear message, instead of
// silently accepting them.
void reject_unsupported(object_reader& r) {
  if (auto layers = r.array("Layers"); layers && layers->size() > 0)
    r.fail(invalid("Layers are not supported by Nimbus yet"));
  if (auto fs = r.array("FileSystemConfigs"); fs && fs->size() > 0)
    r.fail(invalid("FileSystemConfigs are not supported by Nimbus"));
  if (auto vpc = r.object("VpcConfig")) {
    std::optional<api_error> err;
    object_reader vr{*vpc, err};
    auto subnets = vr.array("SubnetIds");
    if (subnets && subnets->size() > 0)
      r.fail(invalid("VpcConfig is not supported by Nimbus"));
  }
}

// The code source of Create (Code) or UpdateFunctionCode (the body): ZipFile
// or ImageUri. Which of them is allowed is the caller's decision.
struct code_source {
  std::optional<std::string> zip;
  std::optional<std::string> image_uri;
};

code_source read_code(object_reader& r, dom::object code_or_body, std::string_view field,
                      const codec_limits& limits) {
  code_source out;
  std::optional<api_error> err;
  object_reader cr{code_or_body, err};
  auto zip64 = cr.string("ZipFile");
  auto image_uri = cr.string("ImageUri");
  if (cr.has("S3Bucket") || cr.has("S3Key"))
    r.fail(invalid("Code from S3 (S3Bucket/S3Key) is not supported by Nimbus; upload ZipFile"));
  if (err) {
    r.fail(*err);
    return out;
  }
  if (r.failed())
    return out;
  if (zip64 && image_uri) {
    r.fail(invalid("Please provide only one source for function code: " + std::string{field}
                   + "ZipFile or " + std::string{field} + "ImageUri"));
    return out;
  }
  if (image_uri) {
    image_ref ref;
    if (auto e = parse_image_uri(*image_uri, {}, {}, ref)) {
      r.fail(*e);
      return out;
    }
    out.image_uri = std::move(image_uri);
    return out;
  }
  if (!zip64)
    return out;
  auto zip = storage::base64_decode(*zip64);
  if (!zip) {
    r.fail(invalid(std::string{field} + "ZipFile is not valid base64"));
    return out;
  }
  if (zip->size() > limits.code_size_zipped) {
    r.fail({413, "RequestEntityTooLargeException",
            "Zipped code size " + std::to_string(zip->size()) + " exceeds the limit of "
              + std::to_string(limits.code_size_zipped) + " bytes"});
    return out;
  }
  out.zip = std::move(zip);
  return out;
}

// ImageConfig: {"EntryPoint": [..], "Command": [..], "WorkingDirectory": ".."}.
std::optional<storage::image_config> read_image_config(object_reader& r) {
  auto obj = r.object("ImageConfig");
  if (!obj)
    return std::nullopt;
  std::optional<api_error> err;
  object_reader ir{*obj, err};
  storage::image_config c;
  auto list = [&](std::string_view key, std::string_view field, std::vector<std::string>& out,
                  bool& set) {
    auto a = ir.array(key);
    if (!a)
      return;
    set = true;
    if (a->size() > image_config_max_entries) {
      ir.fail(invalid_parameter(field, std::to_string(a->size()) + " entries",
                                "Member must have length less than or equal to "
                                  + std::to_string(image_config_max_entries)));
      return;
    }
    for (auto item : *a) {
      std::string_view v;
      if (item.get_string().get(v)) {
        ir.fail(invalid("ImageConfig." + std::string{key} + " must be a list of strings"));
        return;
      }
      if (v.size() > image_config_max_chars) {
        ir.fail(invalid_parameter(std::string{field} + ".member", std::string{v.substr(0, 32)} + "...",
                                  "Member must have length less than or equal to "
                                    + std::to_string(image_config_max_chars)));
        return;
      }
      if (v.find('\0') != std::string_view::npos) {
        ir.fail(invalid("ImageConfig." + std::string{key} + " entries must not contain NUL"));
        return;
      }
      out.emplace_back(v);
    }
  };
  list("EntryPoint", "imageConfig.entryPoint", c.entry_point, c.entry_point_set);
  list("Command", "imageConfig.command", c.command, c.command_set);
  if (auto wd = ir.string("WorkingDirectory")) {
    c.working_directory_set = true;
    if (wd->size() > image_config_max_chars)
      ir.fail(invalid_parameter("imageConfig.workingDirectory", wd->substr(0, 32) + "...",
                                "Member must have length less than or equal to "
                                  + std::to_string(image_config_max_chars)));
    else if (wd->empty() || wd->front() != '/' || wd->find('\0') != std::string::npos)
      ir.fail(invalid("ImageConfig.WorkingDirectory must be an absolute path, got '" + *wd + "'"));
    c.working_directory = std::move(*wd);
  }
  if (err) {
    r.fail(*err);
    return std::nullopt;
  }
  return c;
}

void write_strings(json_writer& w, const std::vector<std::string>& list) {
  w.begin_array();
  for (const auto& v : list)
    w.value(v);
  w.end_array();
}

bool digits(std::string_view s, size_t n) {
  if (s.size() != n)
    return false;
  for (char c : s)
    if (c < '0' || c > '9')
      return false;
  return true;
}

bool region_valid(std::string_view r) {
  if (r.empty() || r.size() > 32)
    return false;
  for (char c : r)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  return true;
}

bool queue_name_valid(std::string_view q) {
  if (q.empty() || q.size() > 80)
    return false;
  for (char c : q)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
          || c == '_'))
      return false;
  return true;
}

// The forms a destination may take, for error messages.
constexpr std::string_view destination_forms
  = "Nimbus delivers to a Lambda function of the same account and region "
    "(arn:aws:lambda:<region>:<account>:function:<name>, optionally with :$LATEST) or to a "
    "Nimbus queue (arn:aws:sqs:<region>:<account>:<queue-name>, 1-80 characters of "
    "[A-Za-z0-9_-]).";

// DeadLetterConfig: {"TargetArn": "<queue ARN>" | ""}. Absent: nothing;
// present without TargetArn or with "": remove the dead-letter queue.
std::optional<std::string> read_dead_letter(object_reader& r) {
  auto dlc = r.object("DeadLetterConfig");
  if (!dlc)
    return std::nullopt;
  std::optional<api_error> err;
  object_reader dr{*dlc, err};
  auto target = dr.string("TargetArn").value_or("");
  if (err) {
    r.fail(*err);
    return std::nullopt;
  }
  if (!target.empty()) {
    auto t = parse_delivery_target(target);
    if (!t || t->type != delivery_target::kind::queue) {
      r.fail(invalid("The dead-letter target ARN " + target
                     + " is invalid. Nimbus sends dead letters to a Nimbus queue of the same "
                       "account and region (arn:aws:sqs:<region>:<account>:<queue-name>, 1-80 "
                       "characters of [A-Za-z0-9_-]); SNS topics are not supported."));
      return std::nullopt;
    }
  }
  return target;
}

// One of DestinationConfig's OnSuccess / OnFailure: {"Destination": ARN}.
// Absent: nothing; present without Destination or with "": no destination.
std::optional<std::string> read_destination(object_reader& r, std::string_view key,
                                            std::string_view field) {
  auto on = r.object(key);
  if (!on)
    return std::nullopt;
  std::optional<api_error> err;
  object_reader dr{*on, err};
  auto arn = dr.string("Destination").value_or("");
  if (err) {
    r.fail(*err);
    return std::nullopt;
  }
  if (arn.size() > 350)
    r.fail(invalid_parameter(field, arn, "Member must have length less than or equal to 350"));
  else if (!arn.empty() && !parse_delivery_target(arn))
    r.fail(
      invalid("The destination ARN " + arn + " is invalid. " + std::string{destination_forms}));
  return arn;
}

} // namespace

std::string image_ref::reference() const {
  return digest.empty() ? repository + ":" + tag : repository + "@" + digest;
}

std::optional<api_error> parse_image_uri(std::string_view uri, std::string_view account,
                                         std::string_view region, image_ref& out) {
  const std::string shown{uri.substr(0, 512)};
  auto not_valid = [&](std::string_view why) {
    return invalid("Source image " + shown + " is not valid" + std::string{why}
                   + ". Provide a valid source image.");
  };
  if (uri.empty() || uri.size() > 512)
    return not_valid("");
  std::string_view rest = uri;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    auto host = rest.substr(0, slash);
    // As in docker: a first component with '.' or ':' (or "localhost") is a
    // registry host, not part of the repository name.
    if (host.find('.') != std::string_view::npos || host.find(':') != std::string_view::npos
        || host == "localhost") {
      constexpr std::string_view ecr = ".dkr.ecr.";
      constexpr std::string_view suffix = ".amazonaws.com";
      bool ecr_form = host.size() > 12 + ecr.size() + suffix.size() && digits(host.substr(0, 12), 12)
                      && host.substr(12, ecr.size()) == ecr
                      && host.substr(host.size() - suffix.size()) == suffix;
      auto host_region = ecr_form ? host.substr(12 + ecr.size(),
                                                host.size() - suffix.size() - 12 - ecr.size())
                                  : std::string_view{};
      if (!ecr_form || !region_valid(host_region))
        return not_valid(": Nimbus runs images from its own registry only "
                         "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>, or "
                         "<repository>:<tag>)");
      auto host_account = host.substr(0, 12);
      if ((!account.empty() && host_account != account) || (!region.empty() && host_region != region))
        return not_valid(": it names the registry of account " + std::string{host_account} + " in "
                         + std::string{host_region} + ", but this function can use images of account "
                         + std::string{account} + " in " + std::string{region} + " only");
      rest = rest.substr(slash + 1);
    }
  }
  image_ref ref;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    auto digest = rest.substr(at + 1);
    if (digest.substr(0, 7) != "sha256:" || !lower_hex(digest.substr(7), 64))
      return not_valid(": a digest must be sha256: and 64 lowercase hexadecimal digits");
    ref.repository = std::string{rest.substr(0, at)};
    ref.digest = std::string{digest};
  } else {
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos)
      return not_valid(": name the image with a tag (<repository>:<tag>) or a digest "
                       "(<repository>@sha256:<digest>)");
    ref.repository = std::string{rest.substr(0, colon)};
    ref.tag = std::string{rest.substr(colon + 1)};
    if (!valid_image_tag(ref.tag))
      return not_valid(": the tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}");
  }
  if (!valid_repository_name(ref.repository))
    return not_valid(": the repository name must match "
                     "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)* (at most 255 "
                     "characters)");
  out = std::move(ref);
  return std::nullopt;
}

std::optional<api_error> check_code_update(const storage::function_record& function,
                                           const code_update& update) {
  const bool image = function.package_type == "Image";
  if (!image && !update.image_uri.empty())
    return invalid(std::string{update_zip_with_image_uri});
  if (image && update.image_uri.empty())
    return invalid(std::string{update_image_needs_uri});
  return std::nullopt;
}

std::optional<api_error> check_configuration_patch(const storage::function_record& function,
                                                   const configuration_patch& patch) {
  const bool image = function.package_type == "Image";
  if (image && (patch.runtime || patch.handler))
    return invalid(std::string{image_without_runtime});
  if (!image && patch.image_config)
    return invalid(std::string{zip_without_image_config});
  return std::nullopt;
}

std::optional<delivery_target> parse_delivery_target(std::string_view arn) {
  std::vector<std::string_view> parts;
  while (true) {
    auto pos = arn.find(':');
    parts.push_back(arn.substr(0, pos));
    if (pos == std::string_view::npos)
      break;
    arn.remove_prefix(pos + 1);
  }
  if (parts.size() < 6 || parts[0] != "arn" || parts[1] != "aws" || !region_valid(parts[3])
      || !digits(parts[4], 12))
    return std::nullopt;
  delivery_target t;
  t.region = std::string{parts[3]};
  t.account_id = std::string{parts[4]};
  if (parts[2] == "sqs") {
    if (parts.size() != 6 || !queue_name_valid(parts[5]))
      return std::nullopt;
    t.type = delivery_target::kind::queue;
    t.name = std::string{parts[5]};
    return t;
  }
  if (parts[2] == "lambda") {
    // Only $LATEST exists on this node, so it is the only qualifier.
    if (parts.size() < 7 || parts.size() > 8 || parts[5] != "function"
        || !valid_function_name(parts[6]) || (parts.size() == 8 && parts[7] != "$LATEST"))
      return std::nullopt;
    t.type = delivery_target::kind::function;
    t.name = std::string{parts[6]};
    return t;
  }
  return std::nullopt;
}

parsed<function_spec> parse_create_function(std::string_view body, const codec_limits& limits) {
  parsed<function_spec> out;
  dom::parser parser;
  dom::object obj;
  if (!parse_object(parser, body, obj, out.error))
    return out;
  std::optional<api_error> err;
  object_reader r{obj, err};
  function_spec spec;
  auto name = r.string("FunctionName");
  if (!r.failed()) {
    if (!name) {
      r.fail(invalid("FunctionName is required"));
    } else if (auto ref = parse_function_name(*name, 140); !ref || ref->qualifier) {
      r.fail(invalid_parameter("functionName", *name,
                               "Member must satisfy regular expression pattern: "
                               "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                               "(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)"));
    } else {
      spec.name = ref->name;
    }
  }
  std::optional<std::string> runtime, role, handler, description;
  std::optional<int32_t> timeout, memory, ephemeral;
  read_common(r, runtime, role, handler, description, timeout, memory, ephemeral);
  auto package_type = r.string("PackageType").value_or("Zip");
  if (package_type != "Zip" && package_type != "Image")
    r.fail(invalid_parameter("packageType", package_type,
                             "Member must satisfy enum value set: [Image, Zip]"));
  const bool image = package_type == "Image";
  if (auto archs = r.array("Architectures")) {
    std::vector<std::string> list;
    for (auto a : *archs) {
      std::string_view v;
      if (a.get_string().get(v)) {
        r.fail(invalid("Architectures must be a list of strings"));
        break;
      }
      list.emplace_back(v);
    }
    if (!r.failed()) {
      if (list.size() != 1)
        r.fail(invalid_parameter("architectures", std::to_string(list.size()) + " items",
                                 "Member must have length equal to 1"));
      else if (list[0] == "arm64")
        r.fail(invalid("Architecture arm64 is not supported by this node; use x86_64"));
      else if (list[0] != "x86_64")
        r.fail(invalid_parameter("architectures", list[0],
                                 "Member must satisfy enum value set: [x86_64, arm64]"));
      else
        spec.architectures = list;
    }
  }
  auto env = read_environment(r, limits);
  auto dead_letter = read_dead_letter(r);
  auto image_config = read_image_config(r);
  if (!r.failed() && image) {
    auto layers = r.array("Layers");
    if (runtime || handler || (layers && layers->size() > 0))
      r.fail(invalid(std::string{image_without_runtime}));
  }
  if (!r.failed() && !image && image_config)
    r.fail(invalid(std::string{zip_without_image_config}));
  reject_unsupported(r);
  if (!r.failed() && !role)
    r.fail(invalid("Role is required"));
  if (!r.failed() && !image && (!runtime || !handler))
    r.fail(invalid("Runtime and Handler are mandatory parameters for functions created with "
                   "deployment packages."));
  code_source source;
  if (!r.failed()) {
    auto code = r.object("Code");
    if (!r.failed() && !code)
      r.fail(invalid("Code is required"));
    if (code)
      source = read_code(r, *code, "Code.", limits);
  }
  if (!r.failed()) {
    if (image && source.zip)
      r.fail(invalid(std::string{image_without_zip}));
    else if (image && !source.image_uri)
      r.fail(invalid(std::string{image_needs_uri}));
    else if (!image && source.image_uri)
      r.fail(invalid(std::string{zip_without_image_uri}));
    else if (!image && !source.zip)
      r.fail(invalid("Please provide a source for function code: Code.ZipFile is required"));
  }
  if (err) {
    out.error = *err;
    return out;
  }
  spec.package_type = package_type;
  spec.runtime = runtime.value_or("");
  spec.role = *role;
  spec.handler = handler.value_or("");
  spec.description = description.value_or("");
  spec.timeout = timeout.value_or(3);
  spec.memory_size = memory.value_or(128);
  spec.ephemeral_storage = ephemeral.value_or(512);
  if (env) {
    spec.environment = std::move(*env);
    spec.has_environment = true;
  }
  spec.dead_letter_target = dead_letter.value_or("");
  if (image) {
    spec.image_uri = std::move(*source.image_uri);
    if (image_config)
      spec.image_config = std::move(*image_config);
  } else {
    spec.zip = std::move(*source.zip);
  }
  out.value = std::move(spec);
  return out;
}

parsed<configuration_patch> parse_update_configuration(std::string_view body,
                                                       const codec_limits& limits) {
  parsed<configuration_patch> out;
  dom::parser parser;
  dom::object obj;
  if (!parse_object(parser, body, obj, out.error))
    return out;
  std::optional<api_error> err;
  object_reader r{obj, err};
  configuration_patch patch;
  read_common(r, patch.runtime, patch.role, patch.handler, patch.description, patch.timeout,
              patch.memory_size, patch.ephemeral_storage);
  patch.environment = read_environment(r, limits);
  patch.dead_letter_target = read_dead_letter(r);
  patch.revision_id = r.string("RevisionId");
  patch.image_config = read_image_config(r);
  reject_unsupported(r);
  if (err) {
    out.error = *err;
    return out;
  }
  out.value = std::move(patch);
  return out;
}

parsed<code_update> parse_update_code(std::string_view body, const codec_limits& limits) {
  parsed<code_update> out;
  dom::parser parser;
  dom::object obj;
  if (!parse_object(parser, body, obj, out.error))
    return out;
  std::optional<api_error> err;
  object_reader r{obj, err};
  code_update update;
  update.revision_id = r.string("RevisionId");
  update.dry_run = r.boolean("DryRun").value_or(false);
  if (auto archs = r.array("Architectures")) {
    for (auto a : *archs) {
      std::string_view v;
      if (a.get_string().get(v) || v != "x86_64") {
        r.fail(invalid("Architectures must be [\"x86_64\"] on this node"));
        break;
      }
    }
  }
  auto source = read_code(r, obj, "", limits);
  if (!r.failed() && !source.zip && !source.image_uri)
    r.fail(invalid("Please provide a source for function code: ZipFile is required for Zip "
                   "functions, ImageUri for Image functions"));
  if (err) {
    out.error = *err;
    return out;
  }
  if (source.zip)
    update.zip = std::move(*source.zip);
  else
    update.image_uri = std::move(*source.image_uri);
  out.value = std::move(update);
  return out;
}

parsed<event_invoke_update> parse_event_invoke_config(std::string_view body, bool replace) {
  parsed<event_invoke_update> out;
  dom::parser parser;
  dom::object obj;
  // SDKs send "{}" for a request without body members; accept nothing as
  // the same so that the answer names the missing settings.
  if (!parse_object(parser, body.empty() ? std::string_view{"{}"} : body, obj, out.error))
    return out;
  std::optional<api_error> err;
  object_reader r{obj, err};
  event_invoke_update update;
  update.replace = replace;
  auto retries = r.integer("MaximumRetryAttempts");
  check_range(r, "maximumRetryAttempts", retries, 0, 2);
  auto age = r.integer("MaximumEventAgeInSeconds");
  check_range(r, "maximumEventAgeInSeconds", age, 60, 21600);
  auto destinations = r.object("DestinationConfig");
  if (destinations) {
    std::optional<api_error> derr;
    object_reader dr{*destinations, derr};
    update.on_success
      = read_destination(dr, "OnSuccess", "destinationConfig.onSuccess.destination");
    update.on_failure
      = read_destination(dr, "OnFailure", "destinationConfig.onFailure.destination");
    if (derr)
      r.fail(*derr);
  }
  if (!r.failed() && !retries && !age && !destinations)
    r.fail(invalid("You must specify at least one of error handling or destination setting."));
  if (err) {
    out.error = *err;
    return out;
  }
  if (retries)
    update.maximum_retry_attempts = static_cast<int32_t>(*retries);
  if (age)
    update.maximum_event_age_seconds = static_cast<int32_t>(*age);
  out.value = std::move(update);
  return out;
}

namespace {

void write_configuration(json_writer& w, const storage::function_record& r,
                         std::string_view region) {
  w.begin_object();
  w.key("FunctionName").value(r.name);
  w.key("FunctionArn").value(function_arn(region, r.account_id, r.name));
  const bool image = r.package_type == "Image";
  if (!image)
    w.key("Runtime").value(r.runtime);
  w.key("Role").value(r.role);
  if (!image)
    w.key("Handler").value(r.handler);
  w.key("CodeSize").value(r.code_size);
  w.key("Description").value(r.description);
  w.key("Timeout").value(r.timeout);
  w.key("MemorySize").value(r.memory_size);
  w.key("LastModified").value(r.last_modified);
  w.key("CodeSha256").value(r.code_sha256);
  w.key("Version").value(r.version);
  if (r.has_environment) {
    w.key("Environment").begin_object().key("Variables").begin_object();
    for (const auto& [k, v] : r.environment)
      w.key(k).value(v);
    w.end_object().end_object();
  }
  if (!r.dead_letter_target.empty())
    w.key("DeadLetterConfig")
      .begin_object()
      .key("TargetArn")
      .value(r.dead_letter_target)
      .end_object();
  w.key("TracingConfig").begin_object().key("Mode").value("PassThrough").end_object();
  w.key("RevisionId").value(r.revision_id);
  w.key("State").value(r.state);
  w.key("LastUpdateStatus").value(r.last_update_status);
  w.key("PackageType").value(r.package_type);
  if (image && r.image_config.any_set()) {
    const auto& c = r.image_config;
    w.key("ImageConfigResponse").begin_object().key("ImageConfig").begin_object();
    if (c.entry_point_set) {
      w.key("EntryPoint");
      write_strings(w, c.entry_point);
    }
    if (c.command_set) {
      w.key("Command");
      write_strings(w, c.command);
    }
    if (c.working_directory_set)
      w.key("WorkingDirectory").value(c.working_directory);
    w.end_object().end_object();
  }
  w.key("Architectures").begin_array();
  for (const auto& a : r.architectures)
    w.value(a);
  w.end_array();
  w.key("EphemeralStorage").begin_object().key("Size").value(r.ephemeral_storage).end_object();
  w.key("SnapStart")
    .begin_object()
    .key("ApplyOn")
    .value("None")
    .key("OptimizationStatus")
    .value("Off")
    .end_object();
  w.key("LoggingConfig")
    .begin_object()
    .key("LogFormat")
    .value("Text")
    .key("LogGroup")
    .value("/aws/lambda/" + r.name)
    .end_object();
  w.end_object();
}

// FunctionEventInvokeConfig as AWS renders it: the settings that were given,
// and DestinationConfig always, with empty objects for unset destinations.
void write_event_invoke_config(json_writer& w, std::string_view function_arn,
                               const storage::event_invoke_config& c) {
  // LastModified is a timestamp, which the REST-JSON protocol sends as epoch
  // seconds with a fraction, e.g. 1573686021.479.
  auto ms = std::max<int64_t>(c.last_modified_ms, 0);
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%lld.%03lld", static_cast<long long>(ms / 1000),
                static_cast<long long>(ms % 1000));
  w.begin_object();
  w.key("LastModified").raw(seconds);
  w.key("FunctionArn").value(function_arn);
  if (c.maximum_retry_attempts >= 0)
    w.key("MaximumRetryAttempts").value(c.maximum_retry_attempts);
  if (c.maximum_event_age_seconds >= 0)
    w.key("MaximumEventAgeInSeconds").value(c.maximum_event_age_seconds);
  w.key("DestinationConfig").begin_object();
  w.key("OnSuccess").begin_object();
  if (!c.on_success.empty())
    w.key("Destination").value(c.on_success);
  w.end_object();
  w.key("OnFailure").begin_object();
  if (!c.on_failure.empty())
    w.key("Destination").value(c.on_failure);
  w.end_object();
  w.end_object();
  w.end_object();
}

} // namespace

std::string event_invoke_config_json(std::string_view function_arn,
                                     const storage::event_invoke_config& config) {
  json_writer w;
  write_event_invoke_config(w, function_arn, config);
  return w.take();
}

std::string list_event_invoke_configs_json(
  const std::vector<std::pair<std::string, storage::event_invoke_config>>& page,
  std::string_view next_marker) {
  json_writer w;
  w.begin_object();
  w.key("FunctionEventInvokeConfigs").begin_array();
  for (const auto& [arn, config] : page)
    write_event_invoke_config(w, arn, config);
  w.end_array();
  if (!next_marker.empty())
    w.key("NextMarker").value(next_marker);
  w.end_object();
  return w.take();
}

std::string configuration_json(const storage::function_record& r, std::string_view region) {
  json_writer w;
  write_configuration(w, r, region);
  return w.take();
}

std::string get_function_json(const storage::function_record& r, std::string_view region,
                              std::string_view code_location) {
  json_writer w;
  w.begin_object();
  w.key("Configuration");
  write_configuration(w, r, region);
  if (r.package_type == "Image")
    w.key("Code")
      .begin_object()
      .key("RepositoryType")
      .value("ECR")
      .key("ImageUri")
      .value(r.image_uri)
      .key("ResolvedImageUri")
      .value(r.resolved_image_uri)
      .end_object();
  else
    w.key("Code")
      .begin_object()
      .key("RepositoryType")
      .value("S3")
      .key("Location")
      .value(code_location)
      .end_object();
  if (r.reserved_concurrency >= 0)
    w.key("Concurrency")
      .begin_object()
      .key("ReservedConcurrentExecutions")
      .value(r.reserved_concurrency)
      .end_object();
  w.end_object();
  return w.take();
}

std::string list_functions_json(const std::vector<storage::function_record>& page,
                                std::string_view region, std::string_view next_marker) {
  json_writer w;
  w.begin_object();
  w.key("Functions").begin_array();
  for (const auto& r : page)
    write_configuration(w, r, region);
  w.end_array();
  if (!next_marker.empty())
    w.key("NextMarker").value(next_marker);
  w.end_object();
  return w.take();
}

std::string account_settings_json(const account_settings& s) {
  json_writer w;
  w.begin_object();
  w.key("AccountLimit")
    .begin_object()
    .key("TotalCodeSize")
    .value(s.total_code_size_limit)
    .key("CodeSizeUnzipped")
    .value(s.code_size_unzipped_limit)
    .key("CodeSizeZipped")
    .value(s.code_size_zipped_limit)
    .key("ConcurrentExecutions")
    .value(s.concurrent_executions)
    .key("UnreservedConcurrentExecutions")
    .value(s.unreserved_concurrent_executions)
    .end_object();
  w.key("AccountUsage")
    .begin_object()
    .key("TotalCodeSize")
    .value(s.total_code_size)
    .key("FunctionCount")
    .value(s.function_count)
    .end_object();
  w.end_object();
  return w.take();
}

http_response json_response(int status, std::string body) {
  http_response res;
  res.status = status;
  res.body = std::move(body);
  res.set_header("Content-Type", "application/json");
  return res;
}

http_response error_response(const api_error& error) {
  json_writer w;
  w.begin_object();
  w.key("Type").value(error.status >= 500 ? "Service" : "User");
  w.key("Message").value(error.message);
  w.key("message").value(error.message);
  w.end_object();
  auto res = json_response(error.status, w.take());
  res.set_header("x-amzn-ErrorType", error.type);
  return res;
}

} // namespace nimbus::transport::lambda
