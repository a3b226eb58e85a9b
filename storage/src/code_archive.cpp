#include "nimbus/storage/code_archive.hpp"

#include <zip.h>

#include <sys/stat.h>

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
