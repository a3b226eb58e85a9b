// Durable log benchmark: group commit against the disk's own fsync rate.
//
//   durable_log_bench [DATA_DIR [SECONDS]]
//
// Works in a temporary directory under DATA_DIR (default /var/tmp, which is
// on disk where /tmp may be tmpfs) and measures, on that same disk and in the
// same run:
//   raw: a loop of 4 KB pwrite (appending) + fsync on one file, and the same
//        with fdatasync (what posix_log_fs uses), SECONDS each (default 3);
//   log: durable_log::append_sync with 256-byte payloads from 1, 8 and 32
//        threads, SECONDS each: appends/s, latency p50/p99, fsyncs.
// Prints one JSON object. The ratio appends/s over raw fsyncs/s is what
// group commit buys: about 1 with one appender, more with many.

#include "nimbus/storage/durable_log.hpp"

#include <fcntl.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace nimbus::storage;
using bench_clock = std::chrono::steady_clock;

namespace {

double percentile_ms(std::vector<int64_t>& ns, double p) {
  if (ns.empty())
    return 0;
  auto k = static_cast<size_t>(p * static_cast<double>(ns.size() - 1));
  std::nth_element(ns.begin(), ns.begin() + static_cast<ptrdiff_t>(k), ns.end());
  return static_cast<double>(ns[k]) / 1e6;
}

int64_t elapsed_ns(bench_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(bench_clock::now() - since).count();
}

struct raw_result {
  double per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
};

// 4 KB appended and synced per round, like a log with one small record per
// fsync: the ceiling of a log without group commit.
raw_result raw_sync_rate(const std::string& path, double seconds, bool data_only) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::vector<char> block(4096, 'x');
  std::vector<int64_t> rounds;
  uint64_t offset = 0;
  auto start = bench_clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  while (bench_clock::now() < end) {
    auto t0 = bench_clock::now();
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(offset))
            != static_cast<ssize_t>(block.size())
        || (data_only ? ::fdatasync(fd) : ::fsync(fd)) != 0) {
      std::perror("raw pwrite/fsync");
      std::exit(1);
    }
    rounds.push_back(elapsed_ns(t0));
    offset += block.size();
  }
  double total = static_cast<double>(elapsed_ns(start)) / 1e9;
  ::close(fd);
  ::unlink(path.c_str());
  raw_result r;
  r.per_s = static_cast<double>(rounds.size()) / total;
  r.p50_ms = percentile_ms(rounds, 0.50);
  r.p99_ms = percentile_ms(rounds, 0.99);
  return r;
}

struct log_result {
  int appenders = 0;
  uint64_t appends = 0;
  double appends_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  uint64_t fsyncs = 0;
  uint64_t segments = 0;
  int errors = 0;
};

log_result log_rate(const std::string& dir, int appenders, double seconds) {
  log_recovery recovered;
  std::string error;
  durable_log_options options;
  options.dir = dir;
  auto log = durable_log::open(options, recovered, error);
  if (!log) {
    std::fprintf(stderr, "open %s: %s\n", dir.c_str(), error.c_str());
    std::exit(1);
  }
  std::vector<std::vector<int64_t>> latencies(static_cast<size_t>(appenders));
  std::atomic<int> errors{0};
  std::string payload(256, 'p');
  auto start = bench_clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int t = 0; t < appenders; ++t)
    threads.emplace_back([&, t] {
      auto& mine = latencies[static_cast<size_t>(t)];
      std::string e;
      while (bench_clock::now() < end) {
        auto t0 = bench_clock::now();
        if (log->append_sync(1, payload, e) == 0)
          ++errors;
        mine.push_back(elapsed_ns(t0));
      }
    });
  for (auto& t : threads)
    t.join();
  double total = static_cast<double>(elapsed_ns(start)) / 1e9;
  std::vector<int64_t> all;
  for (auto& l : latencies)
    all.insert(all.end(), l.begin(), l.end());
  auto stats = log->statistics();
  log.reset();
  std::filesystem::remove_all(dir);
  log_result r;
  r.appenders = appenders;
  r.appends = stats.appends;
  r.appends_per_s = static_cast<double>(stats.appends) / total;
  r.p50_ms = percentile_ms(all, 0.50);
  r.p99_ms = percentile_ms(all, 0.99);
  r.fsyncs = stats.fsyncs;
  r.segments = stats.segments;
  r.errors = errors;
  return r;
}

std::string filesystem_of(const std::string& path) {
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0)
    return "unknown";
  switch (static_cast<unsigned long>(st.f_type)) {
  case 0xef53:
    return "ext4";
  case 0x58465342:
    return "xfs";
  case 0x9123683e:
    return "btrfs";
  case 0x01021994:
    return "tmpfs";
  case 0x794c7630:
    return "overlayfs";
  default: {
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(st.f_type));
    return hex;
  }
  }
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  in >> one;
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", one);
  return text;
}

} // namespace

int main(int argc, char** argv) {
  std::string base = argc > 1 ? argv[1] : "/var/tmp";
  double seconds = argc > 2 ? std::atof(argv[2]) : 3.0;
  auto tmpl = base + "/nimbus-log-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror(tmpl.c_str());
    return 1;
  }
  std::string dir = tmpl;
  auto load_before = loadavg();

  auto raw = raw_sync_rate(dir + "/raw", seconds, false);
  auto raw_data = raw_sync_rate(dir + "/raw", seconds, true);
  std::vector<log_result> runs;
  for (int appenders : {1, 8, 32})
    runs.push_back(log_rate(dir + "/log-" + std::to_string(appenders), appenders, seconds));
  std::filesystem::remove_all(dir);

  utsname uts{};
  ::uname(&uts);
  char date[32];
  auto now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));

  std::printf("{\n");
  std::printf("  \"benchmark\": \"durable_log\",\n");
  std::printf("  \"date\": \"%s\",\n", date);
  std::printf("  \"machine\": {\"nproc\": %u, \"kernel\": \"%s\", \"loadavg_before\": %s, "
              "\"loadavg_after\": %s},\n",
              std::thread::hardware_concurrency(), uts.release, load_before.c_str(),
              loadavg().c_str());
  std::printf("  \"data_dir\": \"%s\",\n", base.c_str());
  std::printf("  \"filesystem\": \"%s\",\n", filesystem_of(base).c_str());
  std::printf("  \"seconds_per_pass\": %.1f,\n", seconds);
  std::printf("  \"raw_fsync\": {\"per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f},\n",
              raw.per_s, raw.p50_ms, raw.p99_ms);
  std::printf("  \"raw_fdatasync\": {\"per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f},\n",
              raw_data.per_s, raw_data.p50_ms, raw_data.p99_ms);
  std::printf("  \"durable_log\": [\n");
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    double fsyncs = static_cast<double>(std::max<uint64_t>(r.fsyncs, 1));
    std::printf("    {\"appenders\": %d, \"payload_bytes\": 256, \"appends\": %llu, "
                "\"appends_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"fsyncs\": %llu, "
                "\"appends_per_fsync\": %.2f, \"errors\": %d, "
                "\"ratio_over_raw_fsync\": %.2f, \"ratio_over_raw_fdatasync\": %.2f}%s\n",
                r.appenders, static_cast<unsigned long long>(r.appends), r.appends_per_s, r.p50_ms,
                r.p99_ms, static_cast<unsigned long long>(r.fsyncs),
                static_cast<double>(r.appends) / fsyncs, r.errors, r.appends_per_s / raw.per_s,
                r.appends_per_s / raw_data.per_s, i + 1 < runs.size() ? "," : "");
  }
  std::printf("  ]\n}\n");
  for (const auto& r : runs)
    if (r.errors != 0)
      return 1;
  return 0;
}
