#include "src/core/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace presence::internal {

absl::string_view DropReasonName(DropReason r) {
  switch (r) {
    case DropReason::kStaleSession:
      return "stale_session";
    case DropReason::kStaleTimestamp:
      return "stale_timestamp";
    case DropReason::kInvalid:
      return "invalid";
    case DropReason::kClosedHandle:
      return "closed_handle";
    case DropReason::kLimit:
      return "limit";
    case DropReason::kRateLimited:
      return "rate_limited";
  }
  return "unknown";
}

void ShardCounters::Add(const ShardCounters& o) {
  for (int i = 0; i < kSourceCount; ++i) accepted[i] += o.accepted[i];
  for (int i = 0; i < kDropReasonCount; ++i) dropped[i] += o.dropped[i];
  for (int i = 0; i < kCauseCount; ++i) transitions[i] += o.transitions[i];
  false_offlines += o.false_offlines;
  probes_sent += o.probes_sent;
  probes_answered += o.probes_answered;
  probes_late += o.probes_late;
  probes_given_up += o.probes_given_up;
  probes_throttled += o.probes_throttled;
}

void LatencyHistogram::Observe(int64_t ms) {
  if (ms < 0) ms = 0;
  size_t i = 0;
  while (i < kBoundsMs.size() && ms > kBoundsMs[i]) ++i;
  ++buckets_[i];
  ++count_;
  sum_ += ms;
}

void LatencyHistogram::Render(std::string* out, absl::string_view name,
                              absl::string_view help) const {
  MetricHeader(out, name, "histogram", help);
  RenderSamples(out, name, "");
}

void LatencyHistogram::RenderSamples(std::string* out, absl::string_view name,
                                     absl::string_view labels) const {
  const std::string prefix = labels.empty() ? "" : absl::StrCat(labels, ",");
  uint64_t cumulative = 0;
  const std::string bucket = absl::StrCat(name, "_bucket");
  for (size_t i = 0; i < kBoundsMs.size(); ++i) {
    cumulative += buckets_[i];
    MetricSample(out, bucket, absl::StrCat(prefix, "le=\"", kBoundsMs[i], "\""), cumulative);
  }
  cumulative += buckets_.back();
  MetricSample(out, bucket, absl::StrCat(prefix, "le=\"+Inf\""), cumulative);
  MetricSample(out, absl::StrCat(name, "_sum"), labels, sum_);
  MetricSample(out, absl::StrCat(name, "_count"), labels, count_);
}

void MetricHeader(std::string* out, absl::string_view name, absl::string_view type,
                  absl::string_view help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void MetricSample(std::string* out, absl::string_view name, absl::string_view labels,
                  double value) {
  if (labels.empty()) {
    absl::StrAppend(out, name, " ", absl::StrFormat("%.17g", value), "\n");
  } else {
    absl::StrAppend(out, name, "{", labels, "} ", absl::StrFormat("%.17g", value), "\n");
  }
}

void Metric(std::string* out, absl::string_view name, absl::string_view type,
            absl::string_view help, double value) {
  MetricHeader(out, name, type, help);
  MetricSample(out, name, "", value);
}

}  // namespace presence::internal
