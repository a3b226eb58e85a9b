// nimbusd: starts a Nimbus node.
//
//   nimbusd [--config FILE]     run a node (default: the embedded single-node config)
//   nimbusd --print-default-config
//   nimbusd --check-config FILE validate a config file and exit
//   nimbusd --help | --version

#include "nimbus/actors/system.hpp"
#include "nimbus/config/config.hpp"
#include "nimbus/config/logging.hpp"

#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include <pthread.h>
#include <sys/resource.h>

namespace {

constexpr const char* usage = R"(usage: nimbusd [--config FILE]
       nimbusd --check-config FILE
       nimbusd --print-default-config
       nimbusd --help | --version

Starts a Nimbus node serving the AWS Lambda API. Without --config it uses the
embedded single-node configuration (see --print-default-config).
)";

int fail(const std::string& message, int code = 1) {
  std::cerr << "nimbusd: " << message << "\n";
  return code;
}

int run(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    }
    if (arg == "--version") {
      std::cout << "nimbusd 0.1.0\n";
      return 0;
    }
    if (arg == "--print-default-config") {
      std::cout << nimbus::config::default_config_text();
      return 0;
    }
    if ((arg == "--config" || arg == "--check-config") && i + 1 < argc) {
      check_only = arg == "--check-config";
      config_path = argv[++i];
      continue;
    }
    return fail("unknown or incomplete argument '" + arg + "'\n" + usage, 2);
  }

  auto loaded = config_path.empty()
                  ? nimbus::config::parse(nimbus::config::default_config_text(),
                                          "<embedded single-node.toml>")
                  : nimbus::config::load_file(config_path);
  if (!loaded.ok()) {
    std::string all;
    for (const auto& e : loaded.errors)
      all += "\n  " + e.to_string();
    return fail("invalid configuration" + (config_path.empty() ? "" : " in " + config_path) + ":"
                + all);
  }
  if (check_only) {
    std::cout << "nimbusd: " << config_path << " is valid\n";
    return 0;
  }
  nimbus::config::set_log_level(loaded.config.log.level);

  // A write to a pipe whose reader is gone (a sandbox helper that died, say)
  // must fail with EPIPE, which the writer handles, not end the node.
  // Children get default dispositions again (see jail.cpp).
  std::signal(SIGPIPE, SIG_IGN);

  // Each execution environment holds about ten descriptors (pipes, Runtime
  // API sockets, pid and cgroup files). Shells often hand processes a soft
  // limit of 1024, which would cap a node near 100 environments with
  // "Too many open files": take the hard limit (children get their own,
  // see jail_main.cpp).
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }

  // Block SIGINT and SIGTERM before any thread starts, so that every thread
  // inherits the mask and only the sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::string error;
  auto node = nimbus::node::start(loaded.config, error);
  if (!node)
    return fail(error);
  int sig = 0;
  sigwait(&signals, &sig);
  nimbus::config::logger("actors")->info("nimbusd received {}, shutting down",
                                         sig == SIGINT ? "SIGINT" : "SIGTERM");
  node->stop();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  // No exception ends nimbusd with a stack trace: report it and exit non-zero.
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    return fail(std::string{"fatal: "} + e.what());
  } catch (...) {
    return fail("fatal: unknown error");
  }
}
