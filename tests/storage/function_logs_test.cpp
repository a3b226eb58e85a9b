#include "nimbus/storage/function_logs.hpp"

#include "../support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

using namespace nimbus::storage;
using nimbus::test::temp_dir;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

TEST_CASE("function logs: appends are read back by tail, newest last") {
  temp_dir dir{"nimbus-logs"};
  function_log_store logs{dir.path(), 1 << 20};
  logs.append("111122223333", "f", "first line\n");
  logs.append("111122223333", "f", "second line\n");
  logs.append("111122223333", "g", "other function\n");
  CHECK(logs.tail("111122223333", "f", 1000) == "first line\nsecond line\n");
  CHECK(logs.tail("111122223333", "f", 15) == "second line\n");
  CHECK(logs.tail("111122223333", "g", 1000) == "other function\n");
  CHECK(logs.tail("111122223333", "missing", 1000).empty());
  CHECK(logs.failures() == 0);
}

TEST_CASE("function logs: buffered appends reach the file without a reader") {
  temp_dir dir{"nimbus-logs"};
  function_log_store logs{dir.path(), 1 << 20, std::chrono::milliseconds{20}};
  logs.append("111122223333", "f", "START\n");
  auto file = dir / "111122223333/f.log";
  // The flush thread writes within its interval; wait generously.
  std::string content;
  for (int i = 0; i < 1000 && content != "START\n"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
    content = slurp(file);
  }
  CHECK(content == "START\n");
}

TEST_CASE("function logs: the destructor writes what is still buffered") {
  temp_dir dir{"nimbus-logs"};
  {
    // An interval far beyond the test: only the destructor can write.
    function_log_store logs{dir.path(), 1 << 20, std::chrono::hours{1}};
    logs.append("111122223333", "f", "kept\n");
  }
  CHECK(slurp(dir / "111122223333/f.log") == "kept\n");
}

TEST_CASE("function logs: a file rotates past its bound and keeps every line in order") {
  temp_dir dir{"nimbus-logs"};
  function_log_store logs{dir.path(), 100, std::chrono::hours{1}};
  std::string all;
  for (int i = 0; i < 30; ++i) {
    auto line = "line " + std::to_string(i) + "\n";
    logs.append("111122223333", "f", line);
    all += line;
  }
  auto tail = logs.tail("111122223333", "f", 1 << 20);
  // The current file and the rotated one together hold the newest lines.
  REQUIRE(!tail.empty());
  CHECK(tail.size() <= 200);
  CHECK(all.size() >= tail.size());
  CHECK(all.substr(all.size() - tail.size()) == tail);
  CHECK(slurp(dir / "111122223333/f.log").size() <= 100);
  CHECK(slurp(dir / "111122223333/f.log.1").size() <= 100);
}

TEST_CASE("function logs: files closed to stay under the open-file bound keep their lines") {
  temp_dir dir{"nimbus-logs"};
  {
    function_log_store logs{dir.path(), 1 << 20, std::chrono::hours{1}};
    for (int round = 0; round < 2; ++round)
      for (int i = 0; i < 300; ++i)
        logs.append("111122223333", "f" + std::to_string(i),
                    "round " + std::to_string(round) + "\n");
  }
  for (int i = 0; i < 300; ++i)
    CHECK(slurp(dir / ("111122223333/f" + std::to_string(i) + ".log")) == "round 0\nround 1\n");
}

TEST_CASE("function logs: a big burst is written at once, not held in memory") {
  temp_dir dir{"nimbus-logs"};
  function_log_store logs{dir.path(), 1 << 24, std::chrono::hours{1}};
  std::string line(1000, 'x');
  line += "\n";
  for (int i = 0; i < 100; ++i)
    logs.append("111122223333", "f", line);
  // 100 KB passed the 64 KiB buffer bound: at least that much is on disk
  // although the flush interval is an hour.
  CHECK(slurp(dir / "111122223333/f.log").size() >= 64 * 1024);
}

TEST_CASE("function logs: write_now writes at once, after what was buffered before") {
  temp_dir dir{"nimbus-logs"};
  function_log_store logs{dir.path(), 1 << 20, std::chrono::hours{1}};
  logs.append("111122223333", "f", "buffered\n");
  logs.append("111122223333", "f", "async event\n", true);
  CHECK(slurp(dir / "111122223333/f.log") == "buffered\nasync event\n");
}
