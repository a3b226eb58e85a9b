#include "nimbus/storage/staging_tree.hpp"

#include "../support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

using namespace nimbus::storage;
using nimbus::test::read_file;
using nimbus::test::temp_dir;
using nimbus::test::write_file;
namespace fs = std::filesystem;

namespace {

content_reader from_string(std::string text) {
  auto data = std::make_shared<std::string>(std::move(text));
  auto pos = std::make_shared<size_t>(0);
  return [data, pos](char* buffer, size_t capacity) -> int64_t {
    size_t n = std::min(capacity, data->size() - *pos);
    std::memcpy(buffer, data->data() + *pos, n);
    *pos += n;
    return static_cast<int64_t>(n);
  };
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// Every path under `dir`, relative, sorted.
std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    out.insert(e.path().lexically_relative(dir).string());
  return out;
}

// A scratch area with a tree and a sibling "outside" directory holding one
// secret file that no operation on the tree may touch.
struct fixture {
  temp_dir base{"nimbus-staging"};
  std::string outside = base / "outside";
  std::string root = base / "tree";
  std::unique_ptr<staging_tree> tree;

  explicit fixture(on_conflict policy = on_conflict::replace, uint64_t max_bytes = 1 << 20,
                   uint64_t max_entries = 1000) {
    fs::create_directory(outside);
    write_file(outside + "/secret", "secret");
    std::string error;
    tree = staging_tree::create(root, max_bytes, max_entries, policy, error);
    REQUIRE_MESSAGE(tree, error);
  }

  void check_outside_untouched() {
    CHECK(listing(outside) == std::set<std::string>{"secret"});
    CHECK(read_file(outside + "/secret") == "secret");
    struct stat st {};
    REQUIRE(::stat((outside + "/secret").c_str(), &st) == 0);
    CHECK(st.st_nlink == 1);
    CHECK(listing(base.path()).count("escape") == 0);
    CHECK_FALSE(fs::exists(base / "pwned"));
  }
};

} // namespace

TEST_CASE("staging tree: normalises entry paths and refuses '..'") {
  std::string out;
  CHECK(normalise_entry_path("./a//b/./c/", out));
  CHECK(out == "a/b/c");
  CHECK(normalise_entry_path("/etc/passwd", out));
  CHECK(out == "etc/passwd");
  CHECK(normalise_entry_path("./", out));
  CHECK(out.empty());
  CHECK_FALSE(normalise_entry_path("a/../b", out));
  CHECK_FALSE(normalise_entry_path("..", out));
  CHECK_FALSE(normalise_entry_path(std::string_view{"a\0b", 3}, out));
  CHECK_FALSE(normalise_entry_path(std::string(max_path_length + 1, 'x'), out));
  std::string deep;
  for (size_t i = 0; i <= max_path_depth; ++i)
    deep += "d/";
  CHECK_FALSE(normalise_entry_path(deep, out));
}

TEST_CASE("staging tree: files, directories and links with normalised modes") {
  fixture f;
  auto old_umask = ::umask(077);
  CHECK(f.tree->add_file("bin/tool", 04755, from_string("#!/bin/sh\n")).empty());
  CHECK(f.tree->add_file("etc/conf", 0600, from_string("x=1\n")).empty());
  CHECK(f.tree->add_file("lib/only-group-x", 02610, from_string("")).empty());
  CHECK(f.tree->add_directory("var/empty").empty());
  CHECK(f.tree->add_symlink("bin/sh", "/bin/busybox").empty());
  CHECK(f.tree->add_hard_link("etc/conf2", "etc/conf").empty());
  ::umask(old_umask);

  CHECK(mode_of(f.root) == 0755);
  CHECK(mode_of(f.root + "/bin") == 0755);
  CHECK(mode_of(f.root + "/var/empty") == 0755);
  CHECK(mode_of(f.root + "/bin/tool") == 0755);
  CHECK(mode_of(f.root + "/etc/conf") == 0644);
  CHECK(mode_of(f.root + "/lib/only-group-x") == 0755);
  CHECK(read_file(f.root + "/bin/tool") == "#!/bin/sh\n");
  CHECK(fs::read_symlink(f.root + "/bin/sh") == "/bin/busybox");
  struct stat a {}, b {};
  REQUIRE(::stat((f.root + "/etc/conf").c_str(), &a) == 0);
  REQUIRE(::stat((f.root + "/etc/conf2").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK(f.tree->bytes_written() == 14);
  // bin, bin/tool, etc, etc/conf, lib, lib/..., var, var/empty, bin/sh, etc/conf2
  CHECK(f.tree->entries_created() == 10);
  // The root is not an entry.
  CHECK_FALSE(f.tree->add_file("/", 0644, from_string("x")).empty());
  CHECK_FALSE(f.tree->remove("./").empty());
  // A second tree on the same directory is refused.
  std::string error;
  CHECK_FALSE(staging_tree::create(f.root, 1, 1, on_conflict::replace, error));
  CHECK_FALSE(error.empty());
}

TEST_CASE("staging tree: hostile paths and links never lead outside") {
  fixture f;
  // Absolute paths are taken relative to the root.
  CHECK(f.tree->add_file(f.outside + "/pwned", 0644, from_string("x")).empty());
  CHECK(fs::exists(f.root + f.outside + "/pwned"));
  // ".." is refused outright.
  auto problem = f.tree->add_file("../pwned", 0644, from_string("x"));
  CHECK(problem.find("'..'") != std::string::npos);
  CHECK_FALSE(f.tree->add_file("a/../../pwned", 0644, from_string("x")).empty());
  // A symlink to the outside, relative and absolute: writes through it stay
  // inside ("../outside" resolves to "/outside" of the tree, which does not
  // exist; the absolute one to the directory made just above).
  CHECK(f.tree->add_symlink("rel", "../outside").empty());
  CHECK(f.tree->add_symlink("abs", f.outside).empty());
  CHECK(f.tree->add_symlink("root", "/").empty());
  CHECK_FALSE(f.tree->add_file("rel/secret", 0644, from_string("owned")).empty());
  CHECK(f.tree->add_file("abs/secret", 0644, from_string("inside")).empty());
  CHECK(read_file(f.root + f.outside + "/secret") == "inside");
  CHECK(f.tree->add_file("root/escape", 0644, from_string("inside")).empty());
  CHECK(read_file(f.root + "/escape") == "inside");
  // A chain of links that each look harmless: d/up -> "..", d/up2 -> "up/..".
  // Lexically d/up2 is "d"; followed naively it is the tree's parent.
  CHECK(f.tree->add_symlink("d/up", "..").empty());
  CHECK(f.tree->add_symlink("d/up2", "up/..").empty());
  CHECK(f.tree->add_file("d/up2/chained", 0644, from_string("chained")).empty());
  CHECK(read_file(f.root + "/chained") == "chained");
  CHECK(f.tree->add_directory("d/up2/d/up2/newdir").empty());
  CHECK(fs::is_directory(f.root + "/newdir"));
  // Hard links to the outside: by "..", through a link, absolute.
  CHECK_FALSE(f.tree->add_hard_link("h1", "../outside/secret").empty());
  CHECK_FALSE(f.tree->add_hard_link("h2", "rel/secret").empty());
  CHECK(f.tree->add_hard_link("h3", "abs/secret").empty()); // the copy inside
  CHECK(f.tree->add_hard_link("h4", f.outside + "/secret").empty());
  CHECK(read_file(f.root + "/h4") == "inside");
  CHECK_FALSE(f.tree->add_hard_link("h5", "d/up2/up/../outside/secret").empty());
  // A file added where a link to the outside stands replaces the link.
  CHECK(f.tree->add_symlink("victim", f.outside + "/secret").empty());
  CHECK(f.tree->add_file("victim", 0644, from_string("replaced")).empty());
  CHECK(read_file(f.root + "/victim") == "replaced");
  // Whiteouts through links remove inside only; a link is removed, not followed.
  CHECK(f.tree->add_symlink("out", f.outside).empty());
  CHECK(f.tree->remove("out/secret").empty());
  CHECK(f.tree->clear_directory("out").empty());
  CHECK(f.tree->clear_directory("d/up2").empty()); // a link: not followed
  CHECK(fs::exists(f.root + "/chained"));
  CHECK(f.tree->remove("out").empty());
  CHECK_FALSE(fs::exists(fs::symlink_status(f.root + "/out")));
  CHECK(f.tree->remove("rel").empty());
  f.check_outside_untouched();
}

TEST_CASE("staging tree: a symlink made earlier cannot redirect a later write") {
  // The container-layer attack: layer 1 makes "etc" a link to the host's
  // /etc (or to the tree's parent); layer 2 writes "etc/passwd".
  fixture f;
  CHECK(f.tree->add_symlink("etc", f.outside).empty());
  CHECK(f.tree->add_symlink("up", "../../..").empty());
  CHECK(f.tree->add_directory(f.outside).empty()); // now exists inside
  CHECK(f.tree->add_file("etc/secret", 0644, from_string("layer 2")).empty());
  CHECK(read_file(f.root + f.outside + "/secret") == "layer 2");
  CHECK(f.tree->add_file("up/escape", 0644, from_string("layer 2")).empty());
  CHECK(read_file(f.root + "/escape") == "layer 2");
  CHECK(f.tree->add_symlink("etc/link-in-linked-dir", "../../secret").empty());
  CHECK(f.tree->add_hard_link("hard", "etc/secret").empty());
  CHECK(read_file(f.root + "/hard") == "layer 2");
  f.check_outside_untouched();
}

TEST_CASE("staging tree: size and entry bombs are stopped and named") {
  {
    fixture f{on_conflict::replace, 1000, 1000};
    CHECK(f.tree->add_file("small", 0644, from_string(std::string(600, 'a'))).empty());
    auto problem = f.tree->add_file("dir/bomb", 0644, from_string(std::string(600, 'b')));
    CHECK(problem.find("'dir/bomb'") != std::string::npos);
    CHECK(problem.find("exceeds the unpacked size limit") != std::string::npos);
    CHECK_FALSE(fs::exists(f.root + "/dir/bomb")); // no partial file
    // A reader that never ends is cut off too.
    problem = f.tree->add_file("endless", 0644, [](char* buffer, size_t capacity) {
      std::memset(buffer, 'z', capacity);
      return static_cast<int64_t>(capacity);
    });
    CHECK(problem.find("exceeds the unpacked size limit") != std::string::npos);
    // A failing reader is an error and leaves nothing.
    problem = f.tree->add_file("broken", 0644, [](char*, size_t) { return int64_t{-1}; });
    CHECK(problem.find("'broken'") != std::string::npos);
    CHECK_FALSE(fs::exists(f.root + "/broken"));
  }
  {
    fixture f{on_conflict::replace, 1 << 20, 5};
    CHECK(f.tree->add_file("a/b/c", 0644, from_string("1")).empty()); // 3 entries
    CHECK(f.tree->add_symlink("a/l", "b").empty());                   // 4
    CHECK(f.tree->add_directory("a/d").empty());                      // 5
    auto problem = f.tree->add_file("a/e", 0644, from_string("1"));
    CHECK(problem.find("'a/e'") != std::string::npos);
    CHECK(problem.find("exceeds the entry limit") != std::string::npos);
    problem = f.tree->add_file("x/y/z", 0644, from_string("1"));
    CHECK(problem.find("exceeds the entry limit") != std::string::npos);
    CHECK(f.tree->entries_created() == 5);
  }
}

TEST_CASE("staging tree: replacing, whiteouts and opaque directories") {
  fixture f;
  CHECK(f.tree->add_file("app/a", 0644, from_string("a")).empty());
  CHECK(f.tree->add_file("app/sub/b", 0644, from_string("b")).empty());
  CHECK(f.tree->add_file("app/sub/c", 0644, from_string("c")).empty());
  CHECK(f.tree->add_file("keep/k", 0644, from_string("k")).empty());
  // A file replaces a directory, a directory a file, a directory merges.
  CHECK(f.tree->add_file("app/sub", 0755, from_string("now a file")).empty());
  CHECK(read_file(f.root + "/app/sub") == "now a file");
  CHECK(f.tree->add_directory("app/a").empty());
  CHECK(fs::is_directory(f.root + "/app/a"));
  CHECK(f.tree->add_file("keep/k2", 0644, from_string("k2")).empty());
  CHECK(f.tree->add_directory("keep").empty());
  CHECK(fs::exists(f.root + "/keep/k"));
  // Whiteouts: missing entries and missing parents are fine.
  CHECK(f.tree->remove("app/sub").empty());
  CHECK(f.tree->remove("app/missing").empty());
  CHECK(f.tree->remove("nowhere/at/all").empty());
  CHECK(f.tree->remove("keep/k/below-a-file").empty());
  CHECK_FALSE(fs::exists(f.root + "/app/sub"));
  // Opaque: everything goes but what the predicate keeps (this layer's own).
  CHECK(f.tree->add_file("opq/old/x", 0644, from_string("x")).empty());
  CHECK(f.tree->add_file("opq/old/y", 0644, from_string("y")).empty());
  CHECK(f.tree->add_file("opq/gone", 0644, from_string("g")).empty());
  CHECK(f.tree->add_file("opq/old/new", 0644, from_string("n")).empty());
  std::set<std::string> this_layer{"opq", "opq/old", "opq/old/new"};
  CHECK(f.tree
          ->clear_directory("opq",
                            [&](const std::string& p) { return this_layer.count(p) > 0; })
          .empty());
  CHECK(listing(f.root + "/opq") == std::set<std::string>{"old", "old/new"});
  CHECK(f.tree->clear_directory("keep").empty());
  CHECK(listing(f.root + "/keep").empty());
  CHECK(f.tree->clear_directory("not-there").empty());
  f.check_outside_untouched();
}

TEST_CASE("staging tree: the refuse policy keeps the first entry") {
  fixture f{on_conflict::refuse};
  CHECK(f.tree->add_file("a/x", 0644, from_string("1")).empty());
  CHECK(f.tree->add_directory("a").empty()); // a directory onto a directory is fine
  auto problem = f.tree->add_file("a/x", 0644, from_string("2"));
  CHECK(problem.find("conflicts") != std::string::npos);
  CHECK_FALSE(f.tree->add_symlink("a", "b").empty());
  CHECK_FALSE(f.tree->add_directory("a/x").empty());
  CHECK_FALSE(f.tree->add_file("a/x/y", 0644, from_string("3")).empty());
  CHECK(read_file(f.root + "/a/x") == "1");
}

TEST_CASE("staging tree: zero runs are stored as holes and destroy removes all") {
  fixture f{on_conflict::replace, 64 << 20};
  std::string content(8 << 20, '\0');
  content[3 << 20] = 'x';
  CHECK(f.tree->add_file("sparse", 0644, from_string(content)).empty());
  CHECK(read_file(f.root + "/sparse") == content);
  struct stat st {};
  REQUIRE(::stat((f.root + "/sparse").c_str(), &st) == 0);
  CHECK(st.st_size == 8 << 20);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 < (1u << 20));
  CHECK(f.tree->add_symlink("loop", "loop").empty());
  CHECK(f.tree->add_symlink("out", f.outside).empty());
  CHECK(f.tree->destroy().empty());
  CHECK_FALSE(fs::exists(f.root));
  f.check_outside_untouched();
}
