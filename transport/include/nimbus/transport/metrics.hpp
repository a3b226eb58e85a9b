#pragma once

/// API request metrics in the Prometheus text exposition format: requests by
/// operation and status, and a latency histogram by operation. Safe to use
/// from any thread.

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nimbus::transport {

/// Counters and histograms for the API.
class api_metrics {
public:
  /// Records one answered request.
  void record(std::string_view operation, int status, std::chrono::microseconds latency);

  /// Renders all metrics as Prometheus text (version 0.0.4).
  std::string render() const;

  /// The histogram bucket bounds, in seconds.
  static const std::vector<double>& buckets();

private:
  struct histogram {
    std::vector<uint64_t> counts; // one per bucket, non-cumulative
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, histogram> latency_;
};

} // namespace nimbus::transport
