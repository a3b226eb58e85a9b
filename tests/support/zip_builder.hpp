#pragma once

// Builds zip archives in memory for tests, with libzip, including the hostile
// shapes (absolute paths, "..", symbolic links) that a real zip tool refuses
// to write.

#include <zip.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace nimbus::test {

struct zip_entry {
  std::string name;
  std::string content;
  bool symlink = false;
  bool executable = false;
  /// Modification time stored in the archive (0: libzip's default, now).
  time_t mtime = 0;
  /// Unix mode bits to store instead of the ones derived above (0: derived).
  uint32_t mode = 0;
};

inline std::string make_zip(const std::vector<zip_entry>& entries) {
  char path[] = "/tmp/nimbus-zip-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0)
    throw std::runtime_error("mkstemp failed");
  ::close(fd);
  int error = 0;
  zip_t* z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &error);
  if (z == nullptr)
    throw std::runtime_error("zip_open failed");
  for (const auto& e : entries) {
    auto* src = zip_source_buffer(z, e.content.data(), e.content.size(), 0);
    auto idx = zip_file_add(z, e.name.c_str(), src, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE);
    if (idx < 0)
      throw std::runtime_error("zip_file_add failed for " + e.name);
    zip_uint32_t mode = e.symlink ? (S_IFLNK | 0777) : (S_IFREG | (e.executable ? 0755 : 0644));
    if (e.mode != 0)
      mode = e.mode;
    if (e.mtime != 0)
      zip_file_set_mtime(z, static_cast<zip_uint64_t>(idx), e.mtime, 0);
    zip_file_set_external_attributes(z, static_cast<zip_uint64_t>(idx), 0, ZIP_OPSYS_UNIX,
                                     mode << 16);
  }
  if (zip_close(z) != 0)
    throw std::runtime_error("zip_close failed");
  std::ifstream in{path, std::ios::binary};
  std::ostringstream out;
  out << in.rdbuf();
  std::remove(path);
  return out.str();
}

} // namespace nimbus::test
