#include "nimbus/storage/container_archive.hpp"

#include "nimbus/storage/digest.hpp"

#include "../support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

using namespace nimbus::storage;
using nimbus::test::read_file;
using nimbus::test::temp_dir;
using nimbus::test::write_file;
namespace fs = std::filesystem;

namespace {

// One entry of a tar written by a test: 'f' file, 'd' directory, 'l'
// symlink, 'h' hard link, 'c' character device.
struct tar_entry {
  tar_entry(std::string n, char t = 'f', std::string c = "", uint32_t m = 0644)
    : name{std::move(n)}, type{t}, content{std::move(c)}, mode{m} {
  }
  std::string name;
  char type = 'f';
  std::string content; // file content, or link target
  uint32_t mode = 0644;
  // For big files: `size` bytes produced by `generate` instead of content.
  uint64_t size = 0;
  std::function<void(std::function<void(const char*, size_t)>)> generate;
};

enum class compression { none, gzip, zstd };

std::string digest_of(const std::string& bytes) {
  return "sha256:" + to_hex(sha256(bytes));
}

// Writes a layer tar (pax) through an optional compressor into a file,
// streaming, and returns the diff id (SHA-256 of the uncompressed tar).
// Tar writer A feeds its bytes, hashed, into raw writer B which compresses.
class layer_writer {
public:
  layer_writer(const std::string& path, compression c) {
    ctx_ = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
    outer_ = archive_write_new();
    archive_write_set_format_raw(outer_);
    if (c == compression::gzip) {
      archive_write_add_filter_gzip(outer_);
      archive_write_set_filter_option(outer_, "gzip", "compression-level", "1");
    }
    if (c == compression::zstd)
      REQUIRE(archive_write_add_filter_zstd(outer_) == ARCHIVE_OK);
    archive_write_set_bytes_in_last_block(outer_, 1);
    REQUIRE(archive_write_open_filename(outer_, path.c_str()) == ARCHIVE_OK);
    auto* e = archive_entry_new();
    archive_entry_set_pathname(e, "layer");
    archive_entry_set_filetype(e, AE_IFREG);
    REQUIRE(archive_write_header(outer_, e) == ARCHIVE_OK);
    archive_entry_free(e);
    tar_ = archive_write_new();
    archive_write_set_format_pax_restricted(tar_);
    archive_write_set_bytes_in_last_block(tar_, 1);
    REQUIRE(archive_write_open(tar_, this, nullptr, &layer_writer::write, nullptr) == ARCHIVE_OK);
  }

  void add(const tar_entry& t) {
    auto* e = archive_entry_new();
    archive_entry_set_pathname(e, t.name.c_str());
    archive_entry_set_mtime(e, 1'600'000'000, 0);
    archive_entry_set_uid(e, 1000);
    switch (t.type) {
    case 'd':
      archive_entry_set_filetype(e, AE_IFDIR);
      archive_entry_set_perm(e, 0755);
      break;
    case 'l':
      archive_entry_set_filetype(e, AE_IFLNK);
      archive_entry_set_perm(e, 0777);
      archive_entry_set_symlink(e, t.content.c_str());
      break;
    case 'h':
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_hardlink(e, t.content.c_str());
      archive_entry_set_size(e, 0);
      break;
    case 'c':
      archive_entry_set_filetype(e, AE_IFCHR);
      archive_entry_set_perm(e, 0666);
      archive_entry_set_rdevmajor(e, 1);
      archive_entry_set_rdevminor(e, 3);
      break;
    default:
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, t.mode);
      archive_entry_set_size(e, static_cast<la_int64_t>(t.generate ? t.size : t.content.size()));
    }
    REQUIRE(archive_write_header(tar_, e) == ARCHIVE_OK);
    archive_entry_free(e);
    if (t.type == 'f') {
      if (t.generate)
        t.generate([&](const char* p, size_t n) { archive_write_data(tar_, p, n); });
      else if (!t.content.empty())
        archive_write_data(tar_, t.content.data(), t.content.size());
    }
  }

  std::string finish() {
    archive_write_close(tar_);
    archive_write_free(tar_);
    archive_write_finish_entry(outer_);
    archive_write_close(outer_);
    archive_write_free(outer_);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, out, &len);
    EVP_MD_CTX_free(ctx_);
    return "sha256:" + to_hex(std::string_view{reinterpret_cast<char*>(out), len});
  }

private:
  static la_ssize_t write(archive*, void* self, const void* buffer, size_t n) {
    auto* w = static_cast<layer_writer*>(self);
    EVP_DigestUpdate(w->ctx_, buffer, n);
    archive_write_data(w->outer_, buffer, n);
    return static_cast<la_ssize_t>(n);
  }

  archive* outer_ = nullptr;
  archive* tar_ = nullptr;
  EVP_MD_CTX* ctx_ = nullptr;
};

// A layer written to a file: its path, diff id and stored digest.
struct built_layer {
  std::string path;
  std::string diff_id;
  std::string digest;
  uint64_t size = 0;
};

built_layer make_layer(const std::string& path, const std::vector<tar_entry>& entries,
                       compression c = compression::none) {
  layer_writer w{path, c};
  for (const auto& e : entries)
    w.add(e);
  built_layer out;
  out.path = path;
  out.diff_id = w.finish();
  auto bytes = read_file(path);
  out.digest = digest_of(bytes);
  out.size = bytes.size();
  return out;
}

// One member of an outer archive: content from memory or from a file
// (streamed), or a symlink.
struct member {
  std::string name;
  std::string content;
  std::string from_file;
  std::string symlink;
};

void write_outer(const std::string& path, const std::vector<member>& members) {
  auto* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  REQUIRE(archive_write_open_filename(a, path.c_str()) == ARCHIVE_OK);
  for (const auto& m : members) {
    auto* e = archive_entry_new();
    archive_entry_set_pathname(e, m.name.c_str());
    archive_entry_set_mtime(e, 1'600'000'000, 0);
    if (!m.symlink.empty()) {
      archive_entry_set_filetype(e, AE_IFLNK);
      archive_entry_set_perm(e, 0777);
      archive_entry_set_symlink(e, m.symlink.c_str());
      REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    } else {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, 0644);
      uint64_t size = m.from_file.empty() ? m.content.size() : fs::file_size(m.from_file);
      archive_entry_set_size(e, static_cast<la_int64_t>(size));
      REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
      if (m.from_file.empty()) {
        archive_write_data(a, m.content.data(), m.content.size());
      } else {
        FILE* f = std::fopen(m.from_file.c_str(), "rb");
        REQUIRE(f != nullptr);
        std::vector<char> buffer(1 << 20);
        size_t n;
        while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0)
          archive_write_data(a, buffer.data(), n);
        std::fclose(f);
      }
    }
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

std::string config_json(const std::vector<std::string>& diff_ids) {
  std::string ids;
  for (const auto& id : diff_ids)
    ids += (ids.empty() ? "\"" : ",\"") + id + "\"";
  return R"({"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/tool"],)"
         R"("Cmd":["--serve","8080"],"Env":["PATH=/usr/bin:/bin","MODE=test"],)"
         R"("WorkingDir":"/app"},"rootfs":{"type":"layers","diff_ids":[)"
         + ids + "]}}";
}

std::string descriptor(const char* media_type, const std::string& digest, uint64_t size,
                       const std::string& extra = "") {
  return std::string{R"({"mediaType":")"} + media_type + R"(","digest":")" + digest
         + R"(","size":)" + std::to_string(size) + extra + "}";
}

// Writes a docker-save archive (legacy layout) of the given layers.
std::string docker_archive(const temp_dir& dir, const std::string& name,
                           const std::vector<built_layer>& layers,
                           std::vector<std::string> diff_ids = {}) {
  if (diff_ids.empty())
    for (const auto& l : layers)
      diff_ids.push_back(l.diff_id);
  auto config = config_json(diff_ids);
  auto config_hex = to_hex(sha256(config));
  std::vector<member> members;
  std::string layer_list;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto id = std::string(64, static_cast<char>('a' + i));
    members.push_back({id + "/VERSION", "1.0", "", ""});
    members.push_back({id + "/layer.tar", "", layers[i].path, ""});
    layer_list += (i ? ",\"" : "\"") + id + "/layer.tar\"";
  }
  members.push_back({config_hex + ".json", config, "", ""});
  members.push_back({"manifest.json",
                     R"([{"Config":")" + config_hex + R"(.json","RepoTags":["t:latest"],"Layers":[)"
                       + layer_list + "]}]",
                     "", ""});
  auto path = dir / name;
  write_outer(path, members);
  return path;
}

// Writes an OCI image layout archive. `tamper` may edit the manifest text.
std::string oci_archive(const temp_dir& dir, const std::string& name,
                        const std::vector<built_layer>& layers,
                        const std::function<void(std::string&)>& tamper = nullptr) {
  std::vector<std::string> diff_ids;
  for (const auto& l : layers)
    diff_ids.push_back(l.diff_id);
  auto config = config_json(diff_ids);
  std::string layer_descs;
  for (size_t i = 0; i < layers.size(); ++i)
    layer_descs += (i ? "," : "")
                   + descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layers[i].digest,
                                layers[i].size);
  auto manifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
                  R"("config":)"
                  + descriptor("application/vnd.oci.image.config.v1+json", digest_of(config),
                               config.size())
                  + R"(,"layers":[)" + layer_descs + "]}";
  if (tamper)
    tamper(manifest);
  // Two manifests: one for arm64 (a decoy that does not exist) and ours.
  auto index = R"({"schemaVersion":2,"manifests":[)"
               + descriptor("application/vnd.oci.image.manifest.v1+json",
                            "sha256:" + std::string(64, '0'), 10,
                            R"(,"platform":{"architecture":"arm64","os":"linux"})")
               + ","
               + descriptor("application/vnd.oci.image.manifest.v1+json", digest_of(manifest),
                            manifest.size(), R"(,"platform":{"architecture":"amd64","os":"linux"})")
               + "]}";
  std::vector<member> members = {{"oci-layout", R"({"imageLayoutVersion":"1.0.0"})", "", ""},
                                 {"index.json", index, "", ""}};
  members.push_back({"blobs/sha256/" + digest_of(manifest).substr(7), manifest, "", ""});
  members.push_back({"blobs/sha256/" + digest_of(config).substr(7), config, "", ""});
  for (const auto& l : layers)
    members.push_back({"blobs/sha256/" + l.digest.substr(7), "", l.path, ""});
  auto path = dir / name;
  write_outer(path, members);
  return path;
}

bool extract_image(const std::string& image, const std::string& dir) {
  fs::create_directories(dir);
  std::string command = "/usr/bin/fsck.erofs --extract=" + dir + " " + image + " >/dev/null 2>&1";
  return std::system(command.c_str()) == 0;
}

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    out.insert(e.path().lexically_relative(dir).string());
  return out;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

bool have_erofs_tools() {
  return ::access("/usr/bin/mkfs.erofs", X_OK) == 0 && ::access("/usr/bin/fsck.erofs", X_OK) == 0;
}

// The two layers of the content tests: files, links, a device, a setuid file;
// then a replacement, whiteouts and an opaque directory.
std::vector<tar_entry> lower_layer() {
  return {{"etc/", 'd'},
          {"etc/conf", 'f', "v1"},
          {"bin/tool", 'f', "#!/bin/sh\n", 0755},
          {"bin/hard", 'h', "bin/tool"},
          {"app/old.txt", 'f', "old"},
          {"app/keep/k", 'f', "k"},
          {"opq/a", 'f', "a"},
          {"opq/sub/b", 'f', "b"},
          {"gone.txt", 'f', "bye"},
          {"link", 'l', "etc/conf"},
          {"dev/null", 'c'},
          {"sbin/su", 'f', "su", 04755}};
}

std::vector<tar_entry> upper_layer() {
  return {{"etc/conf", 'f', "v2"},
          {".wh.gone.txt", 'f'},
          {"app/.wh.old.txt", 'f'},
          {"opq/new2", 'f', "written before the marker"},
          {"opq/", 'd'},
          {"opq/.wh..wh..opq", 'f'},
          {"opq/new", 'f', "new"},
          {"same.txt", 'f', "same layer"},
          {".wh.same.txt", 'f'}};
}

void check_content(const std::string& out) {
  CHECK(listing(out) == std::set<std::string>{"app", "app/keep", "app/keep/k", "bin", "bin/hard",
                                              "bin/tool", "etc", "etc/conf", "link", "opq",
                                              "opq/new", "opq/new2", "same.txt", "sbin",
                                              "sbin/su"});
  CHECK(read_file(out + "/etc/conf") == "v2");
  CHECK(read_file(out + "/link") == "v2");
  CHECK(fs::read_symlink(out + "/link") == "etc/conf");
  CHECK(read_file(out + "/bin/hard") == "#!/bin/sh\n");
  CHECK(read_file(out + "/opq/new2") == "written before the marker");
  CHECK(read_file(out + "/same.txt") == "same layer");
  CHECK(mode_of(out + "/bin/tool") == 0755);
  CHECK(mode_of(out + "/sbin/su") == 0755);
  CHECK(mode_of(out + "/etc/conf") == 0644);
}

void check_config(const container_image& image) {
  CHECK(image.config.entrypoint == std::vector<std::string>{"/bin/tool"});
  CHECK(image.config.cmd == std::vector<std::string>{"--serve", "8080"});
  CHECK(image.config.env == std::vector<std::string>{"PATH=/usr/bin:/bin", "MODE=test"});
  CHECK(image.config.working_dir == "/app");
  CHECK(image.digest.size() == 71);
  CHECK(image.digest.compare(0, 7, "sha256:") == 0);
}

uint64_t status_kib(const char* field) {
  std::string text = read_file("/proc/self/status");
  auto at = text.find(field);
  if (at == std::string::npos)
    return 0;
  return std::strtoull(text.c_str() + at + std::strlen(field) + 1, nullptr, 10);
}

} // namespace

TEST_CASE("container archive: docker save with two layers, whiteouts and an opaque dir") {
  if (!have_erofs_tools()) {
    MESSAGE("skipped: mkfs.erofs/fsck.erofs not installed");
    return;
  }
  temp_dir dir{"nimbus-container"};
  auto l1 = make_layer(dir / "l1.tar", lower_layer());
  auto l2 = make_layer(dir / "l2.tar", upper_layer());
  auto archive = docker_archive(dir, "image.tar", {l1, l2});
  fs::create_directories(dir / "work");
  container_image image;
  auto problem = flatten_container_archive(archive, dir / "work", dir / "image.erofs", {}, image);
  REQUIRE_MESSAGE(problem.empty(), problem);
  check_config(image);
  CHECK(image.digest == digest_of(config_json({l1.diff_id, l2.diff_id})));
  CHECK(listing(dir / "work").empty());
  REQUIRE(extract_image(dir / "image.erofs", dir / "out"));
  check_content(dir / "out");

  // The same image as an OCI layout with compressed layers gives the same
  // image bytes (the tree is the same, and so is the image).
  auto g1 = make_layer(dir / "g1.tar.gz", lower_layer(), compression::gzip);
  auto g2 = make_layer(dir / "g2.tar.zst", upper_layer(), compression::zstd);
  CHECK(g1.diff_id == l1.diff_id);
  CHECK(g2.diff_id == l2.diff_id);
  CHECK(g1.digest != l1.digest);
  auto oci = oci_archive(dir, "oci.tar", {g1, g2});
  container_image from_oci;
  problem = flatten_container_archive(oci, dir / "work", dir / "oci.erofs", {}, from_oci);
  REQUIRE_MESSAGE(problem.empty(), problem);
  check_config(from_oci);
  CHECK(from_oci.digest == image.digest);
  CHECK(read_file(dir / "oci.erofs") == read_file(dir / "image.erofs"));
}

TEST_CASE("container archive: legacy layer members may be symlinks to another layer tar") {
  if (!have_erofs_tools()) {
    MESSAGE("skipped: mkfs.erofs not installed");
    return;
  }
  temp_dir dir{"nimbus-container"};
  auto l1 = make_layer(dir / "l1.tar", {{"a.txt", 'f', "a"}});
  auto l2 = make_layer(dir / "l2.tar", {{"b.txt", 'f', "b"}});
  auto config = config_json({l1.diff_id, l2.diff_id});
  auto hex = to_hex(sha256(config));
  std::string a(64, 'a'), b(64, 'b'), c(64, 'c');
  write_outer(dir / "image.tar",
              {{"manifest.json",
                R"([{"Config":")" + hex + R"(.json","Layers":[")" + a + R"(/layer.tar",")" + b
                  + R"(/layer.tar"]}])",
                "", ""},
               {hex + ".json", config, "", ""},
               {a + "/layer.tar", "", l1.path, ""},
               {b + "/layer.tar", "", "", "../" + c + "/layer.tar"},
               {c + "/layer.tar", "", l2.path, ""}});
  fs::create_directories(dir / "work");
  container_image image;
  auto problem = flatten_container_archive(dir / "image.tar", dir / "work", dir / "i.erofs", {},
                                           image);
  REQUIRE_MESSAGE(problem.empty(), problem);
  REQUIRE(extract_image(dir / "i.erofs", dir / "out"));
  CHECK(listing(dir / "out") == std::set<std::string>{"a.txt", "b.txt"});
}

TEST_CASE("container archive: digest, size and diff id mismatches are refused") {
  temp_dir dir{"nimbus-container"};
  fs::create_directories(dir / "work");
  auto l1 = make_layer(dir / "l1.tar.gz", {{"a.txt", 'f', "a"}}, compression::gzip);
  auto l2 = make_layer(dir / "l2.tar.gz", {{"b.txt", 'f', "b"}}, compression::gzip);
  container_image image;
  auto flatten = [&](const std::string& archive) {
    return flatten_container_archive(archive, dir / "work", dir / "x.erofs", {}, image);
  };
  // A layer blob stored under its name but with other content.
  auto bad_blob = l2;
  bad_blob.digest = "sha256:" + std::string(64, 'e');
  auto problem = flatten(oci_archive(dir, "swapped.tar", {l1, bad_blob}));
  CHECK(problem.find("layer 2 of 2") != std::string::npos);
  CHECK(problem.find("mismatch") != std::string::npos);
  // The manifest names a size the blob does not have.
  problem = flatten(oci_archive(dir, "size.tar", {l1, l2}, [&](std::string& m) {
    auto at = m.find(std::to_string(l2.size) + "}");
    REQUIRE(at != std::string::npos);
    m.replace(at, std::to_string(l2.size).size(), std::to_string(l2.size + 1));
  }));
  CHECK(problem.find("size mismatch") != std::string::npos);
  // A tampered manifest no longer matches the index's digest.
  auto tampered = oci_archive(dir, "t.tar", {l1, l2});
  {
    std::string bytes = read_file(tampered);
    auto at = bytes.find("\"schemaVersion\":2,\"mediaType\"");
    REQUIRE(at != std::string::npos);
    bytes[at + 16] = '3';
    write_file(tampered, bytes);
  }
  problem = flatten(tampered);
  CHECK(problem.find("manifest") != std::string::npos);
  CHECK(problem.find("digest mismatch") != std::string::npos);
  // docker save: the config's diff id is not the layer's.
  problem = flatten(docker_archive(dir, "d.tar", {l1, l2}, {l1.diff_id, l1.diff_id}));
  CHECK(problem.find("layer 2 of 2") != std::string::npos);
  CHECK(problem.find("diff id mismatch") != std::string::npos);
  // Not an image archive at all, and a missing layer.
  write_outer(dir / "empty.tar", {{"hello.txt", "hi", "", ""}});
  CHECK(flatten(dir / "empty.tar").find("neither manifest.json") != std::string::npos);
  write_file(dir / "junk.tar", "this is not a tar file at all");
  CHECK_FALSE(flatten(dir / "junk.tar").empty());
  CHECK(flatten(dir / "missing.tar").find("cannot open") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "x.erofs"));
  CHECK(listing(dir / "work").empty());
}

TEST_CASE("container archive: hostile layers are refused or contained") {
  temp_dir dir{"nimbus-container"};
  fs::create_directories(dir / "work");
  auto outside = dir / "outside";
  fs::create_directories(outside);
  write_file(outside + "/secret", "secret");
  auto check_outside = [&] {
    CHECK(listing(outside) == std::set<std::string>{"secret"});
    CHECK(read_file(outside + "/secret") == "secret");
    CHECK(listing(dir / "work").empty());
    CHECK_FALSE(fs::exists(dir / "pwned"));
  };
  int n = 0;
  auto run = [&](std::vector<std::vector<tar_entry>> layers, const flatten_limits& limits,
                 const std::string& image) {
    std::vector<built_layer> built;
    for (auto& l : layers)
      built.push_back(make_layer(dir / ("l" + std::to_string(++n) + ".tar"), l));
    auto archive = docker_archive(dir, "a" + std::to_string(n) + ".tar", built);
    container_image out;
    return flatten_container_archive(archive, dir / "work", image, limits, out);
  };
  // A symlink made by layer 1 and written through by layer 2 (relative,
  // absolute, a chain), and a hard link to the outside.
  auto problem = run({{{outside + "/inside-copy", 'f', "made inside"},
                       {"evil", 'l', outside},
                       {"up", 'l', "../../../../../../.."},
                       {"d/up", 'l', ".."},
                       {"d/up2", 'l', "up/.."}},
                      {{"evil/secret", 'f', "owned"},
                       {"up/pwned", 'f', "owned"},
                       {"d/up2/pwned2", 'f', "owned"},
                       {outside + "/secret2", 'f', "absolute"}}},
                     {}, dir / "contained.erofs");
  if (have_erofs_tools()) {
    CHECK_MESSAGE(problem.empty(), problem);
    REQUIRE(extract_image(dir / "contained.erofs", dir / "out"));
    CHECK(read_file(dir / "out" + outside + "/secret") == "owned");
    CHECK(read_file(dir / "out/pwned") == "owned");
    CHECK(read_file(dir / "out/pwned2") == "owned");
    CHECK(read_file(dir / "out" + outside + "/secret2") == "absolute");
  }
  check_outside();
  problem = run({{{"h", 'h', "../../outside/secret"}}}, {}, dir / "x.erofs");
  CHECK(problem.find("layer 1 of 1") != std::string::npos);
  CHECK(problem.find("'..'") != std::string::npos);
  problem = run({{{"h", 'h', outside + "/secret"}}}, {}, dir / "x.erofs");
  CHECK(problem.find("hard link 'h'") != std::string::npos);
  problem = run({{{"../pwned", 'f', "x"}}}, {}, dir / "x.erofs");
  CHECK(problem.find("'..'") != std::string::npos);
  // Bombs: size and entry count, named.
  problem = run({{{"big", 'f', std::string(3 << 20, 'x')}}}, {1 << 20, 100}, dir / "x.erofs");
  CHECK(problem.find("'big' exceeds the unpacked size limit") != std::string::npos);
  std::vector<tar_entry> many;
  for (int i = 0; i < 50; ++i)
    many.push_back({"f" + std::to_string(i), 'f', "x"});
  problem = run({many}, {1 << 20, 20}, dir / "x.erofs");
  CHECK(problem.find("exceeds the entry limit") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "x.erofs"));
  check_outside();
}

TEST_CASE("container archive: a 300 MiB layer streams with little memory") {
  if (!have_erofs_tools()) {
    MESSAGE("skipped: mkfs.erofs not installed");
    return;
  }
  temp_dir dir{"nimbus-container"};
  fs::create_directories(dir / "work");
  constexpr uint64_t big = 300ull << 20;
  tar_entry zeros{"opt/zeros.bin", 'f'};
  zeros.size = big;
  zeros.generate = [](std::function<void(const char*, size_t)> sink) {
    std::vector<char> block(1 << 20, '\0');
    for (uint64_t done = 0; done < big; done += block.size())
      sink(block.data(), block.size());
  };
  // A gzip layer in an OCI layout: 300 MiB of tar stream to decompress, hash
  // and unpack, with little disk I/O besides the image (keeps the test fast
  // on a busy CI disk).
  auto started = std::chrono::steady_clock::now();
  auto layer = make_layer(dir / "big.tar.gz", {zeros, {"etc/hello", 'f', "hello"}},
                          compression::gzip);
  auto archive = oci_archive(dir, "image.tar", {layer});
  fs::remove(layer.path);
  // Reset the peak RSS to the current RSS (Linux 4.0+), so the check does
  // not depend on what earlier tests in this process used.
  write_file("/proc/self/clear_refs", "5");
  auto before = status_kib("VmHWM:");
  container_image image;
  auto problem = flatten_container_archive(archive, dir / "work", dir / "big.erofs", {}, image);
  auto after = status_kib("VmHWM:");
  MESSAGE("flattened in "
          << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()
          << " s (with writing the layer)");
  REQUIRE_MESSAGE(problem.empty(), problem);
  MESSAGE("peak RSS growth: " << (after - before) / 1024 << " MiB");
  CHECK(before > 0);
  CHECK(after - before < 64 * 1024);
  CHECK(fs::file_size(dir / "big.erofs") > big);
}
