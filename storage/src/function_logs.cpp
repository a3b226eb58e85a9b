#include "nimbus/storage/function_logs.hpp"

#include "nimbus/storage/durable_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace nimbus::storage {

function_log_store::function_log_store(std::string directory, uint64_t max_bytes)
  : directory_(std::move(directory)), max_bytes_(max_bytes) {
}

std::string function_log_store::path(const std::string& account_id,
                                     const std::string& function) const {
  return directory_ + "/" + account_id + "/" + function + ".log";
}

function_log_store::~function_log_store() {
  for (auto& [_, f] : open_)
    ::close(f.fd);
}

function_log_store::open_file* function_log_store::open_for_append(const std::string& file,
                                                                   const std::string& account_id) {
  if (auto it = open_.find(file); it != open_.end())
    return &it->second;
  if (open_.size() >= max_open_files) {
    auto oldest = std::min_element(open_.begin(), open_.end(), [](const auto& a, const auto& b) {
      return a.second.last_use < b.second.last_use;
    });
    ::close(oldest->second.fd);
    open_.erase(oldest);
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
    ::close(it->second.fd);
    open_.erase(it);
  }
}

void function_log_store::append(const std::string& account_id, const std::string& function,
                                std::string_view text) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto file = path(account_id, function);
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
  auto n = ::write(f->fd, text.data(), text.size());
  if (n > 0)
    f->size += static_cast<uint64_t>(n);
  if (n != static_cast<ssize_t>(text.size())) {
    ++failures_;
    close_file(file);
  }
}

std::string function_log_store::tail(const std::string& account_id, const std::string& function,
                                     uint64_t max_bytes) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto file = path(account_id, function);
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
