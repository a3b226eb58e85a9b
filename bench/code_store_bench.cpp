// Code store ingest benchmark: what chunking, convergent encryption and the
// batched fsync cost against plain OpenSSL over the same bytes.
//
//   code_store_bench [DATA_DIR [MIB [RUNS]]]   (defaults /var/tmp 256 5)
//
// On MIB of random data (one source file under DATA_DIR, in the page
// cache), per run, in MiB per CPU second (CLOCK_PROCESS_CPUTIME_ID: user and
// system time of this single-threaded process, so the file reads and writes
// count, the disk's own flush time does not; wall MiB/s is reported too):
//   raw:     SHA-256 + AES-256-GCM over each 512 KiB piece (the baseline:
//            one hash and one cipher pass);
//   seal:    seal_chunk_into on each piece: HMAC-SHA256 (the key) + AES-256-GCM
//            + SHA-256 of the ciphertext (the id), one chunk at a time;
//   pipelined: chunk_sealer over the same pieces: the id of piece i hashed
//            in lockstep with the key of piece i+1 (two SHA-NI streams),
//            what image_store's ingest uses;
//   file:    image_store::put_file into a file_chunk_store (the legacy
//            layout; one store, a new account per run): read, seal, write a
//            temp file and rename per chunk, one sync() (fsyncs) and a
//            durable manifest;
//   pack:    the same into a pack_chunk_store (a new one per run), what the
//            code store uses: one append per chunk, one sync() (an
//            fdatasync per pack), twice: appends with O_DIRECT and buffered;
//   memory:  image_store::put_file into a memory_chunk_store (crypto and
//            copies only).
// Ratios file/raw, pack/raw (both modes), memory/raw, seal/raw, pipelined/raw
// from the medians.
// With SHA-NI and VAES a hash pass costs about as much as a GCM pass, so two
// hashes plus GCM against one hash plus GCM puts seal/raw near 0.6; two
// interleaved hash streams cost little more than one, which lifts pipelined.
//   dedup:   10 images, each the same 100 MiB plus 1 MiB of its own, into a
//            pack chunk store: stored sealed bytes over unique plaintext bytes
//            (and the packs' bytes on disk: record headers and alignment).
// Prints a table, and writes JSON to $BENCH_OUT or bench/results/code_store.json.

#include "nimbus/storage/chunk.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/durable_file.hpp"
#include "nimbus/storage/file_chunk_store.hpp"
#include "nimbus/storage/image_store.hpp"
#include "nimbus/storage/key_store.hpp"
#include "nimbus/storage/pack_chunk_store.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace nimbus::storage;

namespace {

constexpr const char* account = "123456789012";

struct timing {
  double cpu_s = 0;
  double user_s = 0;
  double sys_s = 0;
  double wall_s = 0;
};

void rusage_now(double& user, double& sys) {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  user = static_cast<double>(r.ru_utime.tv_sec) + static_cast<double>(r.ru_utime.tv_usec) / 1e6;
  sys = static_cast<double>(r.ru_stime.tv_sec) + static_cast<double>(r.ru_stime.tv_usec) / 1e6;
}

double cpu_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

timing measure(const std::function<void()>& work) {
  auto wall = std::chrono::steady_clock::now();
  auto cpu = cpu_now();
  double user0 = 0, sys0 = 0;
  rusage_now(user0, sys0);
  work();
  timing t;
  t.cpu_s = cpu_now() - cpu;
  rusage_now(t.user_s, t.sys_s);
  t.user_s -= user0;
  t.sys_s -= sys0;
  t.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  return t;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "code_store_bench: %s\n", what.c_str());
  std::exit(1);
}

// The baseline: one SHA-256 and one AES-256-GCM pass per piece, the least a
// content-addressed encrypted store can do.
void raw_pass(const std::string& data) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  unsigned char key[32] = {1};
  unsigned char nonce[12] = {};
  unsigned char digest[32];
  unsigned char tag[16];
  std::string out(chunk_size + 16, '\0');
  for (size_t at = 0; at < data.size(); at += chunk_size) {
    auto n = std::min(chunk_size, data.size() - at);
    auto* in = reinterpret_cast<const unsigned char*>(data.data() + at);
    auto* o = reinterpret_cast<unsigned char*>(out.data());
    int len = 0;
    SHA256(in, n, digest);
    key[0] = digest[0];
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, nonce) != 1
        || EVP_EncryptUpdate(ctx, o, &len, in, static_cast<int>(n)) != 1
        || EVP_EncryptFinal_ex(ctx, o + len, &len) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
      die("AES-256-GCM failed");
  }
  EVP_CIPHER_CTX_free(ctx);
}

void seal_pass(const std::string& data, const convergence_secret& secret) {
  std::string sealed;
  for (size_t at = 0; at < data.size(); at += chunk_size)
    seal_chunk_into(secret, std::string_view{data}.substr(at, chunk_size), sealed);
}

void pipelined_pass(const std::string& data, const convergence_secret& secret) {
  chunk_sealer sealer(secret);
  size_t sealed = 0;
  for (size_t at = 0; at < data.size(); at += chunk_size)
    if (auto* done = sealer.seal(std::string_view{data}.substr(at, chunk_size)))
      sealed += done->bytes.size();
  if (auto* done = sealer.flush())
    sealed += done->bytes.size();
  if (sealed < data.size())
    die("pipelined sealer lost chunks");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  double one = 0;
  in >> one;
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", one);
  return text;
}

struct series {
  std::vector<double> cpu_mib_s, wall_mib_s, sys_share;
  void add(double mib, const timing& t) {
    cpu_mib_s.push_back(mib / t.cpu_s);
    wall_mib_s.push_back(mib / t.wall_s);
    sys_share.push_back(t.user_s + t.sys_s > 0 ? t.sys_s / (t.user_s + t.sys_s) : 0);
  }
};

std::string join(const std::vector<double>& v) {
  std::string out;
  for (auto x : v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.1f", out.empty() ? "" : ", ", x);
    out += buf;
  }
  return "[" + out + "]";
}

} // namespace

int main(int argc, char** argv) {
  std::string base = argc > 1 ? argv[1] : "/var/tmp";
  size_t mib = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 256;
  int runs = argc > 3 ? std::atoi(argv[3]) : 5;
  if (mib == 0 || runs <= 0 || runs > 100)
    die("usage: code_store_bench [DATA_DIR [MIB [RUNS]]]");
  auto tmpl = base + "/nimbus-code-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr)
    die("mkdtemp " + tmpl);
  std::string dir = tmpl;
  auto load_before = loadavg();

  std::string data(mib << 20, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(data.data()), static_cast<int>(data.size())) != 1)
    die("RAND_bytes failed");
  auto source = dir + "/source.img";
  if (auto s = write_file_atomic(source, data); !s.ok())
    die(s.error);

  std::string error;
  std::shared_ptr<key_store> keys = key_store::open(dir + "/keys", "", error);
  if (!keys)
    die(error);
  convergence_secret secret{};
  if (auto e = keys->convergence(account, convergence_domain::account, secret); !e.empty())
    die(e);

  // One file chunk store for every run, its 256 directories made before the
  // first run: new directories cost more than chunks on ext4 (inode
  // allocation) and a long-lived store has them all.
  auto file_chunks = open_file_chunk_store(dir + "/file/chunks", error);
  if (!file_chunks)
    die(error);
  auto file_images = image_store::open(dir + "/file/images", file_chunks, keys,
                                       convergence_domain::account, error);
  if (!file_images)
    die(error);
  for (int first = 0; first < 256; ++first) {
    chunk_id id{};
    id[0] = static_cast<uint8_t>(first);
    if (auto e = file_chunks->put(id, "warm-up"); !e.empty())
      die(e);
  }
  if (auto e = file_chunks->sync(); !e.empty())
    die(e);

  series raw, seal, pipelined, file, pack_direct, pack_buffered, memory;
  double dmib = static_cast<double>(mib);
  for (int run = 0; run < runs; ++run) {
    raw.add(dmib, measure([&] { raw_pass(data); }));
    seal.add(dmib, measure([&] { seal_pass(data, secret); }));
    pipelined.add(dmib, measure([&] { pipelined_pass(data, secret); }));

    // A new account per run: its own convergence secret, so every chunk is
    // new to the store, and nothing is deleted between runs (on ext4
    // without a journal, inodes freed in the last seconds make creating
    // files much slower, which would measure the benchmark, not the store).
    char run_account[16];
    std::snprintf(run_account, sizeof run_account, "9999999999%02d", run % 100);
    std::array<uint8_t, 32> data_key{};
    convergence_secret run_secret{};
    if (auto e = keys->data_key(run_account, data_key); !e.empty())
      die(e);
    if (auto e = keys->convergence(run_account, convergence_domain::account, run_secret);
        !e.empty())
      die(e);
    image_info info;
    file.add(dmib, measure([&] {
               if (auto e = file_images->put_file(run_account, "bench", source, info); !e.empty())
                 die(e);
             }));
    if (info.new_chunks != info.chunks)
      die("file store run did not store every chunk");

    // A new pack store per run, opened and closed outside the measurement.
    for (bool direct : {true, false}) {
      auto pack_dir = dir + "/pack-" + std::to_string(run) + (direct ? "-direct" : "-buffered");
      pack_store_options options;
      options.direct_io = direct;
      auto pack_chunks = pack_chunk_store::open(pack_dir + "/chunks", options, error);
      if (!pack_chunks)
        die(error);
      auto pack_images = image_store::open(pack_dir + "/images", pack_chunks, keys,
                                           convergence_domain::account, error);
      if (!pack_images)
        die(error);
      auto& row = direct ? pack_direct : pack_buffered;
      row.add(dmib, measure([&] {
                if (auto e = pack_images->put_file(run_account, "bench", source, info); !e.empty())
                  die(e);
              }));
      if (info.new_chunks != info.chunks)
        die("pack store run did not store every chunk");
      if (direct && !pack_chunks->statistics().direct_io)
        die("pack store refused O_DIRECT in " + pack_dir);
      pack_images.reset();
      pack_chunks.reset();
      std::filesystem::remove_all(pack_dir);
    }

    auto run_dir = dir + "/run-" + std::to_string(run);
    auto in_memory = std::make_shared<memory_chunk_store>();
    auto images = image_store::open(run_dir + "/images", in_memory, keys,
                                    convergence_domain::account, error);
    if (!images)
      die(error);
    memory.add(dmib, measure([&] {
                 if (auto e = images->put_file(account, "bench", source, info); !e.empty())
                   die(e);
               }));
    images.reset();
    std::filesystem::remove_all(run_dir);
  }
  file_images.reset();
  file_chunks.reset();

  // Dedup: 10 images = the same 100 MiB + 1 MiB of their own.
  constexpr size_t shared_mib = 100, own_mib = 1, dedup_images = 10;
  std::string shared(shared_mib << 20, '\0');
  std::string image((shared_mib + own_mib) << 20, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(shared.data()), static_cast<int>(shared.size()));
  std::copy(shared.begin(), shared.end(), image.begin());
  auto chunks = pack_chunk_store::open(dir + "/dedup/chunks", pack_store_options{}, error);
  if (!chunks)
    die(error);
  auto images =
    image_store::open(dir + "/dedup/images", chunks, keys, convergence_domain::account, error);
  if (!images)
    die(error);
  uint64_t ingested = 0, new_bytes = 0;
  for (size_t i = 0; i < dedup_images; ++i) {
    RAND_bytes(reinterpret_cast<unsigned char*>(image.data() + shared.size()),
               static_cast<int>(own_mib << 20));
    image_info info;
    if (auto e = images->put_bytes(account, "image-" + std::to_string(i), image, info); !e.empty())
      die(e);
    ingested += info.size;
    new_bytes += info.new_bytes;
  }
  auto stats = images->stats();
  std::vector<chunk_id> ids;
  chunks->list(ids);
  auto pack_bytes = chunks->statistics().pack_bytes;
  uint64_t unique = (shared_mib + dedup_images * own_mib) << 20;
  double dedup_ratio = static_cast<double>(stats.chunk_bytes) / static_cast<double>(unique);
  images.reset();
  chunks.reset();
  std::filesystem::remove_all(dir);

  double m_raw = median(raw.cpu_mib_s), m_seal = median(seal.cpu_mib_s);
  double m_pipelined = median(pipelined.cpu_mib_s);
  double m_file = median(file.cpu_mib_s), m_memory = median(memory.cpu_mib_s);
  double m_pack_direct = median(pack_direct.cpu_mib_s);
  double m_pack_buffered = median(pack_buffered.cpu_mib_s);
  // The mode pack_store_options uses by default.
  double m_pack = pack_store_options{}.direct_io ? m_pack_direct : m_pack_buffered;
  std::printf("code store ingest, %zu MiB x %d runs, median MiB per CPU second (wall MiB/s, "
              "system share of CPU)\n",
              mib, runs);
  auto line = [&](const char* name, const series& s) {
    double m = median(s.cpu_mib_s);
    std::printf("  %-32s %8.1f  (%6.1f, %3.0f%%)  %.2fx raw\n", name, m, median(s.wall_mib_s),
                100 * median(s.sys_share), m / m_raw);
  };
  line("raw SHA-256 + AES-256-GCM", raw);
  line("seal_chunk (HMAC + GCM + SHA)", seal);
  line("chunk_sealer (pipelined)", pipelined);
  line("put_file, file chunk store", file);
  line("put_file, pack store, O_DIRECT", pack_direct);
  line("put_file, pack store, buffered", pack_buffered);
  line("put_file, memory chunk store", memory);
  std::printf("pack store (default: %s): %.2fx raw\n",
              pack_store_options{}.direct_io ? "O_DIRECT" : "buffered", m_pack / m_raw);
  std::printf("dedup: %zu images of %zu+%zu MiB: %llu chunks, %.1f MiB stored for %.1f MiB "
              "unique (%.4fx; packs %.1f MiB), %.1f MiB ingested\n",
              dedup_images, shared_mib, own_mib, static_cast<unsigned long long>(ids.size()),
              static_cast<double>(stats.chunk_bytes) / 1048576.0,
              static_cast<double>(unique) / 1048576.0, dedup_ratio,
              static_cast<double>(pack_bytes) / 1048576.0,
              static_cast<double>(ingested) / 1048576.0);

  const char* out_env = std::getenv("BENCH_OUT");
  std::string out_path = out_env && *out_env ? out_env : NIMBUS_BENCH_RESULTS "/code_store.json";
  std::FILE* out = std::fopen(out_path.c_str(), "w");
  if (out == nullptr)
    die("open " + out_path);
  utsname uts{};
  ::uname(&uts);
  char date[32];
  auto now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::fprintf(out, "{\n");
  std::fprintf(out, "  \"benchmark\": \"code_store\",\n");
  std::fprintf(out, "  \"date\": \"%s\",\n", date);
  std::fprintf(out,
               "  \"machine\": {\"nproc\": %u, \"kernel\": \"%s\", \"loadavg_before\": %s, "
               "\"loadavg_after\": %s},\n",
               std::thread::hardware_concurrency(), uts.release, load_before.c_str(),
               loadavg().c_str());
  std::fprintf(out, "  \"data_dir\": \"%s\",\n", base.c_str());
  std::fprintf(out, "  \"mib\": %zu,\n  \"runs\": %d,\n", mib, runs);
  std::fprintf(out, "  \"unit\": \"MiB of image per CPU second (process user+system)\",\n");
  auto row = [&](const char* name, const series& s) {
    std::fprintf(out,
                 "  \"%s\": {\"median_cpu_mib_s\": %.1f, \"median_wall_mib_s\": %.1f, "
                 "\"median_system_share_of_cpu\": %.2f, \"cpu_mib_s\": %s},\n",
                 name, median(s.cpu_mib_s), median(s.wall_mib_s), median(s.sys_share),
                 join(s.cpu_mib_s).c_str());
  };
  row("raw_sha256_gcm", raw);
  row("seal_chunk", seal);
  row("seal_pipelined", pipelined);
  row("put_file_file_store", file);
  row("put_file_pack_store_direct", pack_direct);
  row("put_file_pack_store_buffered", pack_buffered);
  row("put_file_memory_store", memory);
  std::fprintf(out,
               "  \"ratios\": {\"seal_over_raw\": %.3f, \"seal_pipelined_over_raw\": %.3f, "
               "\"file_over_raw\": %.3f, \"pack_over_raw\": %.3f, "
               "\"pack_direct_over_raw\": %.3f, \"pack_buffered_over_raw\": %.3f, "
               "\"memory_over_raw\": %.3f},\n",
               m_seal / m_raw, m_pipelined / m_raw, m_file / m_raw, m_pack / m_raw,
               m_pack_direct / m_raw, m_pack_buffered / m_raw, m_memory / m_raw);
  std::fprintf(out, "  \"pack_store_default\": \"%s\",\n",
               pack_store_options{}.direct_io ? "direct" : "buffered");
  std::fprintf(out,
               "  \"dedup\": {\"images\": %zu, \"shared_mib\": %zu, \"own_mib\": %zu, "
               "\"chunks\": %zu, \"stored_bytes\": %llu, \"pack_bytes\": %llu, "
               "\"unique_bytes\": %llu, "
               "\"stored_over_unique\": %.5f, \"ingested_bytes\": %llu, "
               "\"new_bytes_reported\": %llu}\n",
               dedup_images, shared_mib, own_mib, ids.size(),
               static_cast<unsigned long long>(stats.chunk_bytes),
               static_cast<unsigned long long>(pack_bytes),
               static_cast<unsigned long long>(unique), dedup_ratio,
               static_cast<unsigned long long>(ingested),
               static_cast<unsigned long long>(new_bytes));
  std::fprintf(out, "}\n");
  std::fclose(out);
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
