#include "nimbus/storage/image_store.hpp"

#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/durable_file.hpp"

#include <openssl/crypto.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

namespace nimbus::storage {

namespace {

constexpr std::string_view manifest_suffix = ".manifest";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string label(const std::string& account, const std::string& name) {
  return "image " + account + "/" + name;
}

std::string failure(std::string_view step, const std::string& path, int err) {
  return std::string{step} + " " + path + ": " + std::strerror(err);
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

// Wipes a key when it goes out of scope.
template <typename Key>
struct key_guard {
  Key key{};
  ~key_guard() {
    OPENSSL_cleanse(key.data(), key.size());
  }
};

// Wipes the chunk keys of a manifest when it goes out of scope.
struct manifest_guard {
  image_manifest m;
  ~manifest_guard() {
    for (auto& c : m.chunks)
      OPENSSL_cleanse(c.key.data(), c.key.size());
  }
};

} // namespace

/// Chunks an ingest or a read relies on: GC leaves them alone until the
/// set is destroyed.
class image_store::pin_set {
public:
  explicit pin_set(image_store& store) : store_(store) {}
  ~pin_set() {
    std::lock_guard lock(store_.mutex_);
    for (auto& id : ids_) {
      auto i = store_.pins_.find(id);
      if (i != store_.pins_.end() && --i->second == 0)
        store_.pins_.erase(i);
    }
  }
  pin_set(const pin_set&) = delete;
  pin_set& operator=(const pin_set&) = delete;

  void add(const chunk_id& id) {
    std::lock_guard lock(store_.mutex_);
    add_locked(id);
  }
  // With store_.mutex_ held.
  void add_locked(const chunk_id& id) {
    ids_.push_back(id);
    ++store_.pins_[id];
  }

private:
  image_store& store_;
  std::vector<chunk_id> ids_;
};

bool image_store::valid_name(const std::string& name) {
  if (name.empty() || name.size() > 160)
    return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

bool image_store::valid_account(const std::string& account) {
  return account.size() == 12
         && std::all_of(account.begin(), account.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::unique_ptr<image_store> image_store::open(std::string dir, std::shared_ptr<chunk_store> chunks,
                                               std::shared_ptr<key_store> keys,
                                               convergence_domain domain, std::string& error) {
  error.clear();
  if (!chunks || !keys) {
    error = "image store: no chunk store or key store";
    return nullptr;
  }
  if (auto s = make_directories(dir); !s.ok()) {
    error = "image store: " + s.error;
    return nullptr;
  }
  // Two processes collecting garbage over each other's ingests would break
  // the pinning (CS-3): one owner at a time.
  auto lock_path = dir + "/.lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = "image store: " + failure("open", lock_path, errno);
    return nullptr;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    auto err = errno;
    ::close(fd);
    error = err == EWOULDBLOCK ? "image store " + dir + ": open in another process"
                               : "image store: " + failure("flock", lock_path, err);
    return nullptr;
  }
  std::unique_ptr<image_store> store{
    new image_store(std::move(dir), std::move(chunks), std::move(keys), domain, fd)};
  if (error = store->load(); !error.empty())
    return nullptr;
  return store;
}

image_store::image_store(std::string dir, std::shared_ptr<chunk_store> chunks,
                         std::shared_ptr<key_store> keys, convergence_domain domain, int lock_fd)
    : dir_(std::move(dir)), chunks_(std::move(chunks)), keys_(std::move(keys)), domain_(domain),
      lock_fd_(lock_fd) {}

image_store::~image_store() {
  ::close(lock_fd_);
}

std::string image_store::path_of(const std::string& account, const std::string& name) const {
  return dir_ + "/" + account + "/" + name + std::string{manifest_suffix};
}

void image_store::count(const std::vector<stored_chunk>& chunks, bool add) {
  for (auto& c : chunks) {
    if (add) {
      auto& entry = counts_[c.id];
      ++entry.refs;
      entry.sealed_size = static_cast<uint32_t>(c.size + chunk_overhead);
      continue;
    }
    auto i = counts_.find(c.id);
    if (i != counts_.end() && --i->second.refs == 0)
      counts_.erase(i);
  }
}

std::vector<image_store::stored_chunk> image_store::index_of(const image_manifest& m) {
  std::vector<stored_chunk> out;
  out.reserve(m.chunks.size());
  for (auto& c : m.chunks)
    out.push_back({c.id, c.size});
  return out;
}

std::string image_store::load() {
  std::vector<std::string> accounts;
  if (auto s = list_directory(dir_, accounts); !s.ok())
    return "image store: " + s.error;
  for (auto& account : accounts) {
    if (!valid_account(account))
      continue;
    auto account_dir = dir_ + "/" + account;
    std::vector<std::string> files;
    if (auto s = list_directory(account_dir, files); !s.ok())
      return "image store: " + s.error;
    key_guard<std::array<uint8_t, 32>> key;
    bool have_key = false;
    for (auto& file : files) {
      // An atomic write that a crash interrupted: never a manifest.
      if (ends_with(file, temp_suffix)) {
        if (auto s = remove_file_durable(account_dir + "/" + file); !s.ok())
          return "image store: " + s.error;
        continue;
      }
      if (!ends_with(file, manifest_suffix))
        continue;
      auto name = file.substr(0, file.size() - manifest_suffix.size());
      if (!valid_name(name))
        continue;
      auto image = account + "/" + name;
      std::string sealed;
      std::string error;
      if (!have_key) {
        error = keys_->data_key(account, key.key);
        have_key = error.empty();
      }
      if (error.empty())
        if (auto s = read_file(account_dir + "/" + file, sealed); !s.ok())
          error = s.error;
      manifest_guard m;
      if (error.empty())
        error = open_manifest(sealed, key.key, image, m.m);
      if (!error.empty()) {
        unreadable_.insert(image);
        continue;
      }
      auto chunks = index_of(m.m);
      count(chunks, true);
      images_.emplace(image, std::move(chunks));
    }
  }
  return {};
}

std::string image_store::ingest(const std::string& account, const std::string& name,
                                const piece_reader& next, image_info& out) {
  out = {};
  key_guard<convergence_secret> secret;
  key_guard<std::array<uint8_t, 32>> key;
  if (auto e = keys_->convergence(account, domain_, secret.key); !e.empty())
    return e;
  if (auto e = keys_->data_key(account, key.key); !e.empty())
    return e;
  pin_set pins(*this);
  manifest_guard m;
  // Chunk i is stored when chunk i+1 has been sealed: the sealer hashes
  // i's id together with i+1's key (two chunks in memory, not the image).
  chunk_sealer sealer(secret.key);
  auto store = [&](const sealed_chunk& c) -> std::string {
    // Pinned before the existence check: a GC between the check and the
    // manifest write must not remove a chunk this image is going to name.
    pins.add(c.ref.id);
    if (!chunks_->contains(c.ref.id)) {
      if (auto e = chunks_->put(c.ref.id, c.bytes); !e.empty())
        return e;
      ++out.new_chunks;
      out.new_bytes += c.bytes.size();
    }
    m.m.size += c.ref.size;
    m.m.chunks.push_back(c.ref);
    return {};
  };
  for (;;) {
    std::string_view piece;
    if (auto e = next(piece); !e.empty())
      return e;
    if (piece.empty())
      break;
    if (auto* done = sealer.seal(piece))
      if (auto e = store(*done); !e.empty())
        return e;
  }
  if (auto* done = sealer.flush())
    if (auto e = store(*done); !e.empty())
      return e;
  out.size = m.m.size;
  out.chunks = m.m.chunks.size();
  // Every chunk durable before the manifest that names it (CS-2).
  if (auto e = chunks_->sync(); !e.empty())
    return e;
  auto image = account + "/" + name;
  auto sealed_manifest = seal_manifest(m.m, key.key, image);
  if (auto s = make_directories(dir_ + "/" + account); !s.ok())
    return s.error;
  auto chunks = index_of(m.m);
  std::lock_guard lock(mutex_);
  if (auto s = write_file_atomic(path_of(account, name), sealed_manifest); !s.ok())
    return s.error;
  if (auto i = images_.find(image); i != images_.end()) {
    count(i->second, false);
    i->second = std::move(chunks);
    count(i->second, true);
  } else {
    count(chunks, true);
    images_.emplace(image, std::move(chunks));
  }
  unreadable_.erase(image);
  return {};
}

std::string image_store::put_file(const std::string& account, const std::string& name,
                                  const std::string& path, image_info& out) {
  if (!valid_account(account) || !valid_name(name))
    return "image store: invalid account or image name";
  fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0)
    return label(account, name) + ": " + failure("open", path, errno);
  ::posix_fadvise(file.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::string buffer(chunk_size, '\0');
  auto next = [&](std::string_view& piece) -> std::string {
    auto got = read_full(file.fd, buffer.data(), buffer.size());
    if (got < 0)
      return failure("read", path, errno);
    piece = std::string_view{buffer.data(), static_cast<size_t>(got)};
    return {};
  };
  try {
    if (auto e = ingest(account, name, next, out); !e.empty())
      return label(account, name) + ": " + e;
  } catch (const std::exception& e) {
    return label(account, name) + ": " + e.what();
  }
  return {};
}

std::string image_store::put_bytes(const std::string& account, const std::string& name,
                                   std::string_view data, image_info& out) {
  if (!valid_account(account) || !valid_name(name))
    return "image store: invalid account or image name";
  size_t at = 0;
  auto next = [&](std::string_view& piece) -> std::string {
    piece = data.substr(at, chunk_size);
    at += piece.size();
    return {};
  };
  try {
    if (auto e = ingest(account, name, next, out); !e.empty())
      return label(account, name) + ": " + e;
  } catch (const std::exception& e) {
    return label(account, name) + ": " + e.what();
  }
  return {};
}

std::string image_store::manifest(const std::string& account, const std::string& name,
                                  image_manifest& out) {
  out = {};
  if (!valid_account(account) || !valid_name(name))
    return "image store: invalid account or image name";
  key_guard<std::array<uint8_t, 32>> key;
  if (auto e = keys_->data_key(account, key.key); !e.empty())
    return e;
  std::string sealed;
  auto path = path_of(account, name);
  if (auto s = read_file(path, sealed); !s.ok()) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 && errno == ENOENT)
      return label(account, name) + ": not found";
    return label(account, name) + ": " + s.error;
  }
  if (auto e = open_manifest(sealed, key.key, account + "/" + name, out); !e.empty())
    return label(account, name) + ": " + e;
  return {};
}

std::string image_store::pin_manifest(const std::string& account, const std::string& name,
                                      image_manifest& out, pin_set& pins) {
  // Read and pinned under the lock: the image can not be removed and its
  // chunks collected between reading the manifest and pinning them.
  std::lock_guard lock(mutex_);
  if (auto e = manifest(account, name, out); !e.empty())
    return e;
  for (auto& c : out.chunks)
    pins.add_locked(c.id);
  return {};
}

bool image_store::exists(const std::string& account, const std::string& name) {
  if (!valid_account(account) || !valid_name(name))
    return false;
  auto image = account + "/" + name;
  std::lock_guard lock(mutex_);
  return images_.count(image) != 0 || unreadable_.count(image) != 0;
}

std::string image_store::remove(const std::string& account, const std::string& name) {
  if (!valid_account(account) || !valid_name(name))
    return "image store: invalid account or image name";
  auto image = account + "/" + name;
  std::lock_guard lock(mutex_);
  auto i = images_.find(image);
  if (i == images_.end() && unreadable_.count(image) == 0)
    return label(account, name) + ": not found";
  if (auto s = remove_file_durable(path_of(account, name)); !s.ok())
    return label(account, name) + ": " + s.error;
  if (i != images_.end()) {
    count(i->second, false);
    images_.erase(i);
  }
  unreadable_.erase(image);
  return {};
}

std::string image_store::collect_garbage(uint64_t& removed) {
  removed = 0;
  {
    std::lock_guard lock(mutex_);
    if (!unreadable_.empty())
      return "image store: garbage collection suspended: the manifest of image "
             + *unreadable_.begin() + " can not be opened";
  }
  std::vector<chunk_id> ids;
  if (auto e = chunks_->list(ids); !e.empty())
    return "image store: " + e;
  for (auto& id : ids) {
    // Decided and removed under the lock, one chunk at a time, so that an
    // ingest pinning this chunk waits for the removal and then finds it gone.
    std::lock_guard lock(mutex_);
    if (counts_.count(id) != 0 || pins_.count(id) != 0)
      continue;
    if (auto e = chunks_->remove(id); !e.empty())
      return "image store: " + e;
    ++removed;
  }
  return {};
}

std::string image_store::read_image(const std::string& account, const std::string& name,
                                    std::string& out) {
  out.clear();
  pin_set pins(*this);
  manifest_guard m;
  if (auto e = pin_manifest(account, name, m.m, pins); !e.empty())
    return e;
  out.reserve(m.m.size);
  std::string sealed, plain;
  for (auto& ref : m.m.chunks) {
    std::string e = chunks_->get(ref.id, sealed);
    if (e.empty())
      e = open_chunk(ref, sealed, plain);
    if (!e.empty()) {
      out.clear();
      return label(account, name) + ": " + e;
    }
    out += plain;
  }
  return {};
}

std::string image_store::copy_image(const std::string& account, const std::string& name,
                                    const std::string& dest_path) {
  pin_set pins(*this);
  manifest_guard m;
  if (auto e = pin_manifest(account, name, m.m, pins); !e.empty())
    return e;
  auto temp = dest_path + "." + request_hex(6) + std::string{temp_suffix};
  fd_guard file{::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
  if (file.fd < 0)
    return label(account, name) + ": " + failure("open", temp, errno);
  auto fail = [&](const std::string& e) {
    ::unlink(temp.c_str());
    return label(account, name) + ": " + e;
  };
  std::string sealed, plain;
  for (auto& ref : m.m.chunks) {
    std::string e = chunks_->get(ref.id, sealed);
    if (e.empty())
      e = open_chunk(ref, sealed, plain);
    if (!e.empty())
      return fail(e);
    size_t done = 0;
    while (done < plain.size()) {
      auto n = ::write(file.fd, plain.data() + done, plain.size() - done);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        return fail(failure("write", temp, errno));
      }
      done += static_cast<size_t>(n);
    }
  }
  if (::close(file.fd) != 0) {
    file.fd = -1;
    return fail(failure("close", temp, errno));
  }
  file.fd = -1;
  if (::rename(temp.c_str(), dest_path.c_str()) != 0)
    return fail(failure("rename", temp, errno));
  return {};
}

std::vector<std::string> image_store::names(const std::string& account) {
  std::vector<std::string> out;
  if (!valid_account(account))
    return out;
  auto prefix = account + "/";
  std::lock_guard lock(mutex_);
  for (auto i = images_.lower_bound(prefix); i != images_.end() && i->first.rfind(prefix, 0) == 0;
       ++i)
    out.push_back(i->first.substr(prefix.size()));
  for (auto& image : unreadable_)
    if (image.rfind(prefix, 0) == 0)
      out.push_back(image.substr(prefix.size()));
  std::sort(out.begin(), out.end());
  return out;
}

store_stats image_store::stats() {
  std::lock_guard lock(mutex_);
  store_stats s;
  s.images = images_.size();
  s.chunks = counts_.size();
  for (auto& [id, c] : counts_)
    s.chunk_bytes += c.sealed_size;
  return s;
}

std::shared_ptr<chunk_store> image_store::chunks() const {
  return chunks_;
}

std::shared_ptr<key_store> image_store::keys() const {
  return keys_;
}

} // namespace nimbus::storage
