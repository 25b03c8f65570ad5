#include "src/store/log_format.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace presence::internal {

namespace {

void PutFixed(char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t GetFixed(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

// XXH3-64 of the frame after the checksum field: the rest of the header and
// the payload, which lie next to each other.
uint64_t Checksum(const char* frame, size_t payload_bytes) {
  return XXH3_64bits(frame + 8, kFrameHeaderBytes - 8 + payload_bytes);
}

std::optional<uint64_t> ParseNumbered(absl::string_view name, absl::string_view prefix,
                                      absl::string_view suffix) {
  if (!absl::StartsWith(name, prefix) || !absl::EndsWith(name, suffix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  name.remove_suffix(suffix.size());
  if (name.empty() || name.size() > 19) return std::nullopt;
  for (char c : name) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  uint64_t n = 0;
  if (!absl::SimpleAtoi(name, &n)) return std::nullopt;
  return n;
}

}  // namespace

void AppendFrame(FileKind kind, uint64_t sequence, absl::string_view payload, std::string* out,
                 uint16_t version) {
  const size_t start = out->size();
  out->resize(start + kFrameHeaderBytes);
  char* header = out->data() + start;
  PutFixed(header + 8, payload.size(), 4);
  PutFixed(header + 12, version, 2);
  header[14] = static_cast<char>(kind);
  header[15] = 0;
  PutFixed(header + 16, sequence, 8);
  out->append(payload.data(), payload.size());
  PutFixed(out->data() + start, Checksum(out->data() + start, payload.size()), 8);
}

FrameReader::Result FrameReader::Next(absl::string_view* payload, uint64_t* sequence) {
  const size_t left = data_.size() - pos_;
  if (left == 0) return Result::kEnd;
  const char* p = data_.data() + pos_;
  if (left < kFrameHeaderBytes) {
    problem_ = absl::StrCat("a frame header cut short (", left, " of ", kFrameHeaderBytes,
                            " bytes) at offset ", pos_);
    return Result::kTorn;
  }
  const uint64_t length = GetFixed(p + 8, 4);
  if (length > kMaxFramePayload || length > left - kFrameHeaderBytes) {
    // Past the end of the file: a write that never finished (or a length so
    // damaged that it points past the end, which looks the same).
    problem_ = absl::StrCat("a frame of ", length, " bytes at offset ", pos_, " runs past the end (",
                            left - kFrameHeaderBytes, " bytes left)");
    return Result::kTorn;
  }
  const absl::string_view body(p + kFrameHeaderBytes, length);
  if (GetFixed(p, 8) != Checksum(p, length)) {
    problem_ = absl::StrCat("checksum mismatch in the frame at offset ", pos_);
    return Result::kCorrupt;
  }
  const uint16_t version = static_cast<uint16_t>(GetFixed(p + 12, 2));
  version_ = version;
  if (version > kFormatVersion) return Result::kNewer;
  if (version == 0 || p[15] != 0) {
    problem_ = absl::StrCat("bad header (version ", version, ") in the frame at offset ", pos_);
    return Result::kCorrupt;
  }
  if (static_cast<uint8_t>(p[14]) != static_cast<uint8_t>(kind_)) {
    problem_ = absl::StrCat("a frame of file kind ", static_cast<int>(static_cast<uint8_t>(p[14])),
                            " at offset ", pos_, ", expected ", static_cast<int>(kind_));
    return Result::kCorrupt;
  }
  *sequence = GetFixed(p + 16, 8);
  *payload = body;
  pos_ += kFrameHeaderBytes + length;
  return Result::kFrame;
}

std::string SegmentFileName(uint64_t number) { return absl::StrFormat("segment-%06u.log", number); }
std::string SnapshotFileName(uint64_t number) {
  return absl::StrFormat("snapshot-%06u.snap", number);
}
std::optional<uint64_t> ParseSegmentFileName(absl::string_view name) {
  return ParseNumbered(name, "segment-", ".log");
}
std::optional<uint64_t> ParseSnapshotFileName(absl::string_view name) {
  return ParseNumbered(name, "snapshot-", ".snap");
}

}  // namespace presence::internal
