// The file store's on-disk framing and file names (see the FORMAT section of
// include/presence/file_store.h for the whole picture).
//
// Every segment and snapshot file is a sequence of frames, nothing else:
//
//   offset  size  field
//        0     8  checksum: XXH3-64 of bytes [8, 24 + length), little-endian
//        8     4  length of the payload in bytes, little-endian
//       12     2  format version (kFormatVersion), little-endian
//       14     1  file kind: 1 segment (payload: storage.v1 LogRecord),
//                 2 snapshot (payload: SnapshotRecord)
//       15     1  reserved, 0
//       16     8  sequence: in a segment, the log sequence number (one more
//                 than the previous frame's, across segments); in a snapshot,
//                 the frame's index in the file
//       24     n  payload: one protobuf message of proto/presence/v1/storage.proto
//
// The checksum covers the header after it, so a flipped bit in the length,
// the version or the sequence is caught like one in the payload.
#ifndef PRESENCE_SRC_STORE_LOG_FORMAT_H_
#define PRESENCE_SRC_STORE_LOG_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace presence::internal {

// The format this build writes, and the newest it reads. Bump it for any
// change that an older build could not carry through unharmed.
inline constexpr uint16_t kFormatVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 24;
// A frame longer than this is taken for a corrupt length.
inline constexpr uint32_t kMaxFramePayload = 1u << 30;

enum class FileKind : uint8_t { kSegment = 1, kSnapshot = 2 };

// Appends one frame to *out.
void AppendFrame(FileKind kind, uint64_t sequence, absl::string_view payload, std::string* out,
                 uint16_t version = kFormatVersion);

// Reads frames from a whole file held in memory.
class FrameReader {
 public:
  enum class Result {
    kFrame,    // *payload and *sequence are set
    kEnd,      // the file ends cleanly here
    kTorn,     // a frame cut short by the end of the file (a torn write)
    kCorrupt,  // a checksum mismatch, a bad header, or the wrong file kind
    kNewer,    // a well-formed frame of a newer format version (version())
  };

  FrameReader(absl::string_view data, FileKind kind) : data_(data), kind_(kind) {}

  Result Next(absl::string_view* payload, uint64_t* sequence);
  // Where the last frame returned ends: the length of the good prefix.
  size_t good_bytes() const { return pos_; }
  uint16_t version() const { return version_; }
  // What was wrong, for kTorn and kCorrupt.
  const std::string& problem() const { return problem_; }

 private:
  absl::string_view data_;
  FileKind kind_;
  size_t pos_ = 0;
  uint16_t version_ = 0;
  std::string problem_;
};

// File names in the data folder. Numbers are printed with at least 6 digits
// and parsed with any number.
std::string SegmentFileName(uint64_t number);   // "segment-000001.log"
std::string SnapshotFileName(uint64_t number);  // "snapshot-000001.snap"
std::optional<uint64_t> ParseSegmentFileName(absl::string_view name);
std::optional<uint64_t> ParseSnapshotFileName(absl::string_view name);
inline constexpr absl::string_view kTempSuffix = ".tmp";
inline constexpr absl::string_view kDroppedSuffix = ".dropped";
inline constexpr absl::string_view kLockFileName = "LOCK";

}  // namespace presence::internal

#endif  // PRESENCE_SRC_STORE_LOG_FORMAT_H_
