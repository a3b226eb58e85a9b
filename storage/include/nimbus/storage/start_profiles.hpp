#pragma once

/// Start profiles: which chunks of a lazily loaded image its starts read
/// first, kept across worker restarts, so that the next mount of the image
/// loads them ahead, in parallel, while the image is being mounted and the
/// sandbox made (ARCHITECTURE.md §5).
///
/// A start of a function reads its file system's metadata and its runtime's
/// binary and libraries, the same chunks each time, one after the other as
/// the loader finds it needs them; on a cold node each is a disk or network
/// round trip. What an invocation then reads may differ from start to start
/// (the event decides), so a profile keeps the last two recordings and
/// offers only the chunks both read: one start teaches nothing, two that
/// agree do.
///
/// One file per image, `<dir>/<key>`, written to a temporary name and
/// renamed (not synced: a lost or torn profile only costs the read-ahead):
///
///   nimbus start profile 1
///   <chunk indexes of the latest start, in the order first read>
///   <chunk indexes of the start before>
///
/// Indexes are decimal, separated by single spaces, at most
/// lazy_image_server::first_reads_max per line; a file that does not parse
/// is ignored (and replaced by the next recording). Keys are image keys of
/// the image library (`<account>-<image name>`, one path component; image
/// names are content addresses, so indexes stay valid for a key).

#include <cstdint>
#include <string>
#include <vector>

namespace nimbus::storage {

/// The start profiles under one directory; thread-safe for different keys.
class start_profiles {
public:
  /// Keeps profiles under `dir`, created when missing (failures show as
  /// profiles that are never found).
  explicit start_profiles(std::string dir);

  /// The chunks to load ahead when mounting `key`: those both recorded
  /// starts read, in the order the latest read them, below `chunk_count`.
  /// Empty without two recordings.
  std::vector<uint32_t> ahead(const std::string& key, uint64_t chunk_count) const;

  /// Records what a start of `key` read first (the image's first reads
  /// while mounted); the recording before it is kept, older ones dropped.
  /// An empty recording changes nothing.
  void record(const std::string& key, const std::vector<uint32_t>& first_reads);

private:
  struct recordings {
    std::vector<uint32_t> latest;
    std::vector<uint32_t> previous;
  };
  bool load(const std::string& key, recordings& out) const;
  std::string path(const std::string& key) const;

  std::string dir_;
};

} // namespace nimbus::storage
