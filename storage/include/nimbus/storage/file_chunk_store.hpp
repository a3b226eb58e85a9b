#pragma once

/// The legacy layout of the embedded chunk store (the code store now uses
/// pack_chunk_store, which imports these files at open): one file per sealed
/// chunk under the data directory, `<dir>/<first 2 hex digits>/<64 hex digits>`.
///
/// put() writes a temporary file and renames it into place without an fsync
/// and remembers it; sync() fsyncs every remembered file and then each
/// directory they were renamed in, once. An ingest of N chunks therefore
/// costs N file fsyncs and at most N directory fsyncs in one batch, before
/// its manifest is written (CS-2: a manifest never references a chunk that
/// is not durable). Concurrent sync() calls are serialized, so one that
/// returns has covered every put() that returned before it started, also
/// those another thread's sync() had already taken.
///
/// Subdirectories are created on demand (and made durable by the next sync()).
/// open() removes temporary leftovers of interrupted puts and syncs the file
/// system once, so that chunks written by a process that died before its
/// sync() are durable before anybody relies on finding them.

#include "nimbus/storage/chunk.hpp"

#include <memory>
#include <string>

namespace nimbus::storage {

/// Opens (creating if needed) a file chunk store in `dir`.
std::shared_ptr<chunk_store> open_file_chunk_store(const std::string& dir, std::string& error);

} // namespace nimbus::storage
