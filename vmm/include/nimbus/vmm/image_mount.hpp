#pragma once

/// Mounting read-only erofs code images (ARCHITECTURE.md §5).
///
/// Three ways, tried in this order by mount_erofs():
///   file       mount(2) with the image file itself as the source (erofs
///              file-backed mounts, Linux >= 6.12), reading the file with
///              direct I/O (`directio`) where the kernel can (>= 6.13);
///   loop       a read-only loop device over the file (LOOP_CONFIGURE with
///              LO_FLAGS_AUTOCLEAR, so the device frees itself on unmount);
///   extracted  `fsck.erofs --extract` into the target, then a read-only bind
///              mount of the tree over itself (every byte is read up front).
/// Every mount is read-only, nosuid and nodev.

#include <string>

namespace nimbus::vmm {

/// How an image was mounted.
enum class mount_mode { file, loop, extracted };

/// "file", "loop" or "extracted".
const char* to_string(mount_mode mode);

/// Mounts `image_file` read-only at `target` (an existing empty directory),
/// trying each mode in turn; `used` says which one worked. Returns an error
/// text naming every failed attempt, empty on success.
std::string mount_erofs(const std::string& image_file, const std::string& target, mount_mode& used);

/// Mounts with exactly `mode` (tests, and callers that know what works here).
std::string mount_erofs_with(const std::string& image_file, const std::string& target,
                             mount_mode mode);

/// Undoes mount_erofs: detaches the mount (MNT_DETACH, so users still inside
/// keep working until they leave; a loop device clears itself then) and, for
/// an extracted tree, removes its files. The empty target directory stays.
std::string unmount_erofs(const std::string& target, mount_mode used);

} // namespace nimbus::vmm
