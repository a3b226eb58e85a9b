#include "nimbus/storage/code_archive.hpp"

#include <zip.h>

#include <sys/stat.h>

#include <cstring>
#include <memory>
#include <vector>

namespace nimbus::storage {

namespace {

struct archive_closer {
  void operator()(zip_t* z) const {
    zip_discard(z);
  }
};

// Splits a relative path into components, dropping empty ones and ".".
std::vector<std::string_view> components(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    if (!part.empty() && part != ".")
      out.push_back(part);
    if (slash == std::string_view::npos)
      break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Returns an error text if `name` may not appear as an entry name.
std::string check_name(std::string_view name) {
  if (name.empty())
    return "an entry has an empty name";
  if (name.find('\0') != std::string_view::npos)
    return "an entry name contains a NUL byte";
  if (name.front() == '/')
    return "entry '" + std::string{name} + "' has an absolute path";
  if (name.find('\\') != std::string_view::npos)
    return "entry '" + std::string{name} + "' contains a backslash";
  for (auto part : components(name))
    if (part == "..")
      return "entry '" + std::string{name} + "' contains a '..' path component";
  return {};
}

// True if `target`, taken relative to the directory of entry `name`, stays
// inside the archive root.
bool link_stays_inside(std::string_view name, std::string_view target) {
  if (target.empty() || target.front() == '/')
    return false;
  auto parts = components(name);
  if (!parts.empty())
    parts.pop_back(); // the link itself
  for (auto part : components(target)) {
    if (part == "..") {
      if (parts.empty())
        return false;
      parts.pop_back();
    } else {
      parts.push_back(part);
    }
  }
  return true;
}

} // namespace

archive_report check_zip(std::string_view bytes, uint64_t max_unzipped_size) {
  archive_report report;
  // Shorter than an end-of-central-directory record: libzip would open it as
  // an empty archive, but no zip tool writes that.
  if (bytes.size() < 22) {
    report.error = "Could not unzip uploaded file. Please check your file, then try to upload again.";
    return report;
  }
  zip_error_t error;
  zip_error_init(&error);
  auto* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (source == nullptr) {
    zip_error_fini(&error);
    report.error = "Could not unzip uploaded file. Please check your file, then try to upload again.";
    return report;
  }
  std::unique_ptr<zip_t, archive_closer> archive{
    zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error)};
  if (!archive) {
    zip_source_free(source);
    zip_error_fini(&error);
    report.error = "Could not unzip uploaded file. Please check your file, then try to upload again.";
    return report;
  }
  zip_error_fini(&error);
  auto count = zip_get_num_entries(archive.get(), 0);
  report.entries = static_cast<uint64_t>(count < 0 ? 0 : count);
  for (zip_int64_t i = 0; i < count; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive.get(), static_cast<zip_uint64_t>(i), 0, &st) != 0
        || !(st.valid & ZIP_STAT_NAME)) {
      report.error = "Could not read entry " + std::to_string(i) + " of the uploaded file.";
      return report;
    }
    std::string_view name = st.name;
    if (auto problem = check_name(name); !problem.empty()) {
      report.error = "Invalid zip file: " + problem;
      return report;
    }
    if (st.valid & ZIP_STAT_SIZE) {
      report.unzipped_size += st.size;
      if (report.unzipped_size > max_unzipped_size) {
        report.error = "Unzipped size must be smaller than " + std::to_string(max_unzipped_size)
                       + " bytes";
        return report;
      }
    }
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    if (zip_file_get_external_attributes(archive.get(), static_cast<zip_uint64_t>(i), 0, &opsys,
                                         &attributes)
          == 0
        && opsys == ZIP_OPSYS_UNIX && ((attributes >> 16) & S_IFMT) == S_IFLNK) {
      // A symbolic link's target is its content. Read it (bounded) and make
      // sure it resolves inside the archive root.
      if (!(st.valid & ZIP_STAT_SIZE) || st.size > 4096) {
        report.error = "Invalid zip file: symbolic link '" + std::string{name} + "' is too long";
        return report;
      }
      std::string target(static_cast<size_t>(st.size), '\0');
      auto* file = zip_fopen_index(archive.get(), static_cast<zip_uint64_t>(i), 0);
      if (file == nullptr) {
        report.error = "Invalid zip file: cannot read symbolic link '" + std::string{name} + "'";
        return report;
      }
      auto n = zip_fread(file, target.data(), target.size());
      zip_fclose(file);
      if (n != static_cast<zip_int64_t>(target.size())) {
        report.error = "Invalid zip file: cannot read symbolic link '" + std::string{name} + "'";
        return report;
      }
      if (!link_stays_inside(name, target)) {
        report.error = "Invalid zip file: symbolic link '" + std::string{name}
                       + "' points outside the archive";
        return report;
      }
    }
  }
  report.ok = true;
  return report;
}

} // namespace nimbus::storage

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

namespace nimbus::storage {

std::string extract_zip(std::string_view bytes, const std::string& directory,
                        uint64_t max_unzipped_size) {
  auto report = check_zip(bytes, max_unzipped_size);
  if (!report.ok)
    return report.error;
  zip_error_t error;
  zip_error_init(&error);
  auto* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (source == nullptr)
    return "cannot read the archive";
  std::unique_ptr<zip_t, archive_closer> archive{zip_open_from_source(source, ZIP_RDONLY, &error)};
  zip_error_fini(&error);
  if (!archive) {
    zip_source_free(source);
    return "cannot open the archive";
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::create_directory(directory, ec) || ec)
    return "cannot create " + directory;
  ::chmod(directory.c_str(), 0755);
  auto fail = [&](std::string message) {
    fs::remove_all(directory, ec);
    return message;
  };
  auto count = zip_get_num_entries(archive.get(), 0);
  std::vector<char> buffer(1 << 16);
  for (zip_int64_t i = 0; i < count; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive.get(), static_cast<zip_uint64_t>(i), 0, &st) != 0)
      return fail("cannot read entry " + std::to_string(i));
    std::string name = st.name;
    // Directories are created as needed; every component was checked by
    // check_zip (no "..", not absolute), so the path stays inside.
    std::string path = directory;
    for (auto part : components(name))
      path += "/" + std::string{part};
    bool is_dir = !name.empty() && name.back() == '/';
    if (is_dir) {
      fs::create_directories(path, ec);
      ::chmod(path.c_str(), 0755);
      continue;
    }
    auto parent = path.substr(0, path.rfind('/'));
    fs::create_directories(parent, ec);
    for (auto p = fs::path{parent}; p.string().size() > directory.size(); p = p.parent_path())
      ::chmod(p.c_str(), 0755);
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    zip_file_get_external_attributes(archive.get(), static_cast<zip_uint64_t>(i), 0, &opsys,
                                     &attributes);
    mode_t unix_mode = opsys == ZIP_OPSYS_UNIX ? (attributes >> 16) : 0;
    auto* file = zip_fopen_index(archive.get(), static_cast<zip_uint64_t>(i), 0);
    if (file == nullptr)
      return fail("cannot read " + name);
    std::string content;
    zip_int64_t n;
    while ((n = zip_fread(file, buffer.data(), buffer.size())) > 0) {
      content.append(buffer.data(), static_cast<size_t>(n));
      if (content.size() > max_unzipped_size) {
        zip_fclose(file);
        return fail("Unzipped size must be smaller than " + std::to_string(max_unzipped_size)
                    + " bytes");
      }
    }
    zip_fclose(file);
    if (n < 0)
      return fail("cannot read " + name);
    if ((unix_mode & S_IFMT) == S_IFLNK) {
      if (::symlink(content.c_str(), path.c_str()) != 0)
        return fail("cannot create link " + name);
      continue;
    }
    // O_EXCL and O_NOFOLLOW: never write through a link or over an entry that
    // an earlier (duplicate) entry created.
    mode_t mode = (unix_mode & 0111) ? 0755 : 0644;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
      return fail("cannot create " + name + ": " + std::strerror(errno));
    size_t done = 0;
    while (done < content.size()) {
      auto w = ::write(fd, content.data() + done, content.size() - done);
      if (w <= 0) {
        ::close(fd);
        return fail("cannot write " + name);
      }
      done += static_cast<size_t>(w);
    }
    ::fchmod(fd, mode);
    ::close(fd);
  }
  return {};
}

} // namespace nimbus::storage
