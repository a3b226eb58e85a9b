#include "nimbus/storage/start_profiles.hpp"

#include "nimbus/storage/lazy_image.hpp"

#include "../support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace nimbus::storage;
using nimbus::test::temp_dir;

namespace {

using indexes = std::vector<uint32_t>;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

} // namespace

TEST_CASE("start_profiles: chunks both of the last two starts read first are loaded ahead") {
  temp_dir dir("nimbus-profiles-test");
  start_profiles profiles(dir / "profiles");
  CHECK(std::filesystem::is_directory(dir / "profiles"));
  CHECK(profiles.ahead("111-img", 100).empty());

  // One start teaches nothing: its invocation may read what the next does not.
  profiles.record("111-img", {0, 40, 41, 7, 8});
  CHECK(profiles.ahead("111-img", 100).empty());
  // Two that agree: what both read, in the order of the latest.
  profiles.record("111-img", {0, 41, 40, 12, 13});
  CHECK(profiles.ahead("111-img", 100) == indexes{0, 41, 40});
  CHECK(read_text(dir / "profiles/111-img")
        == "nimbus start profile 1\n0 41 40 12 13\n0 40 41 7 8\n");
  // Indexes past the image's end (another image under the key) are dropped.
  CHECK(profiles.ahead("111-img", 41) == indexes{0, 40});
  // A third start: the first is forgotten.
  profiles.record("111-img", {41, 12, 0});
  CHECK(profiles.ahead("111-img", 100) == indexes{41, 12, 0});
  // An empty recording (a mount that read nothing) changes nothing.
  profiles.record("111-img", {});
  CHECK(profiles.ahead("111-img", 100) == indexes{41, 12, 0});
  // Keys are separate; keys that are no single path component are refused.
  CHECK(profiles.ahead("111-other", 100).empty());
  profiles.record("../escape", {1});
  profiles.record(".hidden", {1});
  profiles.record("", {1});
  CHECK_FALSE(std::filesystem::exists(dir / "escape"));
  CHECK(std::distance(std::filesystem::directory_iterator(dir / "profiles"),
                      std::filesystem::directory_iterator())
        == 1);

  // Profiles outlive the object (a restarted worker finds them).
  start_profiles again(dir / "profiles");
  CHECK(again.ahead("111-img", 100) == indexes{41, 12, 0});
}

TEST_CASE("start_profiles: a damaged profile is ignored and replaced by the next recording") {
  temp_dir dir("nimbus-profiles-test");
  start_profiles profiles(dir.path());
  auto write = [&](const std::string& text) {
    std::ofstream(dir / "111-img", std::ios::binary | std::ios::trunc) << text;
  };
  for (const char* text :
       {"", "nimbus start profile 2\n1 2\n1 2\n", "nimbus start profile 1\n1 x 2\n1 2\n",
        "nimbus start profile 1\n1  2\n1 2\n", "nimbus start profile 1\n1 -2\n1 2\n",
        "nimbus start profile 1\n1 99999999999\n1 2\n"}) {
    write(text);
    CHECK_MESSAGE(profiles.ahead("111-img", 100).empty(), text);
  }
  // Too large to be ours.
  write("nimbus start profile 1\n1\n1" + std::string(2000, ' ') + "\n");
  CHECK(profiles.ahead("111-img", 100).empty());
  // More indexes on a line than a recording holds.
  std::string many = "nimbus start profile 1\n";
  for (size_t line = 0; line < 2; ++line) {
    for (size_t i = 0; i <= lazy_image_server::first_reads_max; ++i)
      many += (i == 0 ? "" : " ") + std::to_string(i);
    many += "\n";
  }
  write(many);
  CHECK(profiles.ahead("111-img", 100).empty());

  // The next recording starts afresh (nothing before it survives).
  profiles.record("111-img", {3, 4});
  CHECK(read_text(dir / "111-img") == "nimbus start profile 1\n3 4\n\n");
  CHECK(profiles.ahead("111-img", 100).empty());
  profiles.record("111-img", {4, 5});
  CHECK(profiles.ahead("111-img", 100) == indexes{4});

  // A recording longer than first_reads_max keeps the first ones.
  indexes long_reads;
  for (uint32_t i = 0; i < 2 * lazy_image_server::first_reads_max; ++i)
    long_reads.push_back(i);
  profiles.record("111-img", long_reads);
  profiles.record("111-img", long_reads);
  auto ahead = profiles.ahead("111-img", 1000);
  CHECK(ahead.size() == lazy_image_server::first_reads_max);
  CHECK(ahead.front() == 0);
}
