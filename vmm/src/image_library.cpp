#include "nimbus/vmm/image_library.hpp"

#include "nimbus/config/logging.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

namespace nimbus::vmm {

namespace {

namespace fs = std::filesystem;

// Mount points in /proc/self/mountinfo escape space, tab, newline and
// backslash as \ooo.
std::string unescape(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      auto digits = field.substr(i + 1, 3);
      if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out += static_cast<char>(std::stoi(digits, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += field[i];
  }
  return out;
}

// Mount points at or below any of `roots`, in mountinfo order (a mount
// stacked on or inside another comes after it).
std::vector<std::string> mounts_under(const std::vector<std::string>& roots) {
  std::vector<std::string> found;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    fields >> id >> parent >> device >> root >> point;
    point = unescape(point);
    for (auto& prefix : roots)
      if (point == prefix || point.rfind(prefix + "/", 0) == 0) {
        found.push_back(point);
        break;
      }
  }
  return found;
}

// Detaches every mount below `roots`, innermost and latest first. A FUSE
// mount whose server was killed detaches like any other.
std::string detach_mounts(const std::vector<std::string>& roots) {
  for (int round = 0; round < 16; ++round) {
    auto points = mounts_under(roots);
    if (points.empty())
      return {};
    for (auto it = points.rbegin(); it != points.rend(); ++it) {
      if (::umount2(it->c_str(), MNT_DETACH) == 0)
        config::logger("vmm")->info("image library: detached stale mount {}", *it);
    }
  }
  auto left = mounts_under(roots);
  return left.empty() ? std::string{} : "cannot detach stale mount " + left.front();
}

bool valid_account(const std::string& account) {
  return !account.empty() && account.size() <= 64
         && std::all_of(account.begin(), account.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
            });
}

bool valid_name(const std::string& name) {
  static const std::string extra = "._-:@+";
  return !name.empty() && name.size() <= 160 && name[0] != '.'
         && std::all_of(name.begin(), name.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c))
                     || extra.find(c) != std::string::npos;
            });
}

std::string check_layout(uint64_t size, const std::vector<storage::chunk_ref>& chunks) {
  if (chunks.size() != (size + storage::chunk_size - 1) / storage::chunk_size)
    return "chunk count does not match the image size";
  for (size_t i = 0; i < chunks.size(); ++i) {
    auto want = i + 1 < chunks.size() ? storage::chunk_size : size - i * storage::chunk_size;
    if (chunks[i].size != want)
      return "chunk " + std::to_string(i) + " has the wrong size";
  }
  return {};
}

} // namespace

image_library::image_library(std::string dir, std::shared_ptr<storage::chunk_cache> cache,
                             image_resolver resolve)
    : dir_(std::move(dir)), cache_(std::move(cache)), resolve_(std::move(resolve)) {}

std::unique_ptr<image_library> image_library::open(std::string dir,
                                                   std::shared_ptr<storage::chunk_cache> cache,
                                                   image_resolver resolve, bool lazy,
                                                   std::string& error, linger_policy linger) {
  error.clear();
  std::error_code ec;
  fs::create_directories(dir, ec);
  auto absolute = fs::absolute(dir, ec).lexically_normal().string();
  if (ec) {
    error = "image library " + dir + ": " + ec.message();
    return nullptr;
  }
  while (absolute.size() > 1 && absolute.back() == '/')
    absolute.pop_back();
  std::unique_ptr<image_library> library(
      new image_library(absolute, std::move(cache), std::move(resolve)));
  auto& d = library->dir_;

  // A killed worker leaves its mounts behind; detach them before wiping, and
  // refuse to wipe if any is left (remove_all would walk into it).
  if (error = detach_mounts({d + "/mnt", d + "/fuse"}); !error.empty())
    return nullptr;
  for (auto sub : {"/mnt", "/files", "/fuse"}) {
    fs::remove_all(d + sub, ec);
    if (!ec)
      fs::create_directories(d + sub, ec);
    if (ec) {
      error = "image library " + d + sub + ": " + ec.message();
      return nullptr;
    }
  }

  library->profiles_ = std::make_unique<storage::start_profiles>(d + "/profiles");

  auto log = config::logger("vmm");
  if (!lazy) {
    log->info("image library: lazy loading is off, images are read in full before mounting");
  } else if (!storage::lazy_image_server::available()) {
    log->warn("image library: /dev/fuse is not usable, images are read in full before mounting");
  } else {
    std::string fuse_error;
    library->server_ = storage::lazy_image_server::start(d + "/fuse", library->cache_, fuse_error);
    if (!library->server_)
      log->warn("image library: {}; images are read in full before mounting", fuse_error);
  }
  library->linger_ = linger;
  if (linger.time.count() > 0) {
    auto* lib = library.get();
    library->sweeper_ = std::thread{[lib] { lib->sweep_lingering(); }};
  }
  return library;
}

image_library::~image_library() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  changed_.notify_all();
  if (sweeper_.joinable())
    sweeper_.join();
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] {
    return std::all_of(images_.begin(), images_.end(),
                       [](auto& entry) { return entry.second.state == image_state::ready; });
  });
  auto images = std::move(images_);
  lock.unlock();
  for (auto& [key, image] : images)
    unmount(key, image);
  server_.reset();
}

std::string image_library::acquire(const std::string& account, const std::string& name,
                                   std::string& root) {
  if (!valid_account(account) || !valid_name(name))
    return "image library: invalid account or image name";
  auto key = account + "-" + name;
  std::unique_lock lock(mutex_);
  while (true) {
    auto it = images_.find(key);
    if (it == images_.end())
      break;
    if (it->second.state == image_state::ready) {
      if (it->second.users++ == 0) {
        --stats_.lingering;
        ++stats_.reused;
      }
      root = it->second.root;
      return {};
    }
    // Being mounted or unmounted by another thread: wait for the outcome.
    changed_.wait(lock);
  }
  images_[key] = mounted_image{};
  lock.unlock();

  mounted_image image;
  std::string error;
  try {
    error = mount(account, name, key, image);
  } catch (const std::exception& e) {
    // The resolver is the caller's code; never leave the image half mounting.
    error = "image " + key + ": " + e.what();
  }

  lock.lock();
  if (error.empty()) {
    image.state = image_state::ready;
    image.users = 1;
    root = image.root;
    images_[key] = image;
    ++stats_.mounted;
    ++(image.lazy ? stats_.lazy_mounts : stats_.materialized);
  } else {
    images_.erase(key);
  }
  lock.unlock();
  changed_.notify_all();
  return error;
}

std::string image_library::mount(const std::string& account, const std::string& name,
                                 const std::string& key, mounted_image& image) {
  uint64_t size = 0;
  std::vector<storage::chunk_ref> chunks;
  auto error = resolve_(account, name, size, chunks);
  if (error.empty())
    error = check_layout(size, chunks);
  if (!error.empty())
    return "image " + key + ": " + error;
  if (server_) {
    // A leftover of a failed unmount would hold the name.
    server_->remove(key);
    auto count = chunks.size();
    error = server_->add(key, size, std::move(chunks), image.file);
    image.lazy = true;
    // What earlier starts read first loads while erofs mounts and the
    // sandbox is made, instead of one chunk after the other as the runtime
    // starts.
    if (error.empty())
      server_->preload(key, profiles_->ahead(key, count));
  } else {
    error = materialize(key, chunks, image.file);
  }
  if (!error.empty())
    return "image " + key + ": " + error;
  image.root = dir_ + "/mnt/" + key;
  std::error_code ec;
  fs::create_directories(image.root, ec);
  if (ec)
    error = "image " + key + ": create " + image.root + ": " + ec.message();
  else
    error = mount_erofs(image.file, image.root, image.mode);
  if (!error.empty()) {
    if (image.lazy)
      server_->remove(key);
    else
      ::unlink(image.file.c_str());
    ::rmdir(image.root.c_str());
    return error;
  }
  config::logger("vmm")->debug("image library: mounted {} ({}, {})", key, to_string(image.mode),
                               image.lazy ? "lazy" : "materialised");
  return {};
}

// Reads every chunk through the cache (verified) into files/<key>.
std::string image_library::materialize(const std::string& key,
                                       const std::vector<storage::chunk_ref>& chunks,
                                       std::string& file) {
  file = dir_ + "/files/" + key + ".erofs";
  auto temp = file + ".part";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0400);
  if (fd < 0)
    return "create " + temp + ": " + std::strerror(errno);
  std::string error;
  for (auto& ref : chunks) {
    std::shared_ptr<const std::string> text;
    error = cache_->read(ref, text);
    if (!error.empty())
      break;
    size_t done = 0;
    while (done < text->size() && error.empty()) {
      auto n = ::write(fd, text->data() + done, text->size() - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        error = "write " + temp + ": " + std::strerror(errno);
      else
        done += static_cast<size_t>(n);
    }
    if (!error.empty())
      break;
  }
  ::close(fd);
  if (error.empty() && ::rename(temp.c_str(), file.c_str()) != 0)
    error = "rename " + temp + ": " + std::strerror(errno);
  if (!error.empty()) {
    ::unlink(temp.c_str());
    return error;
  }
  return {};
}

void image_library::release(const std::string& account, const std::string& name) {
  auto key = account + "-" + name;
  std::unique_lock lock(mutex_);
  auto it = images_.find(key);
  if (it == images_.end() || it->second.state != image_state::ready || it->second.users == 0) {
    config::logger("vmm")->warn("image library: release of {} that is not acquired", key);
    return;
  }
  if (--it->second.users > 0)
    return;
  if (linger_.time.count() > 0) {
    it->second.unused_since = std::chrono::steady_clock::now();
    ++stats_.lingering;
    lock.unlock();
    changed_.notify_all(); // the sweeper may have to make room
    return;
  }
  it->second.state = image_state::unmounting;
  auto image = it->second;
  lock.unlock();
  unmount(key, image);
  lock.lock();
  images_.erase(key);
  --stats_.mounted;
  lock.unlock();
  changed_.notify_all();
}

void image_library::unmount(const std::string& key, const mounted_image& image) {
  if (auto error = unmount_erofs(image.root, image.mode); !error.empty())
    config::logger("vmm")->warn("image library: {}", error);
  if (image.lazy) {
    profiles_->record(key, server_->first_reads(key));
    server_->remove(key);
  } else {
    ::unlink(image.file.c_str());
  }
  ::rmdir(image.root.c_str());
}

void image_library::sweep_lingering() {
  using clock = std::chrono::steady_clock;
  std::unique_lock lock(mutex_);
  while (!closing_) {
    // Due: unused for the linger time, and the longest unused beyond
    // max_images.
    auto now = clock::now();
    std::vector<std::pair<clock::time_point, std::string>> unused;
    for (auto& [key, image] : images_)
      if (image.state == image_state::ready && image.users == 0)
        unused.emplace_back(image.unused_since, key);
    std::sort(unused.begin(), unused.end());
    std::vector<std::string> due;
    auto next = clock::time_point::max();
    for (size_t i = 0; i < unused.size(); ++i) {
      auto& [since, key] = unused[i];
      if (now - since >= linger_.time || unused.size() - i > linger_.max_images)
        due.push_back(key);
      else
        next = std::min(next, since + linger_.time);
    }
    if (due.empty()) {
      if (next == clock::time_point::max())
        changed_.wait(lock);
      else
        changed_.wait_until(lock, next);
      continue;
    }
    std::vector<std::pair<std::string, mounted_image>> going;
    for (auto& key : due) {
      auto& image = images_.at(key);
      image.state = image_state::unmounting;
      going.emplace_back(key, image);
    }
    lock.unlock();
    for (auto& [key, image] : going)
      unmount(key, image);
    lock.lock();
    for (auto& [key, image] : going) {
      images_.erase(key);
      --stats_.mounted;
      --stats_.lingering;
    }
    lock.unlock();
    changed_.notify_all();
    lock.lock();
  }
}

library_stats image_library::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

} // namespace nimbus::vmm
