#include "nimbus/vmm/jail_spec.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

using namespace nimbus::vmm;
namespace fs = std::filesystem;

namespace {

// A temporary directory, removed at the end of the test case.
struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/nimbus-jail-spec-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

jail_spec image_spec(const std::string& image_root) {
  jail_spec s;
  s.id = "env-1";
  s.root_dir = "/tmp/root";
  s.image_root = image_root;
  s.workdir = "/app";
  s.argv = {"python3", "-m", "awslambdaric", "app.handler"};
  s.env = {"PATH=/usr/local/bin:/usr/bin", "A=\"quoted\"\n"};
  s.uid = 10042;
  s.gid = 10043;
  s.tmp_bytes = 1ull << 30;
  s.nofile = 2048;
  s.cgroup_procs = {"/sys/fs/cgroup/x/cgroup.procs"};
  s.netns = "/run/netns/n1";
  s.cpu = 1;
  return s;
}

std::string error_of(const std::string& json) {
  std::string error;
  auto parsed = jail_spec_from_json(json, error);
  CHECK_FALSE(parsed);
  return error;
}

// Replaces the first `"key":"old"` in a spec's JSON.
std::string with_field(std::string json, const std::string& key, const std::string& value) {
  auto at = json.find("\"" + key + "\":\"");
  REQUIRE(at != std::string::npos);
  auto start = at + key.size() + 4;
  auto end = json.find('"', start);
  return json.replace(start, end - start, value);
}

} // namespace

TEST_CASE("jail_spec: an image-root spec survives JSON") {
  temp_dir image;
  auto spec = image_spec(image.path);
  std::string error;
  auto back = jail_spec_from_json(to_json(spec), error);
  REQUIRE_MESSAGE(back, error);
  CHECK(back->id == spec.id);
  CHECK(back->root_dir == spec.root_dir);
  CHECK(back->image_root == spec.image_root);
  CHECK(back->workdir == "/app");
  CHECK(back->rootfs.empty());
  CHECK(back->code_dir.empty());
  CHECK(back->runtime_dir.empty());
  CHECK(back->argv == spec.argv);
  CHECK(back->env == spec.env);
  CHECK(back->uid == 10042);
  CHECK(back->gid == 10043);
  CHECK(back->tmp_bytes == spec.tmp_bytes);
  CHECK(back->nofile == 2048);
  CHECK(back->cgroup_procs == spec.cgroup_procs);
  CHECK(back->netns == spec.netns);
  CHECK(back->cpu == 1);
  CHECK(to_json(*back) == to_json(spec));
}

TEST_CASE("jail_spec: the working directory defaults by mode") {
  jail_spec zip;
  CHECK(effective_workdir(zip) == "/var/task");
  zip.workdir = "/var/task/sub";
  CHECK(effective_workdir(zip) == "/var/task/sub");
  jail_spec image;
  image.image_root = "/images/x";
  CHECK(effective_workdir(image) == "/");
  image.workdir = "/app";
  CHECK(effective_workdir(image) == "/app");
}

TEST_CASE("jail_spec: a spec without image_root and workdir (an older worker's) is zip mode") {
  jail_spec zip;
  zip.id = "z";
  zip.root_dir = "/tmp/root";
  zip.code_dir = "/tmp/code";
  zip.argv = {"/var/task/bootstrap"};
  auto json = to_json(zip);
  for (const char* field : {",\"image_root\":\"\"", ",\"workdir\":\"\"", ",\"cpu\":-1"}) {
    auto at = json.find(field);
    REQUIRE(at != std::string::npos);
    json.erase(at, std::string{field}.size());
  }
  REQUIRE(json.find("image_root") == std::string::npos);
  std::string error;
  auto back = jail_spec_from_json(json, error);
  REQUIRE_MESSAGE(back, error);
  CHECK(back->image_root.empty());
  CHECK(back->workdir.empty());
  CHECK(back->cpu == -1);
  CHECK(back->code_dir == "/tmp/code");
  CHECK(validate(*back).empty());
}

TEST_CASE("jail_spec: image_root must be an absolute existing directory that is not /") {
  temp_dir dir;
  std::ofstream{dir.path + "/file"} << "x";
  auto json = to_json(image_spec(dir.path));
  CHECK(error_of(with_field(json, "image_root", "images/x")).find("absolute") != std::string::npos);
  CHECK(error_of(with_field(json, "image_root", dir.path + "/missing"))
            .find("No such file or directory")
        != std::string::npos);
  CHECK(error_of(with_field(json, "image_root", dir.path + "/file")).find("not a directory")
        != std::string::npos);
  CHECK(error_of(with_field(json, "image_root", "/")).find("host's root") != std::string::npos);
  CHECK(error_of(with_field(json, "image_root", "/.")).find("host's root") != std::string::npos);
  // Zip mode's directories do not mix with an image.
  for (const char* field : {"rootfs", "code_dir", "runtime_dir"}) {
    INFO("field " << std::string{field});
    CHECK(error_of(with_field(json, field, "/tmp")).find("excludes") != std::string::npos);
  }
  CHECK(error_of(with_field(json, "workdir", "app")).find("workdir") != std::string::npos);
  // The same checks hold for a spec built in code.
  auto spec = image_spec(dir.path + "/file");
  CHECK_FALSE(validate(spec).empty());
  spec.image_root = dir.path;
  CHECK(validate(spec).empty());
  spec.argv = {""};
  CHECK(validate(spec) == "spec argv is empty");
}

TEST_CASE("jail_spec: ids must be unprivileged and fit 32 bits") {
  temp_dir dir;
  auto json = to_json(image_spec(dir.path));
  auto replace_number = [&](const std::string& key, const std::string& value) {
    auto copy = json;
    auto at = copy.find("\"" + key + "\":");
    REQUIRE(at != std::string::npos);
    auto start = at + key.size() + 3;
    auto end = copy.find_first_of(",}", start);
    return copy.replace(start, end - start, value);
  };
  CHECK(error_of(replace_number("uid", "0")).find("unprivileged") != std::string::npos);
  CHECK(error_of(replace_number("gid", "0")).find("unprivileged") != std::string::npos);
  // 2^32 would wrap to root.
  CHECK(error_of(replace_number("uid", "4294967296")).find("out of range") != std::string::npos);
  CHECK(error_of(replace_number("gid", "4294967296")).find("out of range") != std::string::npos);
}

TEST_CASE("jail_spec: the CPU is -1 (any) or a CPU number") {
  temp_dir dir;
  auto json = to_json(image_spec(dir.path));
  auto with_cpu = [&](const std::string& value) {
    auto copy = json;
    auto at = copy.find("\"cpu\":");
    REQUIRE(at != std::string::npos);
    auto end = copy.find_first_of(",}", at);
    return copy.replace(at + 6, end - at - 6, value);
  };
  std::string error;
  auto any = jail_spec_from_json(with_cpu("-1"), error);
  REQUIRE_MESSAGE(any, error);
  CHECK(any->cpu == -1);
  CHECK(error_of(with_cpu("-2")).find("cpu out of range") != std::string::npos);
  CHECK(error_of(with_cpu("1000000")).find("cpu out of range") != std::string::npos);
  CHECK(error_of(with_cpu("\"0\"")).find("cpu") != std::string::npos);
}
