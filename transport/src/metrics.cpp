#include "nimbus/transport/metrics.hpp"

#include <cstdio>

namespace nimbus::transport {

const std::vector<double>& api_metrics::buckets() {
  static const std::vector<double> b
    = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return b;
}

void api_metrics::record(std::string_view operation, int status,
                         std::chrono::microseconds latency) {
  auto seconds = static_cast<double>(latency.count()) / 1e6;
  std::lock_guard<std::mutex> guard{mutex_};
  ++requests_[{std::string{operation}, status}];
  auto& h = latency_[std::string{operation}];
  if (h.counts.empty())
    h.counts.resize(buckets().size(), 0);
  for (size_t i = 0; i < buckets().size(); ++i)
    if (seconds <= buckets()[i]) {
      ++h.counts[i];
      break;
    }
  ++h.count;
  h.sum += seconds;
}

std::string api_metrics::render() const {
  std::lock_guard<std::mutex> guard{mutex_};
  std::string out;
  char buf[64];
  out += "# HELP nimbus_api_requests_total API requests answered, by operation and status.\n";
  out += "# TYPE nimbus_api_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += "nimbus_api_requests_total{operation=\"" + key.first + "\",status=\""
           + std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
  out += "# HELP nimbus_api_request_duration_seconds API request latency, by operation.\n";
  out += "# TYPE nimbus_api_request_duration_seconds histogram\n";
  for (const auto& [op, h] : latency_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < buckets().size(); ++i) {
      cumulative += h.counts[i];
      std::snprintf(buf, sizeof buf, "%g", buckets()[i]);
      out += "nimbus_api_request_duration_seconds_bucket{operation=\"" + op + "\",le=\"" + buf
             + "\"} " + std::to_string(cumulative) + "\n";
    }
    out += "nimbus_api_request_duration_seconds_bucket{operation=\"" + op + "\",le=\"+Inf\"} "
           + std::to_string(h.count) + "\n";
    std::snprintf(buf, sizeof buf, "%.6f", h.sum);
    out += "nimbus_api_request_duration_seconds_sum{operation=\"" + op + "\"} " + buf + "\n";
    out += "nimbus_api_request_duration_seconds_count{operation=\"" + op + "\"} "
           + std::to_string(h.count) + "\n";
  }
  return out;
}

} // namespace nimbus::transport
