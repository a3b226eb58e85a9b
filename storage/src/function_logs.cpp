#include "nimbus/storage/function_logs.hpp"

#include "nimbus/storage/durable_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace nimbus::storage {

function_log_store::function_log_store(std::string directory, uint64_t max_bytes)
  : directory_(std::move(directory)), max_bytes_(max_bytes) {
}

std::string function_log_store::path(const std::string& account_id,
                                     const std::string& function) const {
  return directory_ + "/" + account_id + "/" + function + ".log";
}

void function_log_store::append(const std::string& account_id, const std::string& function,
                                std::string_view text) {
  std::lock_guard<std::mutex> guard{mutex_};
  if (!make_directories(directory_ + "/" + account_id).ok()) {
    ++failures_;
    return;
  }
  auto file = path(account_id, function);
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) + text.size() > max_bytes_)
    ::rename(file.c_str(), (file + ".1").c_str());
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    ++failures_;
    return;
  }
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    ++failures_;
  ::close(fd);
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
