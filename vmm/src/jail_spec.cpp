#include "nimbus/vmm/jail_spec.hpp"

#include "nimbus/storage/json.hpp"

#include <simdjson.h>

#include <sched.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace nimbus::vmm {

std::string effective_workdir(const jail_spec& spec) {
  if (!spec.workdir.empty())
    return spec.workdir;
  return spec.image_root.empty() ? "/var/task" : "/";
}

std::string validate(const jail_spec& spec) {
  if (spec.uid == 0 || spec.gid == 0)
    return "spec must name an unprivileged uid and gid";
  if (spec.argv.empty() || spec.argv[0].empty())
    return "spec argv is empty";
  if (!spec.workdir.empty() && spec.workdir[0] != '/')
    return "spec workdir must be an absolute path";
  if (spec.image_root.empty())
    return {};
  if (spec.image_root[0] != '/')
    return "spec image_root must be an absolute path";
  if (!spec.rootfs.empty() || !spec.code_dir.empty() || !spec.runtime_dir.empty())
    return "spec image_root excludes rootfs, code_dir and runtime_dir";
  struct stat image {};
  struct stat host_root {};
  if (::stat(spec.image_root.c_str(), &image) != 0)
    return "spec image_root " + spec.image_root + ": " + std::strerror(errno);
  if (!S_ISDIR(image.st_mode))
    return "spec image_root " + spec.image_root + " is not a directory";
  // Binding the host root's entries would hand the sandbox the host.
  if (::stat("/", &host_root) == 0 && image.st_dev == host_root.st_dev
      && image.st_ino == host_root.st_ino)
    return "spec image_root must not be the host's root";
  return {};
}

std::string to_json(const jail_spec& s) {
  storage::json_writer w;
  w.begin_object();
  w.key("id").value(s.id);
  w.key("root_dir").value(s.root_dir);
  w.key("rootfs").value(s.rootfs);
  w.key("code_dir").value(s.code_dir);
  w.key("runtime_dir").value(s.runtime_dir);
  w.key("image_root").value(s.image_root);
  w.key("workdir").value(s.workdir);
  w.key("argv").begin_array();
  for (const auto& a : s.argv)
    w.value(a);
  w.end_array();
  w.key("env").begin_array();
  for (const auto& e : s.env)
    w.value(e);
  w.end_array();
  w.key("uid").value(s.uid);
  w.key("gid").value(s.gid);
  w.key("tmp_bytes").value(s.tmp_bytes);
  w.key("nofile").value(s.nofile);
  w.key("netns").value(s.netns);
  w.key("cpu").value(static_cast<int64_t>(s.cpu));
  w.key("cgroup_procs").begin_array();
  for (const auto& p : s.cgroup_procs)
    w.value(p);
  w.end_array();
  w.end_object();
  return w.take();
}

std::optional<jail_spec> jail_spec_from_json(std::string_view json, std::string& error) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto err = parser.parse(json.data(), json.size()).get(doc)) {
    error = std::string{"spec is not JSON: "} + simdjson::error_message(err);
    return std::nullopt;
  }
  jail_spec s;
  auto str = [&](const char* key, std::string& out) {
    std::string_view v;
    if (doc[key].get_string().get(v)) {
      error = std::string{"spec field "} + key + " missing or not a string";
      return false;
    }
    out = std::string{v};
    return true;
  };
  auto list = [&](const char* key, std::vector<std::string>& out) {
    simdjson::dom::array arr;
    if (doc[key].get_array().get(arr)) {
      error = std::string{"spec field "} + key + " missing or not a list";
      return false;
    }
    for (auto e : arr) {
      std::string_view v;
      if (e.get_string().get(v)) {
        error = std::string{"spec field "} + key + " has a non-string element";
        return false;
      }
      out.emplace_back(v);
    }
    return true;
  };
  auto num = [&](const char* key, uint64_t& out) {
    if (doc[key].get_uint64().get(out)) {
      error = std::string{"spec field "} + key + " missing or not a number";
      return false;
    }
    return true;
  };
  // Fields that came later may be missing (a spec of an older worker).
  auto optional_str = [&](const char* key, std::string& out) {
    std::string_view v;
    auto field = doc[key];
    if (field.error() == simdjson::NO_SUCH_FIELD)
      return true;
    if (field.get_string().get(v)) {
      error = std::string{"spec field "} + key + " is not a string";
      return false;
    }
    out = std::string{v};
    return true;
  };
  auto optional_int = [&](const char* key, int64_t& out) {
    auto field = doc[key];
    if (field.error() == simdjson::NO_SUCH_FIELD)
      return true;
    if (field.get_int64().get(out)) {
      error = std::string{"spec field "} + key + " is not a number";
      return false;
    }
    return true;
  };
  uint64_t uid = 0, gid = 0, nofile = 0;
  int64_t cpu = -1;
  if (!str("id", s.id) || !str("root_dir", s.root_dir) || !str("rootfs", s.rootfs)
      || !str("code_dir", s.code_dir) || !str("runtime_dir", s.runtime_dir)
      || !list("argv", s.argv) || !list("env", s.env) || !num("uid", uid) || !num("gid", gid)
      || !num("tmp_bytes", s.tmp_bytes) || !num("nofile", nofile)
      || !list("cgroup_procs", s.cgroup_procs) || !str("netns", s.netns)
      || !optional_str("image_root", s.image_root) || !optional_str("workdir", s.workdir)
      || !optional_int("cpu", cpu))
    return std::nullopt;
  if (uid > UINT32_MAX || gid > UINT32_MAX || nofile > UINT32_MAX) {
    error = "spec uid, gid or nofile out of range";
    return std::nullopt;
  }
  s.uid = static_cast<uint32_t>(uid);
  s.gid = static_cast<uint32_t>(gid);
  s.nofile = static_cast<uint32_t>(nofile);
  if (cpu < -1 || cpu >= CPU_SETSIZE) {
    error = "spec cpu out of range";
    return std::nullopt;
  }
  s.cpu = static_cast<int32_t>(cpu);
  if (error = validate(s); !error.empty())
    return std::nullopt;
  return s;
}

} // namespace nimbus::vmm
