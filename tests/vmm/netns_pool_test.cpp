#include "nimbus/vmm/jail.hpp"
#include "nimbus/vmm/netns_pool.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

using namespace nimbus::vmm;
namespace fs = std::filesystem;

TEST_CASE("netns pool: prepared namespaces are joined by sandboxes and released") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: network namespaces need root");
    return;
  }
  char tmpl[] = "/tmp/nimbus-netns-XXXXXX";
  fs::path tmp = ::mkdtemp(tmpl);
  ::chmod(tmp.c_str(), 0755);
  {
    netns_pool pool{(tmp / "pool").string(), 2};
    for (int i = 0; i < 200 && pool.created() < 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    REQUIRE(pool.created() >= 2);
    auto path = pool.take();
    REQUIRE_FALSE(path.empty());
    struct stat ns_file {};
    REQUIRE(::stat(path.c_str(), &ns_file) == 0);
    // The pool refills what was taken.
    for (int i = 0; i < 200 && pool.created() < 3; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    CHECK(pool.created() >= 3);

    // A sandbox started with the namespace lives in it.
    fs::create_directories(tmp / "root");
    fs::create_directories(tmp / "code");
    ::chmod((tmp / "code").c_str(), 0755);
    jail_spec spec;
    spec.id = "netns-test";
    spec.root_dir = (tmp / "root").string();
    spec.code_dir = (tmp / "code").string();
    spec.argv = {"/bin/sleep", "30"};
    spec.netns = path;
    int out[2];
    REQUIRE(::pipe(out) == 0);
    std::string error;
    auto jail = jail_process::start(NIMBUS_JAIL_PATH, spec, out[1], out[1],
                                    std::chrono::seconds{10}, error);
    ::close(out[1]);
    REQUIRE_MESSAGE(jail, error);
    auto link = fs::read_symlink("/proc/" + std::to_string(jail->init_pid()) + "/ns/net");
    CHECK(link.string() == "net:[" + std::to_string(ns_file.st_ino) + "]");
    // Its loopback is up: the Runtime API can listen there.
    auto fd = listen_in_netns(jail->init_pid(), "127.0.0.1", 9001, error);
    CHECK_MESSAGE(fd >= 0, error);
    if (fd >= 0)
      ::close(fd);
    jail.reset();
    ::close(out[0]);
    netns_pool::release(path);
    CHECK_FALSE(fs::exists(path));
  }
  // Destroying the pool releases what nobody took.
  CHECK(fs::is_empty(tmp / "pool"));
  fs::remove_all(tmp);
}
