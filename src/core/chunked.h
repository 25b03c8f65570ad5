// A growable array in fixed chunks: appending never moves an element, and
// never reserves more than one chunk beyond what is used, where a vector
// that doubles holds up to twice what it uses (and, while it grows, both its
// old and its new buffer).
#ifndef PRESENCE_SRC_CORE_CHUNKED_H_
#define PRESENCE_SRC_CORE_CHUNKED_H_

#include <cstdint>
#include <memory>
#include <vector>

namespace presence::internal {

template <typename T, uint32_t kChunkBits>
class Chunked {
 public:
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;

  T& operator[](uint32_t i) { return chunks_[i >> kChunkBits][i & (kChunkSize - 1)]; }
  const T& operator[](uint32_t i) const { return chunks_[i >> kChunkBits][i & (kChunkSize - 1)]; }
  uint32_t size() const { return size_; }

  // Appends a default-constructed element.
  T& emplace_back() {
    if ((size_ & (kChunkSize - 1)) == 0 && (size_ >> kChunkBits) == chunks_.size()) {
      chunks_.push_back(std::make_unique<T[]>(kChunkSize));
    }
    return (*this)[size_++];
  }
  // Appends default-constructed elements until it holds at least `n`.
  void GrowTo(uint32_t n) {
    while (size_ < n) emplace_back();
  }

 private:
  std::vector<std::unique_ptr<T[]>> chunks_;
  uint32_t size_ = 0;
};

// After a burst (a mass connect, a mass expiry) a scratch vector holds a
// buffer sized to it until the next burst: lets it go once the vector uses
// under a quarter of it, keeping small buffers for the common case.
template <typename V>
void ReleaseBurst(V& v) {
  constexpr size_t kKeep = 256;
  if (v.capacity() > kKeep && v.capacity() > 4 * v.size()) V(v.begin(), v.end()).swap(v);
}

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_CHUNKED_H_
