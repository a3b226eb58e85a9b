#include "nimbus/vmm/jail_spec.hpp"

#include "nimbus/storage/json.hpp"

#include <simdjson.h>

namespace nimbus::vmm {

std::string to_json(const jail_spec& s) {
  storage::json_writer w;
  w.begin_object();
  w.key("id").value(s.id);
  w.key("root_dir").value(s.root_dir);
  w.key("rootfs").value(s.rootfs);
  w.key("code_dir").value(s.code_dir);
  w.key("runtime_dir").value(s.runtime_dir);
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
  uint64_t uid = 0, gid = 0, nofile = 0;
  if (!str("id", s.id) || !str("root_dir", s.root_dir) || !str("rootfs", s.rootfs)
      || !str("code_dir", s.code_dir) || !str("runtime_dir", s.runtime_dir)
      || !list("argv", s.argv) || !list("env", s.env) || !num("uid", uid) || !num("gid", gid)
      || !num("tmp_bytes", s.tmp_bytes) || !num("nofile", nofile)
      || !list("cgroup_procs", s.cgroup_procs) || !str("netns", s.netns))
    return std::nullopt;
  if (uid == 0 || gid == 0) {
    error = "spec must name an unprivileged uid and gid";
    return std::nullopt;
  }
  if (s.argv.empty()) {
    error = "spec argv is empty";
    return std::nullopt;
  }
  s.uid = static_cast<uint32_t>(uid);
  s.gid = static_cast<uint32_t>(gid);
  s.nofile = static_cast<uint32_t>(nofile);
  return s;
}

} // namespace nimbus::vmm
