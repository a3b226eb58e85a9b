#include "nimbus/storage/code_archive.hpp"

#include "../support/zip_builder.hpp"

#include <doctest/doctest.h>

using namespace nimbus::storage;
using nimbus::test::make_zip;

TEST_CASE("code archive: a normal zip passes and reports its size") {
  auto zip = make_zip({{"app.py", "def handler(e, c):\n  return 1\n"},
                       {"lib/util.py", "x = 1\n"},
                       {"lib/link.py", "util.py", true},
                       {"up.py", "lib/../app.py", true}});
  auto report = check_zip(zip, 1 << 20);
  CHECK_MESSAGE(report.ok, report.error);
  CHECK(report.entries == 4);
  CHECK(report.unzipped_size > 30);
}

TEST_CASE("code archive: bytes that are not a zip are rejected") {
  CHECK_FALSE(check_zip("this is not a zip", 1 << 20).ok);
  CHECK_FALSE(check_zip("", 1 << 20).ok);
  auto zip = make_zip({{"a.txt", std::string(1000, 'a')}});
  CHECK_FALSE(check_zip(zip.substr(0, zip.size() / 2), 1 << 20).ok);
}

TEST_CASE("code archive: zip slip shapes are rejected") {
  struct bad_case {
    const char* what;
    std::vector<nimbus::test::zip_entry> entries;
    const char* fragment;
  };
  std::vector<bad_case> cases = {
    {"absolute path", {{"/etc/passwd", "x"}}, "absolute path"},
    {"dot-dot", {{"../../evil.sh", "x"}}, "'..'"},
    {"dot-dot inside", {{"a/b/../../../evil", "x"}}, "'..'"},
    {"backslash", {{"..\\evil", "x"}}, "backslash"},
    {"absolute symlink", {{"link", "/etc/shadow", true}}, "points outside"},
    {"escaping symlink", {{"a/link", "../../etc", true}}, "points outside"},
    {"escaping symlink 2", {{"link", "a/../../x", true}}, "points outside"},
  };
  for (const auto& c : cases) {
    auto report = check_zip(make_zip(c.entries), 1 << 20);
    CHECK_MESSAGE(!report.ok, c.what);
    CHECK_MESSAGE(report.error.find(c.fragment) != std::string::npos, c.what, report.error);
  }
}

TEST_CASE("code archive: the unzipped size is bounded") {
  auto zip = make_zip({{"big.bin", std::string(100'000, '\0')}});
  CHECK(zip.size() < 10'000);
  auto report = check_zip(zip, 50'000);
  CHECK_FALSE(report.ok);
  CHECK(report.error.find("Unzipped size must be smaller than 50000 bytes") != std::string::npos);
}

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>

TEST_CASE("code archive: extraction writes files, modes and inner links") {
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/nimbus-extract-XXXXXX";
  fs::path base = ::mkdtemp(tmpl);
  auto target = (base / "code").string();
  auto zip = make_zip({{"app.py", "print(1)\n"},
                       {"bin/run", "#!/bin/sh\n", false, true},
                       {"lib/a.py", "A = 1\n"},
                       {"lib/link.py", "a.py", true}});
  REQUIRE(extract_zip(zip, target, 1 << 20).empty());
  std::ifstream in{target + "/app.py"};
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text == "print(1)\n");
  struct stat st {};
  REQUIRE(::stat((target + "/bin/run").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0755);
  REQUIRE(::stat((target + "/app.py").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  CHECK(fs::is_symlink(target + "/lib/link.py"));
  CHECK(fs::read_symlink(target + "/lib/link.py") == "a.py");
  // A second extraction into an existing directory is refused.
  CHECK_FALSE(extract_zip(zip, target, 1 << 20).empty());
  // Hostile archives leave nothing behind.
  auto evil = (base / "evil").string();
  CHECK_FALSE(extract_zip(make_zip({{"ok.txt", "x"}, {"../../escape", "x"}}), evil, 1 << 20).empty());
  CHECK_FALSE(fs::exists(evil));
  fs::remove_all(base);
}

TEST_CASE("code archive: a chain of symlinks cannot redirect a later write") {
  // Each link looks harmless alone (d/up -> "..", d/up2 -> "up/.." both stay
  // inside lexically), but followed in turn d/up2 is the directory above the
  // extraction target. A file below it must not land outside.
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/nimbus-extract-XXXXXX";
  fs::path base = ::mkdtemp(tmpl);
  auto target = (base / "code").string();
  std::vector<nimbus::test::zip_entry> entries = {{"d/up", "..", true},
                                                  {"d/up2", "up/..", true},
                                                  {"d/up2/escape.txt", "owned"},
                                                  {"d/up2/up2/escape2.txt", "owned"}};
  for (int order = 0; order < 2; ++order) {
    auto problem = extract_zip(make_zip(entries), target, 1 << 20);
    CHECK_FALSE(fs::exists(base / "escape.txt"));
    CHECK_FALSE(fs::exists(base / "escape2.txt"));
    CHECK_FALSE(fs::exists(base.parent_path() / "escape2.txt"));
    if (problem.empty()) {
      // Contained: whatever was written is inside the target.
      CHECK(fs::exists(target));
    } else {
      CHECK_FALSE(fs::exists(target));
    }
    fs::remove_all(target);
    std::reverse(entries.begin(), entries.end());
  }
  CHECK(std::distance(fs::directory_iterator(base), fs::directory_iterator{}) == 0);
  fs::remove_all(base);
}
