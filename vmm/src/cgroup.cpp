#include "nimbus/vmm/cgroup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

namespace nimbus::vmm {

namespace {

const std::vector<std::string> v1_controllers = {"memory", "pids", "cpu", "freezer"};

bool write_file(const std::string& path, const std::string& value, std::string* error = nullptr) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (error)
      *error = "open " + path + ": " + std::strerror(errno);
    return false;
  }
  auto n = ::write(fd, value.data(), value.size());
  auto err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    if (error)
      *error = "write " + path + ": " + std::strerror(err);
    return false;
  }
  return true;
}

// Control files are small and read on the invocation path (peak memory):
// plain open/read/close, no stream machinery.
std::string read_file(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return out;
  char buf[4096];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool make_dir(const std::string& path) {
  return ::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in{s};
  while (std::getline(in, cur, sep))
    out.push_back(cur);
  return out;
}

// Reads "key value" lines (memory.oom_control, memory.events) for one key.
uint64_t keyed_value(const std::string& text, const std::string& key) {
  std::istringstream in{text};
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key)
      return v;
  return 0;
}

} // namespace

uint32_t cpu_shares_for_memory(uint64_t memory_bytes) {
  auto mb = memory_bytes >> 20;
  auto shares = static_cast<uint32_t>(mb * 1024 / 1769);
  return shares < 2 ? 2 : shares;
}

std::optional<cgroup_layout> cgroup_layout::detect(const std::string& prefix,
                                                   std::string& error) {
  cgroup_layout layout;
  // Mount points of cgroup file systems: "... - cgroup2 ..." or "... - cgroup
  // cgroup rw,memory".
  std::map<std::string, std::string> v1_mounts;
  std::string v2_mount;
  {
    std::ifstream in{"/proc/self/mountinfo"};
    std::string line;
    while (std::getline(in, line)) {
      auto fields = split(line, ' ');
      auto dash = std::find(fields.begin(), fields.end(), "-");
      if (dash == fields.end() || dash + 3 > fields.end() || fields.size() < 5)
        continue;
      auto fstype = *(dash + 1);
      auto mount_point = fields[4];
      if (fstype == "cgroup2" && v2_mount.empty())
        v2_mount = mount_point;
      if (fstype == "cgroup" && dash + 3 < fields.end() + 1)
        for (const auto& opt : split(*(dash + 3), ','))
          for (const auto& c : v1_controllers)
            if (opt == c)
              v1_mounts[c] = mount_point;
    }
  }
  // Our own group in each hierarchy: "id:controllers:/path".
  std::map<std::string, std::string> own;
  std::string own_v2;
  {
    std::ifstream in{"/proc/self/cgroup"};
    std::string line;
    while (std::getline(in, line)) {
      auto first = line.find(':');
      auto second = line.find(':', first + 1);
      if (first == std::string::npos || second == std::string::npos)
        continue;
      auto controllers = line.substr(first + 1, second - first - 1);
      auto path = line.substr(second + 1);
      if (controllers.empty())
        own_v2 = path;
      for (const auto& c : split(controllers, ','))
        own[c] = path;
    }
  }
  bool all_v1 = true;
  for (const auto& c : v1_controllers)
    if (!v1_mounts.count(c) || !own.count(c))
      all_v1 = false;
  if (all_v1) {
    for (const auto& c : v1_controllers) {
      auto base = v1_mounts[c] + (own[c] == "/" ? "" : own[c]);
      layout.parents_.emplace_back(c, base + "/" + prefix);
    }
  } else if (!v2_mount.empty() && exists(v2_mount + "/cgroup.controllers")) {
    layout.unified_ = true;
    auto base = v2_mount + (own_v2 == "/" ? "" : own_v2);
    auto controllers = read_file(base + "/cgroup.controllers");
    for (const auto& need : {"memory", "pids", "cpu"})
      if (controllers.find(need) == std::string::npos) {
        error = std::string{"cgroup v2 controller '"} + need + "' is not available in " + base;
        return std::nullopt;
      }
    layout.parents_.emplace_back("", base + "/" + prefix);
  } else {
    error = "no usable cgroup hierarchy: need v1 memory, pids, cpu and freezer, or v2";
    return std::nullopt;
  }
  // Create the parent groups; on v2 also delegate the controllers to them.
  for (const auto& [c, dir] : layout.parents_) {
    if (!make_dir(dir)) {
      error = "mkdir " + dir + ": " + std::strerror(errno);
      return std::nullopt;
    }
    if (layout.unified_) {
      auto up = dir.substr(0, dir.rfind('/'));
      write_file(up + "/cgroup.subtree_control", "+memory +pids +cpu");
      if (!write_file(dir + "/cgroup.subtree_control", "+memory +pids +cpu", &error))
        return std::nullopt;
    } else if (c == "memory") {
      // Child groups account into their parent (needed on old kernels).
      write_file(dir + "/memory.use_hierarchy", "1");
    }
  }
  return layout;
}

size_t cgroup_layout::remove_leftovers() const {
  // A node killed while an environment was frozen leaves its sandbox frozen:
  // the SIGKILL its death sent (PDEATHSIG) waits until the group thaws, so
  // the sandbox would hold its memory for ever. Thaw every frozen group: a
  // dead node's sandboxes then die. Only the node that owns the parent may
  // call this (nimbusd holds a lock on it, see system.cpp): a live owner's
  // new groups are empty until their helper joins, and would be removed.
  std::vector<std::string> thawed;
  for (const auto& [c, dir] : parents_) {
    if (!unified_ && c != "freezer")
      continue;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (!entry.is_directory(ec))
        continue;
      auto state_file = entry.path().string() + (unified_ ? "/cgroup.freeze" : "/freezer.state");
      auto state = read_file(state_file);
      bool frozen = unified_ ? state.rfind("1", 0) == 0 : state.rfind("THAWED", 0) != 0;
      if (frozen && write_file(state_file, unified_ ? "0" : "THAWED"))
        thawed.push_back(entry.path().filename().string());
    }
  }
  // Give the thawed tasks a moment to die before the empty groups go.
  for (int i = 0; i < 100 && !thawed.empty(); ++i) {
    bool busy = false;
    for (const auto& name : thawed) {
      auto procs = read_file(parent(unified_ ? "" : "pids") + "/" + name + "/cgroup.procs");
      busy = busy || procs.find_first_not_of(" \n") != std::string::npos;
    }
    if (!busy)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  size_t removed = 0;
  for (const auto& [c, dir] : parents_) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
      if (entry.is_directory(ec) && ::rmdir(entry.path().c_str()) == 0)
        ++removed;
  }
  return removed;
}

std::string cgroup_layout::parent(const std::string& controller) const {
  for (const auto& [c, dir] : parents_)
    if (unified_ || c == controller)
      return dir;
  return {};
}

std::string cgroup::dir(const std::string& controller) const {
  for (const auto& [c, d] : dirs_)
    if (unified_ || c == controller)
      return d;
  return {};
}

std::optional<cgroup> cgroup::create(const cgroup_layout& layout, const std::string& name,
                                     const cgroup_limits& limits, std::string& error) {
  cgroup g;
  g.unified_ = layout.unified();
  auto fail = [&](std::string message) {
    error = std::move(message);
    g.remove();
    return std::nullopt;
  };
  if (g.unified_) {
    auto dir = layout.parent("") + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0)
      return fail("mkdir " + dir + ": " + std::strerror(errno));
    g.dirs_.emplace_back("", dir);
    g.procs_files_.push_back(dir + "/cgroup.procs");
    if (auto err = g.set_limits(limits); !err.empty())
      return fail(err);
    return g;
  }
  for (const auto& c : v1_controllers) {
    auto dir = layout.parent(c) + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0)
      return fail("mkdir " + dir + ": " + std::strerror(errno));
    g.dirs_.emplace_back(c, dir);
    g.procs_files_.push_back(dir + "/cgroup.procs");
  }
  if (auto err = g.set_limits(limits); !err.empty())
    return fail(err);
  return g;
}

std::string cgroup::set_limits(const cgroup_limits& limits) {
  std::string err;
  if (unified_) {
    auto d = dir("");
    if (!write_file(d + "/memory.max", std::to_string(limits.memory_bytes), &err)
        || !write_file(d + "/pids.max", std::to_string(limits.pids_max), &err))
      return err;
    write_file(d + "/memory.swap.max", "0");
    // Kill the whole group when one task hits the limit.
    write_file(d + "/memory.oom.group", "1");
    // v2 weight 1..10000, default 100 (= 1024 v1 shares).
    auto weight = std::max<uint32_t>(1, std::min<uint32_t>(10000, limits.cpu_shares * 100 / 1024));
    write_file(d + "/cpu.weight", std::to_string(weight));
    return {};
  }
  auto mem = dir("memory");
  // With memsw accounted, memory+swap is limited to the same amount (no
  // swap); the two limits must be changed in an order that keeps
  // memory <= memory+swap.
  bool memsw = exists(mem + "/memory.memsw.limit_in_bytes");
  auto value = std::to_string(limits.memory_bytes);
  if (memsw) {
    write_file(mem + "/memory.memsw.limit_in_bytes", value);
    if (!write_file(mem + "/memory.limit_in_bytes", value, &err))
      return err;
    write_file(mem + "/memory.memsw.limit_in_bytes", value);
  } else if (!write_file(mem + "/memory.limit_in_bytes", value, &err)) {
    return err;
  }
  write_file(mem + "/memory.swappiness", "0");
  if (!write_file(dir("pids") + "/pids.max", std::to_string(limits.pids_max), &err))
    return err;
  if (!write_file(dir("cpu") + "/cpu.shares", std::to_string(limits.cpu_shares), &err))
    return err;
  return {};
}

bool cgroup::freeze() {
  if (unified_)
    return write_file(dir("") + "/cgroup.freeze", "1");
  return write_file(dir("freezer") + "/freezer.state", "FROZEN");
}

bool cgroup::thaw() {
  if (unified_)
    return write_file(dir("") + "/cgroup.freeze", "0");
  return write_file(dir("freezer") + "/freezer.state", "THAWED");
}

std::vector<pid_t> cgroup::members() const {
  std::vector<pid_t> out;
  auto d = unified_ ? dir("") : dir("pids");
  if (d.empty())
    return out;
  std::istringstream in{read_file(d + "/cgroup.procs")};
  pid_t pid;
  while (in >> pid)
    out.push_back(pid);
  return out;
}

void cgroup::kill_all() {
  if (dirs_.empty())
    return;
  if (unified_ && write_file(dir("") + "/cgroup.kill", "1")) {
    // The kernel kills every member, also ones forked meanwhile.
  } else {
    // Freeze first so nothing can fork while we kill, then kill, then thaw so
    // the frozen tasks can die.
    freeze();
    for (int round = 0; round < 10; ++round) {
      auto pids = members();
      if (pids.empty())
        break;
      for (auto pid : pids)
        ::kill(pid, SIGKILL);
    }
    thaw();
  }
  for (int i = 0; i < 500 && !members().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
}

cgroup::owned_fd& cgroup::owned_fd::operator=(owned_fd&& other) noexcept {
  if (this != &other) {
    if (fd >= 0)
      ::close(fd);
    fd = std::exchange(other.fd, -1);
  }
  return *this;
}

cgroup::owned_fd::~owned_fd() {
  if (fd >= 0)
    ::close(fd);
}

uint64_t cgroup::peak_memory() const {
  if (dirs_.empty())
    return 0;
  if (peak_fd_.fd < 0) {
    auto file = unified_ ? dir("") + "/memory.peak"
                         : dir("memory") + "/memory.max_usage_in_bytes";
    peak_fd_.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (peak_fd_.fd < 0)
      return 0;
  }
  char buf[32];
  auto n = ::pread(peak_fd_.fd, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  return std::strtoull(buf, nullptr, 10);
}

uint64_t cgroup::oom_kills() const {
  if (unified_)
    return keyed_value(read_file(dir("") + "/memory.events"), "oom_kill");
  return keyed_value(read_file(dir("memory") + "/memory.oom_control"), "oom_kill");
}

void cgroup::remove() {
  peak_fd_ = owned_fd{};
  if (dirs_.empty())
    return;
  kill_all();
  for (const auto& [c, d] : dirs_)
    for (int i = 0; i < 100 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
  dirs_.clear();
  procs_files_.clear();
}

} // namespace nimbus::vmm
