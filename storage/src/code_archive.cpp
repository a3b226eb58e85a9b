#include "nimbus/storage/code_archive.hpp"

#include "nimbus/storage/image_builder.hpp"
#include "nimbus/storage/staging_tree.hpp"

#include <zip.h>

#include <sys/stat.h>

#include <algorithm>
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

namespace {

// One zip entry, as it will be applied to the tree.
struct zip_item {
  enum kind_t { directory, file, symlink } kind;
  std::string rel;  // normalised path
  std::string name; // as stored in the archive (for link checks)
  zip_uint64_t index;
  uint32_t mode;
};

std::string unpack_opened(zip_t* archive, staging_tree& tree) {
  auto count = zip_get_num_entries(archive, 0);
  std::vector<zip_item> items;
  items.reserve(static_cast<size_t>(count < 0 ? 0 : count));
  for (zip_int64_t i = 0; i < count; ++i) {
    auto index = static_cast<zip_uint64_t>(i);
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME))
      return "Could not read entry " + std::to_string(i) + " of the uploaded file.";
    std::string name = st.name;
    if (auto problem = check_name(name); !problem.empty())
      return "Invalid zip file: " + problem;
    zip_item item{zip_item::file, {}, name, index, 0644};
    if (!normalise_entry_path(name, item.rel))
      return "Invalid zip file: entry '" + name + "' is too long or too deeply nested";
    if (item.rel.empty())
      continue; // "./" names the root, which exists
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    if (zip_file_get_external_attributes(archive, index, 0, &opsys, &attributes) == 0
        && opsys == ZIP_OPSYS_UNIX)
      item.mode = attributes >> 16;
    auto type = item.mode & S_IFMT;
    if (name.back() == '/' || type == S_IFDIR)
      item.kind = zip_item::directory;
    else if (type == S_IFLNK)
      item.kind = zip_item::symlink;
    else if (type != 0 && type != S_IFREG)
      continue; // devices, fifos and sockets are dropped
    items.push_back(std::move(item));
  }
  // Sorted order makes the result independent of the order in the archive;
  // with unique names it depends only on the set of entries.
  std::sort(items.begin(), items.end(),
            [](const zip_item& a, const zip_item& b) { return a.rel < b.rel; });
  for (size_t i = 1; i < items.size(); ++i)
    if (items[i].rel == items[i - 1].rel
        && (items[i].kind != zip_item::directory || items[i - 1].kind != zip_item::directory))
      return "Invalid zip file: entry '" + items[i].rel + "' appears more than once";
  // Directories and files first, links last: no entry is written through a
  // link of the archive (the tree would contain it anyway).
  for (const auto& item : items) {
    if (item.kind == zip_item::directory) {
      if (auto problem = tree.add_directory(item.rel); !problem.empty())
        return problem;
      continue;
    }
    if (item.kind != zip_item::file)
      continue;
    auto* file = zip_fopen_index(archive, item.index, 0);
    if (file == nullptr)
      return "cannot read entry '" + item.rel + "' of the archive";
    auto problem = tree.add_file(item.rel, item.mode, [file](char* buffer, size_t capacity) {
      return static_cast<int64_t>(zip_fread(file, buffer, capacity));
    });
    zip_fclose(file);
    if (!problem.empty())
      return problem;
  }
  for (const auto& item : items) {
    if (item.kind != zip_item::symlink)
      continue;
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive, item.index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)
        || st.size > 4096)
      return "Invalid zip file: symbolic link '" + item.rel + "' is too long";
    std::string target(static_cast<size_t>(st.size), '\0');
    auto* file = zip_fopen_index(archive, item.index, 0);
    if (file == nullptr)
      return "Invalid zip file: cannot read symbolic link '" + item.rel + "'";
    auto n = zip_fread(file, target.data(), target.size());
    zip_fclose(file);
    if (n != static_cast<zip_int64_t>(target.size()))
      return "Invalid zip file: cannot read symbolic link '" + item.rel + "'";
    if (!link_stays_inside(item.name, target))
      return "Invalid zip file: symbolic link '" + item.rel + "' points outside the archive";
    if (auto problem = tree.add_symlink(item.rel, target); !problem.empty())
      return problem;
  }
  return {};
}

} // namespace

std::string unpack_zip(std::string_view bytes, staging_tree& tree) {
  if (bytes.size() < 22)
    return "Could not unzip uploaded file. Please check your file, then try to upload again.";
  zip_error_t error;
  zip_error_init(&error);
  auto* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (source == nullptr) {
    zip_error_fini(&error);
    return "cannot read the archive";
  }
  std::unique_ptr<zip_t, archive_closer> archive{
    zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error)};
  zip_error_fini(&error);
  if (!archive) {
    zip_source_free(source);
    return "Could not unzip uploaded file. Please check your file, then try to upload again.";
  }
  return unpack_opened(archive.get(), tree);
}

std::string unpack_zip_file(const std::string& zip_path, staging_tree& tree) {
  int code = 0;
  std::unique_ptr<zip_t, archive_closer> archive{
    zip_open(zip_path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code)};
  if (!archive)
    return "Could not unzip uploaded file. Please check your file, then try to upload again.";
  return unpack_opened(archive.get(), tree);
}

std::string extract_zip(std::string_view bytes, const std::string& directory,
                        uint64_t max_unzipped_size) {
  auto report = check_zip(bytes, max_unzipped_size);
  if (!report.ok)
    return report.error;
  std::string error;
  // check_zip bounded the declared size; the tree bounds the actual size.
  auto tree = staging_tree::create(directory, max_unzipped_size, flatten_limits{}.max_entries,
                                   on_conflict::refuse, error);
  if (!tree)
    return error;
  auto problem = unpack_zip(bytes, *tree);
  if (!problem.empty()) {
    tree->destroy();
    if (problem.find("exceeds the unpacked size limit") != std::string::npos)
      return "Unzipped size must be smaller than " + std::to_string(max_unzipped_size) + " bytes";
    return problem;
  }
  return {};
}

} // namespace nimbus::storage
