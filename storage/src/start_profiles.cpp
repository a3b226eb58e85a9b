#include "nimbus/storage/start_profiles.hpp"

#include "nimbus/storage/lazy_image.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace nimbus::storage {

namespace {

constexpr const char* header = "nimbus start profile 1";
// A profile is two lines of at most first_reads_max indexes of at most 10
// digits; anything larger is not ours.
constexpr std::streamsize profile_max_bytes = 1024;

bool valid_key(const std::string& key) {
  return !key.empty() && key.size() <= 255 && key[0] != '.' && key.find('/') == std::string::npos
         && key.find('\0') == std::string::npos;
}

// Parses one line of indexes; false when it is not a well-formed line.
bool parse_line(const std::string& line, std::vector<uint32_t>& out) {
  out.clear();
  if (line.empty())
    return true;
  std::istringstream in(line);
  std::string word;
  while (std::getline(in, word, ' ')) {
    if (word.empty() || word.size() > 10 || out.size() >= lazy_image_server::first_reads_max
        || !std::all_of(word.begin(), word.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    auto value = std::stoull(word);
    if (value > UINT32_MAX)
      return false;
    out.push_back(static_cast<uint32_t>(value));
  }
  return true;
}

std::string format_line(const std::vector<uint32_t>& indexes) {
  std::string out;
  for (size_t i = 0; i < indexes.size() && i < lazy_image_server::first_reads_max; ++i)
    out += (i == 0 ? "" : " ") + std::to_string(indexes[i]);
  return out;
}

} // namespace

start_profiles::start_profiles(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
}

std::string start_profiles::path(const std::string& key) const {
  return dir_ + "/" + key;
}

bool start_profiles::load(const std::string& key, recordings& out) const {
  out = {};
  if (!valid_key(key))
    return false;
  std::ifstream in(path(key), std::ios::binary);
  if (!in)
    return false;
  std::string text(static_cast<size_t>(profile_max_bytes) + 1, '\0');
  in.read(text.data(), profile_max_bytes + 1);
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(profile_max_bytes))
    return false;
  std::istringstream lines(text);
  std::string first, latest, previous;
  if (!std::getline(lines, first) || first != header || !std::getline(lines, latest))
    return false;
  std::getline(lines, previous);
  if (parse_line(latest, out.latest) && parse_line(previous, out.previous))
    return true;
  out = {};
  return false;
}

std::vector<uint32_t> start_profiles::ahead(const std::string& key, uint64_t chunk_count) const {
  recordings r;
  if (!load(key, r))
    return {};
  std::vector<uint32_t> out;
  for (auto index : r.latest)
    if (index < chunk_count
        && std::find(r.previous.begin(), r.previous.end(), index) != r.previous.end()
        && std::find(out.begin(), out.end(), index) == out.end())
      out.push_back(index);
  return out;
}

void start_profiles::record(const std::string& key, const std::vector<uint32_t>& first_reads) {
  if (first_reads.empty() || !valid_key(key))
    return;
  recordings old;
  load(key, old);
  auto text =
      std::string(header) + "\n" + format_line(first_reads) + "\n" + format_line(old.latest) + "\n";
  // The temporary name is per key (the image library never records one key
  // from two threads at once) and starts with '.', which no key does.
  auto temp = dir_ + "/." + key + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) {
      out.close();
      ::unlink(temp.c_str());
      return;
    }
  }
  if (std::rename(temp.c_str(), path(key).c_str()) != 0)
    ::unlink(temp.c_str());
}

} // namespace nimbus::storage
