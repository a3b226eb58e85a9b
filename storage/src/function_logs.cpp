#include "nimbus/storage/function_logs.hpp"

#include "nimbus/storage/durable_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <vector>

namespace nimbus::storage {

function_log_store::function_log_store(std::string directory, uint64_t max_bytes,
                                       std::chrono::milliseconds flush_interval)
  : directory_(std::move(directory)), max_bytes_(max_bytes), flush_interval_(flush_interval) {
  flusher_ = std::thread{[this] { flush_loop(); }};
}

void function_log_store::flush_loop() {
  std::unique_lock<std::mutex> lock{mutex_};
  while (!stopping_) {
    wake_.wait(lock, [this] { return dirty_ || stopping_; });
    if (stopping_)
      break;
    // Let appends gather for one interval, then write them in one go.
    wake_.wait_for(lock, flush_interval_, [this] { return stopping_; });
    flush_locked();
  }
}

std::string function_log_store::path(const std::string& account_id,
                                     const std::string& function) const {
  return directory_ + "/" + account_id + "/" + function + ".log";
}

function_log_store::~function_log_store() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stopping_ = true;
  }
  wake_.notify_all();
  flusher_.join();
  std::lock_guard<std::mutex> guard{mutex_};
  flush_locked();
  for (auto& [_, f] : open_)
    ::close(f.fd);
}

bool function_log_store::write_pending(open_file& f) {
  size_t done = 0;
  while (done < f.pending.size()) {
    auto n = ::write(f.fd, f.pending.data() + done, f.pending.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      ++failures_;
      f.size -= f.pending.size() - done;
      f.pending.clear();
      return false;
    }
    done += static_cast<size_t>(n);
  }
  f.pending.clear();
  return true;
}

void function_log_store::flush_locked() {
  dirty_ = false;
  std::vector<std::string> names;
  for (auto& [name, f] : open_)
    if (!f.pending.empty())
      names.push_back(name);
  for (auto& name : names)
    if (!write_pending(open_.at(name)))
      close_file(name);
}

void function_log_store::flush() {
  std::lock_guard<std::mutex> guard{mutex_};
  flush_locked();
}

function_log_store::open_file* function_log_store::open_for_append(const std::string& file,
                                                                   const std::string& account_id) {
  if (auto it = open_.find(file); it != open_.end())
    return &it->second;
  if (open_.size() >= max_open_files) {
    auto oldest = std::min_element(open_.begin(), open_.end(), [](const auto& a, const auto& b) {
      return a.second.last_use < b.second.last_use;
    });
    close_file(std::string{oldest->first});
  }
  if (!make_directories(directory_ + "/" + account_id).ok())
    return nullptr;
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return nullptr;
  struct stat st {};
  open_file f;
  f.fd = fd;
  f.size = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return &open_.emplace(file, f).first->second;
}

void function_log_store::close_file(const std::string& file) {
  if (auto it = open_.find(file); it != open_.end()) {
    // Written before the file closes (rotation, or too many open files).
    write_pending(it->second);
    ::close(it->second.fd);
    open_.erase(it);
  }
}

void function_log_store::append(const std::string& account_id, const std::string& function,
                                std::string_view text, bool write_now) {
  std::lock_guard<std::mutex> guard{mutex_};
  // Built in a kept buffer: this runs for every invocation.
  auto& file = path_scratch_;
  file.clear();
  file += directory_;
  file += '/';
  file += account_id;
  file += '/';
  file += function;
  file += ".log";
  auto* f = open_for_append(file, account_id);
  if (f && f->size > 0 && f->size + text.size() > max_bytes_) {
    close_file(file);
    ::rename(file.c_str(), (file + ".1").c_str());
    f = open_for_append(file, account_id);
  }
  if (!f) {
    ++failures_;
    return;
  }
  f->last_use = ++uses_;
  f->pending.append(text);
  f->size += text.size();
  if (write_now || f->pending.size() >= max_pending) {
    if (!write_pending(*f))
      close_file(file);
    return;
  }
  if (!dirty_) {
    dirty_ = true;
    wake_.notify_one();
  }
}

std::string function_log_store::tail(const std::string& account_id, const std::string& function,
                                     uint64_t max_bytes) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto file = path(account_id, function);
  if (auto it = open_.find(file); it != open_.end() && !write_pending(it->second))
    close_file(file);
  std::string current, older;
  read_file(file, current);
  if (current.size() < max_bytes)
    read_file(file + ".1", older);
  auto all = older + current;
  if (all.size() <= max_bytes)
    return all;
  auto cut = all.size() - max_bytes;
  auto nl = all.find('\n', cut);
  return nl == std::string::npos ? all.substr(cut) : all.substr(nl + 1);
}

uint64_t function_log_store::failures() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return failures_;
}

} // namespace nimbus::storage
