#include "nimbus/storage/container_archive.hpp"

#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/staging_tree.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <simdjson.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_set>

namespace nimbus::storage {

namespace {

// Largest JSON document (manifest, index, config) read into memory.
constexpr size_t max_json_size = 16 << 20;
// Most members an outer archive may list.
constexpr size_t max_members = 200'000;
// Most link hops from a member name to a regular member.
constexpr int max_link_hops = 16;

struct archive_free {
  void operator()(archive* a) const {
    archive_read_free(a);
  }
};
using archive_ptr = std::unique_ptr<archive, archive_free>;

std::string archive_message(archive* a) {
  const char* text = archive_error_string(a);
  return text != nullptr ? text : "unknown error";
}

// Streaming SHA-256 (the one-shot sha256() of digest.hpp needs all bytes).
class sha256_stream {
public:
  sha256_stream() : ctx_{EVP_MD_CTX_new()} {
    EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
  }
  ~sha256_stream() {
    EVP_MD_CTX_free(ctx_);
  }
  sha256_stream(const sha256_stream&) = delete;
  sha256_stream& operator=(const sha256_stream&) = delete;
  void update(const void* data, size_t n) {
    EVP_DigestUpdate(ctx_, data, n);
  }
  /// "sha256:<hex>" of everything so far.
  std::string finish() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, out, &len);
    return "sha256:" + to_hex(std::string_view{reinterpret_cast<const char*>(out), len});
  }

private:
  EVP_MD_CTX* ctx_;
};

bool is_sha256_digest(const std::string& digest) {
  if (digest.size() != 71 || digest.compare(0, 7, "sha256:") != 0)
    return false;
  for (size_t i = 7; i < digest.size(); ++i) {
    char c = digest[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  }
  return true;
}

// "blobs/sha256/<hex>" -> "sha256:<hex>"; "<hex>.json" (legacy docker
// config) -> "sha256:<hex>"; anything else -> "".
std::string digest_from_member(const std::string& member) {
  std::string candidate;
  if (member.compare(0, 13, "blobs/sha256/") == 0)
    candidate = "sha256:" + member.substr(13);
  else if (member.size() == 69 && member.compare(64, 5, ".json") == 0)
    candidate = "sha256:" + member.substr(0, 64);
  return is_sha256_digest(candidate) ? candidate : std::string{};
}

std::string short_digest(const std::string& digest) {
  return digest.size() > 19 ? digest.substr(0, 19) + "..." : digest;
}

// Resolves `target` of a symlink member named `from` lexically (".." pops a
// component); false if it leaves the archive's root.
bool join_link(const std::string& from, const std::string& target, std::string& out) {
  std::vector<std::string> parts;
  if (!target.empty() && target.front() != '/') {
    std::string_view dir = from;
    auto slash = dir.rfind('/');
    dir = slash == std::string_view::npos ? std::string_view{} : dir.substr(0, slash);
    while (!dir.empty()) {
      auto s = dir.find('/');
      parts.emplace_back(dir.substr(0, s));
      dir = s == std::string_view::npos ? std::string_view{} : dir.substr(s + 1);
    }
  }
  std::string_view rest = target;
  while (!rest.empty()) {
    auto s = rest.find('/');
    std::string part{rest.substr(0, s)};
    rest = s == std::string_view::npos ? std::string_view{} : rest.substr(s + 1);
    if (part.empty() || part == ".")
      continue;
    if (part == "..") {
      if (parts.empty())
        return false;
      parts.pop_back();
    } else {
      parts.push_back(part);
    }
  }
  out.clear();
  for (const auto& p : parts)
    out += (out.empty() ? "" : "/") + p;
  return !out.empty();
}

// The outer archive (docker save tar, OCI layout tar), read in streaming
// passes: one to list the members, then one per member that is read. Each
// pass skips the data it does not need (lseek on an uncompressed archive).
class outer_archive {
public:
  explicit outer_archive(std::string path) : path_{std::move(path)} {}

  std::string scan() {
    archive_ptr a;
    if (auto problem = open(a); !problem.empty())
      return problem;
    archive_entry* entry = nullptr;
    for (;;) {
      int r = archive_read_next_header(a.get(), &entry);
      if (r == ARCHIVE_EOF)
        break;
      if (r < ARCHIVE_WARN)
        return "the archive is not a readable tar: " + archive_message(a.get());
      std::string name;
      const char* raw = archive_entry_pathname(entry);
      if (raw == nullptr || !normalise_entry_path(raw, name) || name.empty())
        continue; // not something a manifest can name
      if (members_.size() >= max_members)
        return "the archive has more than " + std::to_string(max_members) + " members";
      member m;
      m.size = static_cast<uint64_t>(std::max<la_int64_t>(0, archive_entry_size(entry)));
      if (const char* hard = archive_entry_hardlink(entry)) {
        m.kind = member::hardlink;
        if (!normalise_entry_path(hard, m.link))
          m.kind = member::other;
      } else {
        switch (archive_entry_filetype(entry)) {
        case AE_IFREG:
          m.kind = member::regular;
          break;
        case AE_IFLNK:
          m.kind = member::symlink;
          m.link = archive_entry_symlink(entry) ? archive_entry_symlink(entry) : "";
          break;
        case AE_IFDIR:
          m.kind = member::directory;
          break;
        default:
          m.kind = member::other;
        }
      }
      auto [it, inserted] = members_.emplace(name, m);
      if (!inserted && it->second.kind != member::directory)
        return "the archive holds member '" + name + "' twice";
      it->second = m;
    }
    return {};
  }

  bool has(const std::string& name) const {
    return members_.count(name) > 0;
  }

  // Follows symlink and hard link members to the regular member they name.
  std::string resolve(const std::string& name, std::string& regular, uint64_t& size) const {
    std::string current = name;
    for (int hop = 0; hop < max_link_hops; ++hop) {
      auto it = members_.find(current);
      if (it == members_.end())
        return "the archive has no member '" + current + "'";
      const auto& m = it->second;
      switch (m.kind) {
      case member::regular:
        regular = current;
        size = m.size;
        return {};
      case member::hardlink:
        current = m.link;
        break;
      case member::symlink: {
        std::string next;
        if (!join_link(current, m.link, next))
          return "member '" + current + "' links outside the archive";
        current = next;
        break;
      }
      default:
        return "member '" + current + "' is not a file";
      }
    }
    return "member '" + name + "' has too many link hops";
  }

  // Opens a pass positioned at the data of the regular member `name`.
  std::string open_at(const std::string& name, archive_ptr& a) const {
    if (auto problem = open(a); !problem.empty())
      return problem;
    archive_entry* entry = nullptr;
    for (;;) {
      int r = archive_read_next_header(a.get(), &entry);
      if (r == ARCHIVE_EOF)
        return "the archive has no member '" + name + "'";
      if (r < ARCHIVE_WARN)
        return "cannot read the archive: " + archive_message(a.get());
      std::string current;
      const char* raw = archive_entry_pathname(entry);
      if (raw != nullptr && normalise_entry_path(raw, current) && current == name
          && archive_entry_hardlink(entry) == nullptr && archive_entry_filetype(entry) == AE_IFREG)
        return {};
    }
  }

  // Reads a small member whole (following links), at most `limit` bytes.
  std::string read_small(const std::string& name, size_t limit, std::string& out) const {
    std::string regular;
    uint64_t size = 0;
    if (auto problem = resolve(name, regular, size); !problem.empty())
      return problem;
    if (size > limit)
      return "member '" + name + "' is too large (" + std::to_string(size) + " bytes)";
    archive_ptr a;
    if (auto problem = open_at(regular, a); !problem.empty())
      return problem;
    out.clear();
    char buffer[65536];
    for (;;) {
      auto n = archive_read_data(a.get(), buffer, sizeof buffer);
      if (n < 0)
        return "cannot read member '" + name + "': " + archive_message(a.get());
      if (n == 0)
        break;
      out.append(buffer, static_cast<size_t>(n));
      if (out.size() > limit)
        return "member '" + name + "' is too large";
    }
    return {};
  }

private:
  struct member {
    enum kind_t { regular, directory, symlink, hardlink, other } kind = other;
    uint64_t size = 0;
    std::string link;
  };

  std::string open(archive_ptr& a) const {
    a.reset(archive_read_new());
    if (!a)
      return "out of memory";
    archive_read_support_filter_all(a.get());
    archive_read_support_format_tar(a.get());
    if (archive_read_open_filename(a.get(), path_.c_str(), 1 << 16) != ARCHIVE_OK)
      return "cannot open the archive: " + archive_message(a.get());
    return {};
  }

  std::string path_;
  std::map<std::string, member> members_;
};

// A stage of the layer pipeline: libarchive pulls bytes from `from` through
// this callback, which hashes and counts them on the way.
struct hashing_source {
  archive* from = nullptr;
  sha256_stream hash;
  uint64_t bytes = 0;
  std::string error;
  std::vector<char> buffer = std::vector<char>(1 << 16);

  static la_ssize_t read(archive*, void* self, const void** out) {
    auto* s = static_cast<hashing_source*>(self);
    auto n = archive_read_data(s->from, s->buffer.data(), s->buffer.size());
    if (n < 0) {
      s->error = archive_message(s->from);
      return ARCHIVE_FATAL;
    }
    s->hash.update(s->buffer.data(), static_cast<size_t>(n));
    s->bytes += static_cast<uint64_t>(n);
    *out = s->buffer.data();
    return n;
  }

  // Reads (and hashes) whatever the next stage left unread.
  bool drain() {
    const void* ignored = nullptr;
    la_ssize_t n;
    while ((n = read(nullptr, this, &ignored)) > 0) {
    }
    return n == 0;
  }
};

// One layer to apply: where it is and what it must hash to.
struct layer_ref {
  std::string member;
  std::string digest;  // of the stored (possibly compressed) blob; "" if unknown
  int64_t size = -1;   // of the stored blob; -1 if unknown
  std::string diff_id; // of the uncompressed tar, from the config
};

// Marks `rel` and its ancestors as written by the current layer.
void mark_touched(std::unordered_set<std::string>& touched, const std::string& rel) {
  std::string path = rel;
  while (touched.insert(path).second) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos)
      break;
    path.resize(slash);
  }
}

// Applies one entry of a layer to the tree.
std::string apply_entry(archive* tar, archive_entry* entry, staging_tree& tree,
                        std::unordered_set<std::string>& touched) {
  const char* raw = archive_entry_pathname(entry);
  if (raw == nullptr)
    return "an entry has no name";
  std::string rel;
  if (!normalise_entry_path(raw, rel))
    return "entry '" + std::string{raw}.substr(0, 200)
           + "' has a '..' component or is too long or too deep";
  if (rel.empty())
    return {}; // "./": the root exists
  auto slash = rel.rfind('/');
  std::string dir = slash == std::string::npos ? "" : rel.substr(0, slash);
  std::string base = slash == std::string::npos ? rel : rel.substr(slash + 1);
  // Whiteouts hide entries of lower layers only, never this layer's own
  // (OCI image spec, "Whiteouts"), whatever their order in the tar.
  if (base.compare(0, 4, ".wh.") == 0) {
    if (base == ".wh..wh..opq")
      return tree.clear_directory(
          dir, [&touched](const std::string& path) { return touched.count(path) > 0; });
    if (base.compare(0, 8, ".wh..wh.") == 0)
      return {}; // other AUFS metadata
    std::string target = (dir.empty() ? "" : dir + "/") + base.substr(4);
    if (touched.count(target) > 0)
      return {};
    return tree.remove(target);
  }
  mark_touched(touched, rel);
  if (const char* hard = archive_entry_hardlink(entry))
    return tree.add_hard_link(rel, hard);
  switch (archive_entry_filetype(entry)) {
  case AE_IFREG:
    return tree.add_file(rel, archive_entry_perm(entry), [tar](char* buffer, size_t capacity) {
      auto n = archive_read_data(tar, buffer, capacity);
      return static_cast<int64_t>(n < 0 ? -1 : n);
    });
  case AE_IFDIR:
    return tree.add_directory(rel);
  case AE_IFLNK: {
    const char* target = archive_entry_symlink(entry);
    return tree.add_symlink(rel, target != nullptr ? target : "");
  }
  default:
    return {}; // devices, fifos and sockets are dropped
  }
}

// Streams one layer from the outer archive into the tree and checks its
// digests. Pipeline: outer member bytes (hashed: the blob digest) -> libarchive
// decompression (format "raw") -> bytes (hashed: the diff id) -> tar reader.
std::string apply_layer(const outer_archive& outer, const layer_ref& layer, staging_tree& tree) {
  std::string regular;
  uint64_t stored_size = 0;
  if (auto problem = outer.resolve(layer.member, regular, stored_size); !problem.empty())
    return problem;
  archive_ptr source;
  if (auto problem = outer.open_at(regular, source); !problem.empty())
    return problem;
  hashing_source stored;
  stored.from = source.get();
  archive_ptr raw{archive_read_new()};
  archive_read_support_filter_all(raw.get());
  archive_read_support_format_raw(raw.get());
  archive_entry* entry = nullptr;
  if (archive_read_open(raw.get(), &stored, nullptr, &hashing_source::read, nullptr) != ARCHIVE_OK
      || archive_read_next_header(raw.get(), &entry) != ARCHIVE_OK)
    return "not a tar, gzip or zstd stream: "
           + (stored.error.empty() ? archive_message(raw.get()) : stored.error);
  hashing_source unpacked;
  unpacked.from = raw.get();
  archive_ptr tar{archive_read_new()};
  archive_read_support_format_tar(tar.get());
  if (archive_read_open(tar.get(), &unpacked, nullptr, &hashing_source::read, nullptr)
      != ARCHIVE_OK)
    return "not a tar: " + archive_message(tar.get());
  std::unordered_set<std::string> touched;
  for (;;) {
    int r = archive_read_next_header(tar.get(), &entry);
    if (r == ARCHIVE_EOF)
      break;
    if (r < ARCHIVE_WARN) {
      auto why = !stored.error.empty()     ? stored.error
                 : !unpacked.error.empty() ? unpacked.error
                                           : archive_message(tar.get());
      return "the layer is not a readable tar: " + why;
    }
    if (auto problem = apply_entry(tar.get(), entry, tree, touched); !problem.empty()) {
      if (!stored.error.empty() || !unpacked.error.empty())
        return problem + " (" + (stored.error.empty() ? unpacked.error : stored.error) + ")";
      return problem;
    }
  }
  tar.reset();
  if (!unpacked.drain() || !stored.drain())
    return "cannot read the layer to its end: "
           + (stored.error.empty() ? unpacked.error : stored.error);
  auto blob_digest = stored.hash.finish();
  auto diff_id = unpacked.hash.finish();
  if (layer.size >= 0 && stored.bytes != static_cast<uint64_t>(layer.size))
    return "size mismatch: the descriptor says " + std::to_string(layer.size)
           + " bytes, the blob has " + std::to_string(stored.bytes);
  if (!layer.digest.empty() && blob_digest != layer.digest)
    return "digest mismatch: expected " + layer.digest + ", the blob has " + blob_digest;
  if (diff_id != layer.diff_id)
    return "diff id mismatch: the config says " + layer.diff_id + ", the uncompressed layer has "
           + diff_id;
  return {};
}

// An OCI content descriptor.
struct descriptor {
  std::string media_type;
  std::string digest;
  int64_t size = -1;
  std::string os;
  std::string architecture;
};

std::string parse_descriptor(simdjson::dom::element element, descriptor& out) {
  std::string_view text;
  if (element["mediaType"].get_string().get(text) == simdjson::SUCCESS)
    out.media_type = std::string{text};
  if (element["digest"].get_string().get(text) != simdjson::SUCCESS)
    return "a descriptor has no digest";
  out.digest = std::string{text};
  if (!is_sha256_digest(out.digest))
    return "unsupported digest '" + out.digest.substr(0, 80) + "' (only sha256 is)";
  int64_t size = 0;
  if (element["size"].get_int64().get(size) != simdjson::SUCCESS || size < 0)
    return "descriptor " + short_digest(out.digest) + " has no valid size";
  out.size = size;
  simdjson::dom::element platform;
  if (element["platform"].get(platform) == simdjson::SUCCESS) {
    if (platform["os"].get_string().get(text) == simdjson::SUCCESS)
      out.os = std::string{text};
    if (platform["architecture"].get_string().get(text) == simdjson::SUCCESS)
      out.architecture = std::string{text};
  }
  return {};
}

std::string blob_member(const std::string& digest) {
  return "blobs/sha256/" + digest.substr(7);
}

// Reads a JSON blob named by a descriptor and checks its size and digest.
std::string read_blob(const outer_archive& outer, const descriptor& d, const char* what,
                      std::string& out) {
  auto member = blob_member(d.digest);
  if (static_cast<uint64_t>(d.size) > max_json_size)
    return std::string{what} + " " + member + " is too large";
  if (auto problem = outer.read_small(member, max_json_size, out); !problem.empty())
    return std::string{what} + ": " + problem;
  if (out.size() != static_cast<uint64_t>(d.size))
    return std::string{what} + " " + member + ": size mismatch: the descriptor says "
           + std::to_string(d.size) + " bytes, the blob has " + std::to_string(out.size());
  auto actual = "sha256:" + to_hex(sha256(out));
  if (actual != d.digest)
    return std::string{what} + " " + member + ": digest mismatch: expected " + d.digest
           + ", the blob has " + actual;
  return {};
}

std::string parse_json(simdjson::dom::parser& parser, const std::string& text, const char* what,
                       simdjson::dom::element& out) {
  if (parser.parse(text).get(out) != simdjson::SUCCESS)
    return std::string{what} + " is not valid JSON";
  return {};
}

bool is_index_type(const std::string& media_type) {
  return media_type == "application/vnd.oci.image.index.v1+json"
         || media_type == "application/vnd.docker.distribution.manifest.list.v2+json";
}

// Reads an OCI layout: index -> manifest -> config and layer descriptors.
std::string read_oci(const outer_archive& outer, std::string& config_json,
                     std::string& config_digest, std::vector<layer_ref>& layers) {
  std::string text;
  if (auto problem = outer.read_small("index.json", max_json_size, text); !problem.empty())
    return "index.json: " + problem;
  const char* what = "index.json";
  simdjson::dom::parser parser;
  descriptor chosen;
  for (int depth = 0;; ++depth) {
    if (depth > 4)
      return "image indexes are nested too deeply";
    simdjson::dom::element index;
    if (auto problem = parse_json(parser, text, what, index); !problem.empty())
      return problem;
    simdjson::dom::array manifests;
    if (index["manifests"].get_array().get(manifests) != simdjson::SUCCESS)
      return std::string{what} + " has no manifests";
    std::vector<descriptor> all;
    for (auto element : manifests) {
      descriptor d;
      if (auto problem = parse_descriptor(element, d); !problem.empty())
        return std::string{what} + ": " + problem;
      all.push_back(std::move(d));
    }
    if (all.empty())
      return std::string{what} + " lists no manifest";
    if (all.size() == 1) {
      chosen = all.front();
    } else {
      auto it = std::find_if(all.begin(), all.end(), [](const descriptor& d) {
        return d.os == "linux" && d.architecture == "amd64";
      });
      if (it == all.end())
        return std::string{what} + " lists " + std::to_string(all.size())
               + " manifests and none for linux/amd64";
      chosen = *it;
    }
    if (!is_index_type(chosen.media_type))
      break;
    if (auto problem = read_blob(outer, chosen, "image index", text); !problem.empty())
      return problem;
    what = "image index";
  }
  std::string manifest_text;
  if (auto problem = read_blob(outer, chosen, "manifest", manifest_text); !problem.empty())
    return problem;
  simdjson::dom::element manifest;
  if (auto problem = parse_json(parser, manifest_text, "the manifest", manifest); !problem.empty())
    return problem;
  simdjson::dom::element config_element;
  descriptor config;
  if (manifest["config"].get(config_element) != simdjson::SUCCESS)
    return "the manifest has no config";
  if (auto problem = parse_descriptor(config_element, config); !problem.empty())
    return "the manifest's config: " + problem;
  if (auto problem = read_blob(outer, config, "config", config_json); !problem.empty())
    return problem;
  config_digest = config.digest;
  simdjson::dom::array layer_array;
  if (manifest["layers"].get_array().get(layer_array) != simdjson::SUCCESS)
    return "the manifest has no layers";
  for (auto element : layer_array) {
    descriptor d;
    if (auto problem = parse_descriptor(element, d); !problem.empty())
      return "the manifest's layer " + std::to_string(layers.size() + 1) + ": " + problem;
    if (d.media_type.find("encrypted") != std::string::npos)
      return "layer " + std::to_string(layers.size() + 1) + " is encrypted (" + d.media_type + ")";
    layers.push_back({blob_member(d.digest), d.digest, d.size, {}});
  }
  return {};
}

// Reads `docker save` output's manifest.json.
std::string read_docker(const outer_archive& outer, std::string& config_json,
                        std::string& config_digest, std::vector<layer_ref>& layers) {
  std::string text;
  if (auto problem = outer.read_small("manifest.json", max_json_size, text); !problem.empty())
    return "manifest.json: " + problem;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto problem = parse_json(parser, text, "manifest.json", doc); !problem.empty())
    return problem;
  simdjson::dom::array images;
  if (doc.get_array().get(images) != simdjson::SUCCESS)
    return "manifest.json is not a list of images";
  if (images.size() != 1)
    return "manifest.json lists " + std::to_string(images.size())
           + " images; an archive must hold exactly one";
  auto image = images.at(0).value_unsafe();
  std::string_view view;
  if (image["Config"].get_string().get(view) != simdjson::SUCCESS)
    return "manifest.json names no Config";
  std::string config_member;
  if (!normalise_entry_path(view, config_member) || config_member.empty())
    return "manifest.json names an invalid Config";
  if (auto problem = outer.read_small(config_member, max_json_size, config_json); !problem.empty())
    return "config: " + problem;
  config_digest = digest_from_member(config_member);
  simdjson::dom::array layer_array;
  if (image["Layers"].get_array().get(layer_array) != simdjson::SUCCESS)
    return "manifest.json names no Layers";
  for (auto element : layer_array) {
    std::string member;
    if (element.get_string().get(view) != simdjson::SUCCESS || !normalise_entry_path(view, member)
        || member.empty())
      return "manifest.json names an invalid layer " + std::to_string(layers.size() + 1);
    auto digest = digest_from_member(member);
    layers.push_back({member, digest, -1, {}});
  }
  return {};
}

std::string string_array(simdjson::dom::element parent, const char* key,
                         std::vector<std::string>& out) {
  simdjson::dom::element value;
  if (parent[key].get(value) != simdjson::SUCCESS || value.is_null())
    return {};
  simdjson::dom::array array;
  if (value.get_array().get(array) != simdjson::SUCCESS)
    return std::string{"the config's "} + key + " is not a list";
  for (auto item : array) {
    std::string_view text;
    if (item.get_string().get(text) != simdjson::SUCCESS)
      return std::string{"the config's "} + key + " holds a non-string";
    out.emplace_back(text);
  }
  return {};
}

// Reads Entrypoint, Cmd, Env, WorkingDir and rootfs.diff_ids of a config.
std::string parse_config(const std::string& text, container_config& config,
                         std::vector<std::string>& diff_ids) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto problem = parse_json(parser, text, "the config", doc); !problem.empty())
    return problem;
  simdjson::dom::element run;
  if (doc["config"].get(run) == simdjson::SUCCESS && !run.is_null()) {
    if (auto p = string_array(run, "Entrypoint", config.entrypoint); !p.empty())
      return p;
    if (auto p = string_array(run, "Cmd", config.cmd); !p.empty())
      return p;
    if (auto p = string_array(run, "Env", config.env); !p.empty())
      return p;
    std::string_view dir;
    if (run["WorkingDir"].get_string().get(dir) == simdjson::SUCCESS)
      config.working_dir = std::string{dir};
  }
  simdjson::dom::element rootfs;
  if (doc["rootfs"].get(rootfs) != simdjson::SUCCESS)
    return "the config has no rootfs";
  if (auto p = string_array(rootfs, "diff_ids", diff_ids); !p.empty())
    return p;
  for (const auto& id : diff_ids)
    if (!is_sha256_digest(id))
      return "the config has an unsupported diff id '" + id.substr(0, 80) + "'";
  return {};
}

} // namespace

std::string flatten_container_archive(const std::string& archive_path, const std::string& work_dir,
                                      const std::string& image_path, const flatten_limits& limits,
                                      container_image& out) {
  out = {};
  outer_archive outer{archive_path};
  if (auto problem = outer.scan(); !problem.empty())
    return problem;
  std::string config_json, expected_config_digest;
  std::vector<layer_ref> layers;
  if (outer.has("manifest.json")) {
    if (auto problem = read_docker(outer, config_json, expected_config_digest, layers);
        !problem.empty())
      return problem;
  } else if (outer.has("index.json")) {
    if (auto problem = read_oci(outer, config_json, expected_config_digest, layers);
        !problem.empty())
      return problem;
  } else {
    return "the archive has neither manifest.json (docker save) nor index.json (OCI layout)";
  }
  auto config_digest = "sha256:" + to_hex(sha256(config_json));
  if (!expected_config_digest.empty() && config_digest != expected_config_digest)
    return "config: digest mismatch: expected " + expected_config_digest + ", the blob has "
           + config_digest;
  container_config config;
  std::vector<std::string> diff_ids;
  if (auto problem = parse_config(config_json, config, diff_ids); !problem.empty())
    return problem;
  if (diff_ids.size() != layers.size())
    return "the config lists " + std::to_string(diff_ids.size()) + " diff ids for "
           + std::to_string(layers.size()) + " layers";
  staging_area area;
  if (auto problem = area.open(work_dir, "container", limits.max_bytes, limits.max_entries,
                               on_conflict::replace);
      !problem.empty())
    return problem;
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i].diff_id = diff_ids[i];
    if (auto problem = apply_layer(outer, layers[i], area.tree()); !problem.empty())
      return "layer " + std::to_string(i + 1) + " of " + std::to_string(layers.size()) + " ("
             + layers[i].member + "): " + problem;
  }
  if (auto problem = build_erofs(area.tree().root(), image_path); !problem.empty())
    return problem;
  out.config = std::move(config);
  out.digest = config_digest;
  return {};
}

} // namespace nimbus::storage
