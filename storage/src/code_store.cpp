#include "nimbus/storage/code_store.hpp"

#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/durable_file.hpp"
#include "nimbus/storage/json.hpp"
#include "nimbus/storage/pack_chunk_store.hpp"

#include <simdjson.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

namespace nimbus::storage {

namespace {

/// A private directory for one flattening; removed with everything in it.
struct work_dir {
  std::string path;
  explicit work_dir(const std::string& root) : path(root + "/" + request_hex(8)) {
  }
  ~work_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

std::string invalid(std::string message) {
  return "invalid: " + message;
}

std::string digest_hex(const std::string& digest) {
  constexpr std::string_view prefix = "sha256:";
  if (digest.size() != prefix.size() + 64 || digest.compare(0, prefix.size(), prefix) != 0)
    return {};
  auto hex = digest.substr(prefix.size());
  if (hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    return {};
  return hex;
}

void write_strings(json_writer& w, const char* key, const std::vector<std::string>& values) {
  w.key(key).begin_array();
  for (const auto& v : values)
    w.value(v);
  w.end_array();
}

bool read_strings(simdjson::dom::element obj, const char* key, std::vector<std::string>& out) {
  simdjson::dom::array arr;
  if (obj[key].get(arr))
    return false;
  for (auto item : arr) {
    std::string_view s;
    if (item.get(s))
      return false;
    out.emplace_back(s);
  }
  return true;
}

} // namespace

std::unique_ptr<code_store> code_store::open(const code_store_options& options,
                                             std::string& error) {
  std::unique_ptr<code_store> cs{new code_store};
  cs->options_ = options;
  for (auto sub : {"", "/chunks", "/images", "/keys", "/repositories"})
    if (auto s = make_directories(options.dir + sub); !s.ok()) {
      error = s.error;
      return nullptr;
    }
  // Leftovers of flattenings a killed node did not finish.
  std::error_code ec;
  std::filesystem::remove_all(options.dir + "/work", ec);
  if (auto s = make_directories(options.dir + "/work"); !s.ok()) {
    error = s.error;
    return nullptr;
  }
  std::shared_ptr<key_store> keys = key_store::open(options.dir + "/keys", options.master_key_file,
                                                    error);
  if (!keys)
    return nullptr;
  // Packs; chunk files of the legacy layout found there are imported.
  auto chunks = open_pack_chunk_store(options.dir + "/chunks", error);
  if (!chunks)
    return nullptr;
  auto domain = options.convergence_domain == "global" ? convergence_domain::global
                                                       : convergence_domain::account;
  cs->images_ = image_store::open(options.dir + "/images", chunks, keys, domain, error);
  if (!cs->images_)
    return nullptr;
  return cs;
}

std::string code_store::store_zip(const std::string& account, std::string_view zip,
                                  stored_zip& out) {
  auto digest = sha256(zip);
  out.sha256_hex = to_hex(digest);
  out.sha256_base64 = base64_encode(as_bytes(digest));
  out.image = "zip-" + out.sha256_hex;
  out.zip_bytes = zip.size();
  auto source = "src-" + out.sha256_hex;
  if (images_->exists(account, out.image) && images_->exists(account, source)) {
    image_manifest m;
    if (images_->manifest(account, out.image, m).empty()) {
      out.image_bytes = m.size;
      std::lock_guard lock(mutex_);
      ++counters_.zips_deduplicated;
      return {};
    }
  }
  work_dir work{options_.dir + "/work"};
  if (auto s = make_directories(work.path); !s.ok())
    return s.error;
  auto image_path = work.path + "/image.erofs";
  auto limits = options_.limits;
  limits.max_bytes = std::min(limits.max_bytes, options_.zip_unpacked_bytes);
  if (auto problem = flatten_zip(zip, work.path, image_path, limits);
      !problem.empty())
    return invalid(problem);
  image_info info;
  if (auto problem = images_->put_file(account, out.image, image_path, info); !problem.empty())
    return problem;
  image_info source_info;
  if (auto problem = images_->put_bytes(account, source, zip, source_info); !problem.empty())
    return problem;
  out.image_bytes = info.size;
  out.new_chunks = info.new_chunks + source_info.new_chunks;
  std::lock_guard lock(mutex_);
  ++counters_.zips_stored;
  counters_.chunks_written += out.new_chunks;
  return {};
}

std::string code_store::read_zip(const std::string& account, const std::string& sha256_hex,
                                 std::string& out) {
  return images_->read_image(account, "src-" + sha256_hex, out);
}

std::string code_store::remove_zip(const std::string& account, const std::string& sha256_hex) {
  if (auto problem = images_->remove(account, "zip-" + sha256_hex); !problem.empty())
    return problem;
  if (auto problem = images_->remove(account, "src-" + sha256_hex); !problem.empty())
    return problem;
  collect_garbage();
  return {};
}

std::string code_store::push_image(const std::string& account, const std::string& archive_path,
                                   const std::string& repository, const std::string& tag,
                                   pushed_image& out) {
  work_dir work{options_.dir + "/work"};
  if (auto s = make_directories(work.path); !s.ok())
    return s.error;
  auto image_path = work.path + "/image.erofs";
  container_image flattened;
  if (auto problem = flatten_container_archive(archive_path, work.path, image_path,
                                               options_.limits, flattened);
      !problem.empty())
    return invalid(problem);
  auto hex = digest_hex(flattened.digest);
  if (hex.empty())
    return "the flattened image has no valid digest";
  out.repository = repository;
  out.tag = tag;
  out.digest = flattened.digest;
  out.image = "oci-" + hex;
  out.config = flattened.config;
  image_info info;
  if (auto problem = images_->put_file(account, out.image, image_path, info); !problem.empty())
    return problem;
  out.image_bytes = info.size;
  out.new_chunks = info.new_chunks;
  std::lock_guard lock(mutex_);
  if (auto problem = load_repositories(account); !problem.empty())
    return problem;
  auto& tags = repositories_[account];
  auto key = repository + ":" + tag;
  auto previous = tags.find(key);
  std::optional<pushed_image> replaced;
  if (previous != tags.end())
    replaced = previous->second;
  tags[key] = out;
  if (auto problem = save_repositories(account); !problem.empty()) {
    if (replaced)
      tags[key] = *replaced;
    else
      tags.erase(key);
    return problem;
  }
  ++counters_.images_pushed;
  counters_.chunks_written += info.new_chunks;
  return {};
}

std::string code_store::resolve_image(const std::string& account, const std::string& repository,
                                      const std::string& tag_or_digest, pushed_image& out) {
  std::lock_guard lock(mutex_);
  if (auto problem = load_repositories(account); !problem.empty())
    return problem;
  auto& tags = repositories_[account];
  if (tag_or_digest.rfind("sha256:", 0) == 0) {
    for (const auto& [key, image] : tags)
      if (image.repository == repository && image.digest == tag_or_digest) {
        out = image;
        return {};
      }
  } else if (auto it = tags.find(repository + ":" + tag_or_digest); it != tags.end()) {
    out = it->second;
    return {};
  }
  return "not found";
}

uint64_t code_store::collect_garbage() {
  uint64_t removed = 0;
  images_->collect_garbage(removed);
  std::lock_guard lock(mutex_);
  counters_.chunks_collected += removed;
  return removed;
}

image_store& code_store::images() {
  return *images_;
}

std::shared_ptr<chunk_store> code_store::chunks() const {
  return images_->chunks();
}

code_store::counters code_store::stats() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

std::string code_store::load_repositories(const std::string& account) {
  if (repositories_.count(account))
    return {};
  auto path = options_.dir + "/repositories/" + account + ".json";
  std::string text;
  auto& tags = repositories_[account];
  if (auto s = read_file(path, text); !s.ok()) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      return {};
    repositories_.erase(account);
    return s.error;
  }
  simdjson::dom::parser parser;
  simdjson::padded_string padded{text};
  simdjson::dom::object root;
  if (parser.parse(padded).get(root)) {
    repositories_.erase(account);
    return "unreadable repository index " + path;
  }
  for (auto [key, value] : root) {
    pushed_image image;
    std::string_view s;
    uint64_t n = 0;
    if (value["repository"].get(s))
      continue;
    image.repository = std::string{s};
    if (value["tag"].get(s))
      continue;
    image.tag = std::string{s};
    if (value["digest"].get(s))
      continue;
    image.digest = std::string{s};
    if (value["image"].get(s))
      continue;
    image.image = std::string{s};
    if (!value["working_dir"].get(s))
      image.config.working_dir = std::string{s};
    if (!value["image_bytes"].get(n))
      image.image_bytes = n;
    read_strings(value, "entrypoint", image.config.entrypoint);
    read_strings(value, "cmd", image.config.cmd);
    read_strings(value, "env", image.config.env);
    tags.emplace(std::string{key}, std::move(image));
  }
  return {};
}

std::string code_store::save_repositories(const std::string& account) {
  json_writer w;
  w.begin_object();
  for (const auto& [key, image] : repositories_[account]) {
    w.key(key).begin_object();
    w.key("repository").value(image.repository);
    w.key("tag").value(image.tag);
    w.key("digest").value(image.digest);
    w.key("image").value(image.image);
    w.key("working_dir").value(image.config.working_dir);
    w.key("image_bytes").value(image.image_bytes);
    write_strings(w, "entrypoint", image.config.entrypoint);
    write_strings(w, "cmd", image.config.cmd);
    write_strings(w, "env", image.config.env);
    w.end_object();
  }
  w.end_object();
  auto s = write_file_atomic(options_.dir + "/repositories/" + account + ".json", w.str());
  return s.error;
}

} // namespace nimbus::storage
