#pragma once

/// Flattening of container image archives into one erofs image.
///
/// Accepted archives (a tar, possibly compressed; libarchive detects it):
/// - `docker save` output: manifest.json (`[{"Config": ..., "Layers": [...]}]`,
///   exactly one image), legacy `<id>/layer.tar` members (which may be
///   symlinks to another image's layer.tar) or `blobs/sha256/<hex>` members
///   (docker 25+);
/// - OCI image layouts: oci-layout, index.json, blobs/sha256/<hex>; the index
///   names one manifest (the only one, or the one for linux/amd64; nested
///   indexes are followed), the manifest a config and the layers.
///
/// Every digest the format names is checked: OCI descriptors (digest and
/// size of index, manifest, config and layer blobs), `blobs/sha256/<hex>`
/// member names, and the config's rootfs.diff_ids against the SHA-256 of each
/// uncompressed layer. Layers (tar, gzip or zstd) are streamed from disk, one
/// pass each, through a staging_tree: whiteouts (`.wh.<name>`) remove lower
/// entries, `.wh..wh..opq` clears a directory's lower content; devices, fifos
/// and sockets are dropped. Nothing is loaded whole into memory but the small
/// JSON documents (at most 16 MiB each).

#include "nimbus/storage/image_builder.hpp"

#include <string>
#include <vector>

namespace nimbus::storage {

/// The parts of an image's config that decide how its process starts.
struct container_config {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  /// "NAME=value" entries.
  std::vector<std::string> env;
  std::string working_dir;
};

/// What flattening learned about the image besides its files.
struct container_image {
  container_config config;
  /// "sha256:<hex>" of the config blob (docker's image id).
  std::string digest;
};

/// Flattens the container archive at `archive_path` into the erofs image
/// `image_path`, staging under `work_dir` (removed afterwards), and fills
/// `out`. Returns an error text naming the file or layer and the problem,
/// empty on success.
std::string flatten_container_archive(const std::string& archive_path, const std::string& work_dir,
                                      const std::string& image_path, const flatten_limits& limits,
                                      container_image& out);

} // namespace nimbus::storage
