// The device record: 48 bytes per (user_id, device_id), with the device id
// inside it when shorter than 8 bytes.
//
// A heartbeat on a handle touches only the first 20 bytes (the three
// per-source signal times, the generation/fast word and the flood window;
// a device a detector watches also its answer, kept beside the records by
// DeviceTable, since most engines have no detector), and a keyed lookup
// compares a short id without leaving the record. Records live in chunks
// that never move (DeviceTable), so a lock-free heartbeat can reach its
// record while another thread adds devices.
#ifndef PRESENCE_SRC_CORE_DEVICE_H_
#define PRESENCE_SRC_CORE_DEVICE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#include "absl/strings/string_view.h"
#include "presence/types.h"
#include "src/core/time32.h"

namespace presence::internal {

inline constexpr uint32_t kNone = 0xffffffffu;

inline int SourceIndex(Source s) { return static_cast<int>(s) - 1; }

// Ids are stored as one heap block: a length byte, then the bytes.
class IdBytes {
 public:
  // What the heap grows by for the block of an id of `size` bytes: glibc's
  // chunk (8 bytes of header, 16-byte steps, at least 32).
  static size_t HeapBytes(size_t size) {
    const size_t chunk = (size + 1 + 8 + 15) & ~size_t{15};
    return chunk < 32 ? 32 : chunk;
  }

  IdBytes() = default;
  explicit IdBytes(absl::string_view id) {
    p_ = static_cast<char*>(::operator new(id.size() + 1));
    p_[0] = static_cast<char>(id.size());
    std::memcpy(p_ + 1, id.data(), id.size());
  }
  IdBytes(IdBytes&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  IdBytes& operator=(IdBytes&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  ~IdBytes() { reset(); }
  void reset() {
    ::operator delete(p_);
    p_ = nullptr;
  }
  absl::string_view view() const {
    return p_ ? absl::string_view(p_ + 1, static_cast<unsigned char>(p_[0])) : absl::string_view();
  }

 private:
  char* p_ = nullptr;
};

// A user or device id: ids shorter than 16 bytes live inline (no
// allocation, and no cache miss to read them); longer ones in an IdBytes. The last byte tells which: 0x80 | length inline, 0 on the heap.
class InlineId {
 public:
  InlineId() { buf_[kTag] = static_cast<char>(0x80); }
  explicit InlineId(absl::string_view id) {
    if (id.size() < kTag) {
      std::memcpy(buf_, id.data(), id.size());
      buf_[kTag] = static_cast<char>(0x80 | id.size());
    } else {
      new (buf_) IdBytes(id);
      buf_[kTag] = 0;
    }
  }
  InlineId(InlineId&& o) noexcept {
    std::memcpy(buf_, o.buf_, sizeof(buf_));
    o.buf_[kTag] = static_cast<char>(0x80);
  }
  InlineId& operator=(InlineId&& o) noexcept {
    if (this != &o) {
      reset();
      std::memcpy(buf_, o.buf_, sizeof(buf_));
      o.buf_[kTag] = static_cast<char>(0x80);
    }
    return *this;
  }
  ~InlineId() { reset(); }
  // What an id of `id`'s size takes on the heap beyond the record.
  static size_t HeapBytes(absl::string_view id) {
    return id.size() < kTag ? 0 : IdBytes::HeapBytes(id.size());
  }
  absl::string_view view() const {
    if (inline_()) return absl::string_view(buf_, buf_[kTag] & 0x7f);
    return heap()->view();
  }
  void reset() {
    if (!inline_()) std::launder(reinterpret_cast<IdBytes*>(buf_))->~IdBytes();
    buf_[kTag] = static_cast<char>(0x80);
  }

 private:
  static constexpr size_t kTag = 15;
  bool inline_() const { return buf_[kTag] != 0; }
  const IdBytes* heap() const { return std::launder(reinterpret_cast<const IdBytes*>(buf_)); }
  alignas(8) char buf_[16];
};

// A device id in 8 bytes: ids shorter than 8 bytes live inline, longer ones
// in an IdBytes whose pointer the 8 bytes hold. The first byte tells which:
// odd ((length << 1) | 1, the bytes after it) inline; even (the low byte of
// the pointer, which operator new aligns to at least 2) on the heap.
class ShortId {
 public:
  ShortId() { buf_[0] = 1; }
  explicit ShortId(absl::string_view id) {
    if (id.size() < sizeof(buf_)) {
      buf_[0] = static_cast<char>((id.size() << 1) | 1);
      std::memcpy(buf_ + 1, id.data(), id.size());
    } else {
      new (buf_) IdBytes(id);
    }
  }
  ShortId(ShortId&& o) noexcept {
    std::memcpy(buf_, o.buf_, sizeof(buf_));
    o.buf_[0] = 1;
  }
  ShortId& operator=(ShortId&& o) noexcept {
    if (this != &o) {
      reset();
      std::memcpy(buf_, o.buf_, sizeof(buf_));
      o.buf_[0] = 1;
    }
    return *this;
  }
  ~ShortId() { reset(); }
  // What an id of `id`'s size takes on the heap beyond the record.
  static size_t HeapBytes(absl::string_view id) {
    return id.size() < sizeof(buf_) ? 0 : IdBytes::HeapBytes(id.size());
  }
  absl::string_view view() const {
    if (inline_()) return absl::string_view(buf_ + 1, static_cast<unsigned char>(buf_[0]) >> 1);
    return std::launder(reinterpret_cast<const IdBytes*>(buf_))->view();
  }
  void reset() {
    if (!inline_()) std::launder(reinterpret_cast<IdBytes*>(buf_))->~IdBytes();
    buf_[0] = 1;
  }

 private:
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
                "ShortId reads a pointer's low byte as its first");
  bool inline_() const { return buf_[0] & 1; }
  alignas(8) char buf_[8];
};

// Device phases. SUSPECT (docs/design.md rule 1) is not stored: it is derived from
// the signal times when asked, since others see a SUSPECT device as live.
enum class Phase : uint8_t {
  kFree = 0,   // slot unused
  kLive = 1,   // session open; live while any source is within offline_after
  kGrace = 2,  // abrupt disconnect: still live until `due`
  kDead = 3,   // no longer counts; record kept until `due` (retention)
};

// The fast word: generation in the high 24 bits, fast bits in the low 8.
//   bit 2*i:     source i is live (per the last evaluation)
//   bit 2*i + 1: source i's last signal said ACTIVE
//   bit 6:       open: phase LIVE (and its user not guarded), so a heartbeat
//                that matches the live and active bits may skip the lock.
//   bit 7:       watched: a detector decides its timeout (rule 6); the
//                heartbeat tells it of the beat and reads DeviceTable::Learned.
namespace fast {
inline constexpr uint32_t kOpen = 1u << 6;
inline constexpr uint32_t kWatched = 1u << 7;
inline constexpr uint32_t kBitsMask = 0xffu;
inline constexpr uint32_t LiveBit(int i) { return 1u << (2 * i); }
inline constexpr uint32_t ActiveBit(int i) { return 1u << (2 * i + 1); }
inline constexpr uint32_t kAllLive = LiveBit(0) | LiveBit(1) | LiveBit(2);
inline constexpr uint32_t kGenMask = 0xffffffu;
inline uint32_t Gen(uint32_t word) { return word >> 8; }
inline uint32_t Make(uint32_t gen, uint32_t bits) { return (gen << 8) | (bits & kBitsMask); }
}  // namespace fast

// Device::flags bits.
namespace dflag {
inline constexpr uint8_t kSeen0 = 1u << 0;  // source i has signalled in this session: kSeen0 << i
inline constexpr uint8_t kClosed = 1u << 3;         // the session was disconnected
inline constexpr uint8_t kDiedUnclean = 1u << 4;    // died by timeout or abrupt disconnect
inline constexpr uint8_t kGraceOnline = 1u << 5;    // counted ONLINE when it entered grace
inline constexpr uint8_t kAdaptive = 1u << 6;       // a detector decides its timeout
inline constexpr uint8_t kStoreDirty = 1u << 7;     // changed since last written to the Store
}  // namespace dflag

// Counts one event at `now_ms` in a one-second window kept in `w`: the
// second (low 16 bits of now / 1000) in the high half, the events counted
// in it in the low half. False when the event would pass `limit` (0: no
// limit). Relaxed loads and stores: a rare lost update between two threads
// only makes the limit a little lenient.
inline bool TakeFromWindow(std::atomic<uint32_t>& w, int64_t now_ms, uint32_t limit) {
  if (limit == 0) return true;
  const uint32_t sec = static_cast<uint32_t>(now_ms / 1000) & 0xffffu;
  const uint32_t word = w.load(std::memory_order_relaxed);
  const uint32_t count = (word >> 16) == sec ? (word & 0xffffu) : 0;
  if (count >= limit) return false;
  w.store((sec << 16) | (count + 1), std::memory_order_relaxed);
  return true;
}

struct alignas(8) Device {
  // The heartbeat's fields first (Engine::Beat reads and writes these only,
  // and rule 6's answer for a watched device: DeviceTable::Learned).
  std::atomic<Time32> seen[kSourceCount];  // last signal per source (wrapping ms)
  std::atomic<uint32_t> gen_fast;          // see namespace fast
  // Flood limit: a TakeFromWindow window, written without a lock by the
  // heartbeat (two threads beating the same handle may lose an update). Like
  // seen, reset when the record is reused, never by a heartbeat of its
  // previous device (DeviceTable's grace period).
  std::atomic<uint32_t> rate{0};
  // The heartbeat's fields end here: BeatMany prefetches up to this byte too.
  static constexpr size_t kHotBytes = 20;

  // The rest is read and written under the shard lock only. Indexes are
  // packed beside the one-byte fields: a user index below 2^24 - 1 (Shard
  // refuses a user past it), a device index below 2^26 - 1 (DeviceTable
  // holds at most 2^25 records); the all-ones value of each is kNone.
  static constexpr uint32_t kMaxUsers = (1u << 24) - 1;

  uint32_t user_ : 24;  // through user() and set_user()
  uint32_t flags : 8;   // dflag bits
  uint64_t session = 0;
  ShortId id;

  uint32_t next_ : 26;  // through next() and set_next()
  Phase phase : 2;
  Platform platform : 3;
  Time32 due = 0;  // when the record's timer fires (TimerSweep)

  Device()
      : user_(kUserNone), flags(0), next_(kNextNone), phase(Phase::kFree), platform(Platform::kOther) {}

  // The owning user's index in the shard (kNone: none).
  uint32_t user() const { return user_ == kUserNone ? kNone : user_; }
  void set_user(uint32_t u) { user_ = u == kNone ? kUserNone : u; }
  // The next device of the same user, or the next free record (kNone: none).
  uint32_t next() const { return next_ == kNextNone ? kNone : next_; }
  void set_next(uint32_t n) { next_ = n == kNone ? kNextNone : n; }

  // Counts one signal at `now_ms`; false when it passes `limit` per second.
  bool TakeRate(int64_t now_ms, uint32_t limit) { return TakeFromWindow(rate, now_ms, limit); }

  uint32_t bits() const { return gen_fast.load(std::memory_order_relaxed) & fast::kBitsMask; }
  uint32_t gen() const { return fast::Gen(gen_fast.load(std::memory_order_relaxed)); }
  void set_bits(uint32_t b) { gen_fast.store(fast::Make(gen(), b), std::memory_order_release); }
  // Invalidates every handle to this device.
  void bump_gen(uint32_t bits) {
    uint32_t g = (gen() + 1) & fast::kGenMask;
    if (g == 0) g = 1;
    gen_fast.store(fast::Make(g, bits), std::memory_order_release);
  }
  bool has_seen(int i) const { return flags & (dflag::kSeen0 << i); }

  static constexpr uint32_t kUserNone = (1u << 24) - 1;
  static constexpr uint32_t kNextNone = (1u << 26) - 1;
};

static_assert(sizeof(Device) == 48, "keep the device record at 48 bytes (docs/design.md)");
static_assert(offsetof(Device, rate) + sizeof(Device::rate) == Device::kHotBytes,
              "the heartbeat's fields come first");

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_DEVICE_H_
