// Lazy image benchmark: what a cold start pays to mount a big code image
// served through FUSE and read one file of it.
//
//   lazy_image_bench [RUNS [WORK_DIR]]       (root; default 15 runs, /var/tmp)
//
// Builds two erofs images with mkfs.erofs in a temporary directory under
// WORK_DIR: "big", 40 files of 5 MB of random data (200 MB), and "tiny", one
// small file. Both are sealed into 512 KiB chunks in a memory chunk store.
// Each run starts cold (a new chunk cache and a new FUSE server, so neither
// the cache nor the kernel's page cache holds anything) and times:
//   big:   mount_erofs of the big image's FUSE file + read one 5 MB file;
//   tiny:  mount_erofs of the tiny image's FUSE file + read its file;
// and counts the chunks fetched from the store. Reports medians: the share
// of the big image's chunks fetched (target <= 10%) and the extra time of the
// big image over the tiny one (target <= 20 ms). For scale, it also times the
// path without FUSE: read every chunk through a cold cache into a file, mount
// that, read the same 5 MB file (3 runs).
//
// Prints one JSON object and writes it to $BENCH_OUT, or else to
// bench/results/lazy_image.json in the source tree.

#include "nimbus/storage/chunk_cache.hpp"
#include "nimbus/storage/lazy_image.hpp"
#include "nimbus/vmm/image_mount.hpp"

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace nimbus;
using bench_clock = std::chrono::steady_clock;

namespace {

namespace fs = std::filesystem;

constexpr int big_files = 40;
constexpr size_t big_file_size = 5'000'000;
const char* const read_file_name = "f17";

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "lazy_image_bench: %s\n", what.c_str());
  std::exit(1);
}

std::string read_all(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    die("open " + path + ": " + std::strerror(errno));
  std::string out;
  char buffer[1 << 16];
  while (true) {
    auto n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      die("read " + path + ": " + std::strerror(errno));
    if (n == 0)
      break;
    out.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

void write_all(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out)
    die("write " + path);
}

std::string pseudo_random(size_t size, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::string out(size, '\0');
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t word = random();
    std::memcpy(out.data() + i, &word, 8);
  }
  return out;
}

struct stored_image {
  uint64_t size = 0;
  std::vector<storage::chunk_ref> chunks;
};

stored_image make_image(const std::string& tree, const std::string& image,
                        storage::chunk_store& store) {
  auto command = "mkfs.erofs -Enoinline_data --quiet " + image + " " + tree + " >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0)
    die("mkfs.erofs failed for " + tree);
  auto bytes = read_all(image);
  storage::convergence_secret secret;
  secret.fill(42);
  stored_image stored;
  stored.size = bytes.size();
  std::string sealed;
  for (size_t at = 0; at < bytes.size(); at += storage::chunk_size) {
    auto ref = storage::seal_chunk_into(
        secret, std::string_view(bytes).substr(at, storage::chunk_size), sealed);
    store.put(ref.id, sealed);
    stored.chunks.push_back(ref);
  }
  return stored;
}

double ms_since(bench_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(bench_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct run_result {
  double ms = 0;
  uint64_t fetched = 0;
  vmm::mount_mode mode = vmm::mount_mode::file;
};

// One cold run: new cache and FUSE server, then time mount + read.
run_result lazy_run(const std::string& work, std::shared_ptr<storage::memory_chunk_store> store,
                    const stored_image& image, const std::string& file_in_image,
                    const std::string& expected) {
  auto cache = std::make_shared<storage::chunk_cache>(store, "", uint64_t{256} << 20, 0);
  std::string error;
  auto server = storage::lazy_image_server::start(work + "/fuse", cache, error);
  if (!server)
    die(error);
  std::string file;
  if (auto e = server->add("image", image.size, image.chunks, file); !e.empty())
    die(e);
  auto target = work + "/mnt";
  fs::create_directories(target);
  run_result result;
  auto reads_before = store->reads();
  auto t0 = bench_clock::now();
  if (auto e = vmm::mount_erofs(file, target, result.mode); !e.empty())
    die(e);
  auto content = read_all(target + "/" + file_in_image);
  result.ms = ms_since(t0);
  result.fetched = store->reads() - reads_before;
  if (content != expected)
    die("wrong content read through the lazy mount");
  if (auto e = vmm::unmount_erofs(target, result.mode); !e.empty())
    die(e);
  return result;
}

// The path without FUSE: every chunk through a cold cache into a file first.
double materialised_run(const std::string& work, std::shared_ptr<storage::memory_chunk_store> store,
                        const stored_image& image, const std::string& expected) {
  auto cache = std::make_shared<storage::chunk_cache>(store, "", uint64_t{256} << 20, 0);
  auto path = work + "/materialised.erofs";
  auto target = work + "/mnt";
  fs::create_directories(target);
  auto t0 = bench_clock::now();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (auto& ref : image.chunks) {
      std::shared_ptr<const std::string> text;
      if (auto e = cache->read(ref, text); !e.empty())
        die(e);
      out.write(text->data(), static_cast<std::streamsize>(text->size()));
    }
  }
  vmm::mount_mode mode;
  if (auto e = vmm::mount_erofs(path, target, mode); !e.empty())
    die(e);
  auto content = read_all(target + "/" + read_file_name);
  auto ms = ms_since(t0);
  if (content != expected)
    die("wrong content read through the materialised mount");
  vmm::unmount_erofs(target, mode);
  fs::remove(path);
  return ms;
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
  int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 15;
  std::string base = argc > 2 ? argv[2] : "/var/tmp";
  if (::geteuid() != 0 || !storage::lazy_image_server::available())
    die("needs root and /dev/fuse");
  auto tmpl = base + "/nimbus-lazy-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr)
    die("mkdtemp under " + base);
  std::string work = tmpl;
  auto load_before = loadavg();

  // The images.
  fs::create_directories(work + "/big-tree");
  std::string expected_big;
  for (int i = 0; i < big_files; ++i) {
    auto data = pseudo_random(big_file_size, static_cast<uint64_t>(i + 1));
    auto name = "f" + std::to_string(i);
    write_all(work + "/big-tree/" + name, data);
    if (name == read_file_name)
      expected_big = data;
  }
  fs::create_directories(work + "/tiny-tree");
  const std::string expected_tiny = "tiny function code\n";
  write_all(work + "/tiny-tree/handler.txt", expected_tiny);
  auto store = std::make_shared<storage::memory_chunk_store>();
  auto big = make_image(work + "/big-tree", work + "/big.erofs", *store);
  auto tiny = make_image(work + "/tiny-tree", work + "/tiny.erofs", *store);
  fs::remove_all(work + "/big-tree");

  std::vector<double> big_ms, tiny_ms, big_fetched, tiny_fetched, materialised_ms;
  vmm::mount_mode mode = vmm::mount_mode::file;
  for (int run = 0; run < runs; ++run) {
    // Alternate which goes first, so drift in machine load hits both alike.
    auto b = run % 2 == 0 ? lazy_run(work, store, big, read_file_name, expected_big) : run_result{};
    auto t = lazy_run(work, store, tiny, "handler.txt", expected_tiny);
    if (run % 2 == 1)
      b = lazy_run(work, store, big, read_file_name, expected_big);
    big_ms.push_back(b.ms);
    tiny_ms.push_back(t.ms);
    big_fetched.push_back(static_cast<double>(b.fetched));
    tiny_fetched.push_back(static_cast<double>(t.fetched));
    mode = b.mode;
  }
  for (int run = 0; run < std::min(runs, 3); ++run)
    materialised_ms.push_back(materialised_run(work, store, big, expected_big));
  fs::remove_all(work);

  double fetched_share = median(big_fetched) / static_cast<double>(big.chunks.size());
  double extra_ms = median(big_ms) - median(tiny_ms);
  utsname uts{};
  ::uname(&uts);
  char date[32];
  auto now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  char json[4096];
  std::snprintf(
      json, sizeof json,
      "{\n"
      "  \"benchmark\": \"lazy_image\",\n"
      "  \"date\": \"%s\",\n"
      "  \"machine\": {\"nproc\": %u, \"kernel\": \"%s\", \"loadavg_before\": %s, "
      "\"loadavg_after\": %s},\n"
      "  \"runs\": %d,\n"
      "  \"mount_mode\": \"%s\",\n"
      "  \"big_image\": {\"bytes\": %llu, \"chunks\": %zu, \"files\": %d, \"file_bytes\": %zu},\n"
      "  \"tiny_image\": {\"bytes\": %llu, \"chunks\": %zu},\n"
      "  \"big_mount_read_5mb_ms\": {\"median\": %.2f, \"min\": %.2f, \"max\": %.2f},\n"
      "  \"tiny_mount_read_ms\": {\"median\": %.2f, \"min\": %.2f, \"max\": %.2f},\n"
      "  \"big_chunks_fetched\": {\"median\": %.0f, \"of\": %zu, \"share\": %.4f, "
      "\"target_share\": 0.10, \"ok\": %s},\n"
      "  \"tiny_chunks_fetched\": {\"median\": %.0f, \"of\": %zu},\n"
      "  \"extra_ms\": {\"median\": %.2f, \"target\": 20, \"ok\": %s},\n"
      "  \"materialised_mount_read_5mb_ms\": {\"median\": %.2f, \"runs\": %zu}\n"
      "}\n",
      date, std::thread::hardware_concurrency(), uts.release, load_before.c_str(),
      loadavg().c_str(), runs, vmm::to_string(mode), static_cast<unsigned long long>(big.size),
      big.chunks.size(), big_files, big_file_size, static_cast<unsigned long long>(tiny.size),
      tiny.chunks.size(), median(big_ms), *std::min_element(big_ms.begin(), big_ms.end()),
      *std::max_element(big_ms.begin(), big_ms.end()), median(tiny_ms),
      *std::min_element(tiny_ms.begin(), tiny_ms.end()),
      *std::max_element(tiny_ms.begin(), tiny_ms.end()), median(big_fetched), big.chunks.size(),
      fetched_share, fetched_share <= 0.10 ? "true" : "false", median(tiny_fetched),
      tiny.chunks.size(), extra_ms, extra_ms <= 20 ? "true" : "false", median(materialised_ms),
      materialised_ms.size());
  std::fputs(json, stdout);
  const char* out = std::getenv("BENCH_OUT");
  std::string path = out != nullptr && *out != '\0'
                         ? std::string(out)
                         : std::string(NIMBUS_SOURCE_DIR) + "/bench/results/lazy_image.json";
  std::ofstream(path, std::ios::trunc) << json;
  return 0;
}
