// The overload ladder (docs/design.md section 7; docs/operations.md,
// "Overload"): from each tick's verdict (overloaded or not) it decides how
// many of the documented steps apply, going one step down after
// `enter_ticks` overloaded ticks in a row and one step back after
// `exit_ticks` healthy ticks in a row.
#ifndef PRESENCE_SRC_CORE_OVERLOAD_H_
#define PRESENCE_SRC_CORE_OVERLOAD_H_

#include <array>
#include <cstdint>

namespace presence::internal {

class OverloadLadder {
 public:
  // The steps, in order (presence::Engine::OverloadLevel's values).
  static constexpr int kSteps = 3;

  OverloadLadder(int enter_ticks, int exit_ticks) : enter_(enter_ticks), exit_(exit_ticks) {}

  // One tick's verdict; returns the level after it.
  int Observe(bool overloaded) {
    if (overloaded) {
      calm_ = 0;
      if (++over_ >= enter_ && level_ < kSteps) {
        ++entered_[level_++];
        over_ = 0;
      }
    } else {
      over_ = 0;
      if (level_ > 0 && ++calm_ >= exit_) {
        ++left_[--level_];
        calm_ = 0;
      }
    }
    return level_;
  }

  int level() const { return level_; }
  // How often step i (0-based) was entered and left.
  uint64_t entered(int i) const { return entered_[i]; }
  uint64_t left(int i) const { return left_[i]; }

 private:
  const int enter_;
  const int exit_;
  int level_ = 0;
  int over_ = 0;
  int calm_ = 0;
  std::array<uint64_t, kSteps> entered_{};
  std::array<uint64_t, kSteps> left_{};
};

}  // namespace presence::internal

#endif  // PRESENCE_SRC_CORE_OVERLOAD_H_
