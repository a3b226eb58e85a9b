#pragma once

// Deterministic pseudo-random bytes for tests: the same seed gives the same
// bytes on every machine (std::mt19937_64 is fully specified).

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

namespace nimbus::test {

inline std::string noise(uint64_t seed, size_t n) {
  std::mt19937_64 gen{seed};
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    auto v = gen();
    for (size_t j = 0; j < 8 && i + j < n; ++j)
      out[i + j] = static_cast<char>(v >> (8 * j));
  }
  return out;
}

} // namespace nimbus::test
