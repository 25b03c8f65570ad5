// File: capi/c_common.h
//
// What every unit of the C ABI shares: turning an absl::Status into a
// status code and a message (ToC), keeping C++ exceptions on this side of
// the boundary (Guard), reading bytes, lists and enums from C (ToView,
// ToViews, ToEnum), versioned option structs (InitOptions), the reference
// counts of clocks and engines, and the two shapes of "ask the engine about
// one user" (AskAboutUser, ListAboutUser). The entry points live by concern:
// c_clock.cc, c_engine.cc, c_history.cc, c_fanout.cc; the helpers that are
// not templates, and the version and memory entry points, in c_common.cc.
// Private: not installed, and nothing here is exported from libpresence.so.
#ifndef PRESENCE_CAPI_C_COMMON_H_
#define PRESENCE_CAPI_C_COMMON_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "capi/c_internal.h"
#include "presence/c.h"
#include "presence/engine.h"
#include "presence/types.h"

namespace presence::capi {

// Set while this thread runs a callback of the library, so that a tick from
// inside one answers an error instead of deadlocking on the tick lock. (Not
// error state: convention 4 holds.)
inline thread_local int tls_callback_depth = 0;

// ---- Status and message -----------------------------------------------------------

// A malloc'd, NUL-terminated copy of `len` bytes, or null when out of memory.
char* CopyString(const char* data, size_t len) noexcept;

inline int Ok(char** errmsg) noexcept {
  if (errmsg != nullptr) *errmsg = nullptr;
  return PRESENCE_OK;
}

int Fail(char** errmsg, int code, absl::string_view message) noexcept;

// The name of a presence_status_t (of an absl::StatusCode: the same
// numbers), or "UNKNOWN" for a number that is none.
const char* CodeName(int code) noexcept;

// The one place where an absl::Status becomes a C status: the code (the
// presence_status_t values are absl's own numbers, every one of them: Status
// holds no other) and a malloc'd copy of the message.
inline int ToC(const absl::Status& st, char** errmsg) noexcept {
  if (ABSL_PREDICT_TRUE(st.ok())) return Ok(errmsg);
  const int code = static_cast<int>(st.code());
  const absl::string_view msg = st.message();
  return Fail(errmsg, code, msg.empty() ? absl::string_view(CodeName(code)) : msg);
}

// Adds a batch call's outcome to a running total.
void AddBatch(presence::BatchResult r, presence::BatchResult* total);

// A batch's outcome: the status of its first failure, and the counts in
// *out (when not null).
int ToC(const presence::BatchResult& total, presence_batch_result_t* out, char** errmsg);

// Called from a catch (...) block: names what was thrown.
int CaughtException(char** errmsg) noexcept;

// Runs an entry point's body; no exception gets past it (convention 13).
template <typename F>
inline int Guard(char** errmsg, F&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return CaughtException(errmsg);
  }
}

int Invalid(char** errmsg, absl::string_view message) noexcept;

int NullArgument(char** errmsg, const char* what) noexcept;

// ---- Conversions ----------------------------------------------------------------------

// Bytes from C: a NULL pointer goes only with length 0, and no length can
// be past PTRDIFF_MAX (a string_view cannot even hold it). Other lengths are
// the engine's to judge: it checks them, and counts what it rejects, before
// it reads a byte.
absl::Status ToView(const char* data, size_t len, absl::string_view what, absl::string_view* out);

// As ToView, and at most max_len bytes, for ids that C++ would copy before
// it checks their length.
absl::Status ToBoundedView(const char* data, size_t len, size_t max_len, absl::string_view what,
                           absl::string_view* out);

// A list of ids from C. The ids themselves are checked by C++ (before it
// reads them).
absl::Status ToViews(const presence_bytes_t* ids, size_t count, absl::string_view what,
                     std::vector<absl::string_view>* out);

// An int from C as a C++ enum. The C++ enums are one byte wide and the
// engine checks their range (and counts what it rejects), so only what does
// not fit a byte is answered here.
template <typename E>
ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool ToEnum(int v, E* out) {
  if (ABSL_PREDICT_FALSE(static_cast<unsigned>(v) > 255u)) return false;
  *out = static_cast<E>(v);
  return true;
}

absl::Status BadEnum(absl::string_view what, int v);

// ---- Options ------------------------------------------------------------------------------

// Writes the defaults of `version` into the caller's struct, no more bytes
// than that version has.
template <typename T, size_t N>
int InitOptions(T* options, uint32_t version, const T& defaults, const size_t (&sizes)[N],
                const char* what, char** errmsg) noexcept {
  if (options == nullptr) return NullArgument(errmsg, "options");
  if (version == 0 || version >= N) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s version %u is not one this library knows (1 to %zu)", what,
                  version, N - 1);
    return Invalid(errmsg, buf);
  }
  std::memcpy(static_cast<void*>(options), &defaults, sizes[version]);
  options->version = version;
  return Ok(errmsg);
}

// ---- Reference counts --------------------------------------------------------------------

void Ref(presence_clock_t* c);
void Unref(presence_clock_t* c);
void Ref(presence_engine_t* e);
void Unref(presence_engine_t* e);

// ---- Results ----------------------------------------------------------------------------------

// A malloc'd, NUL-terminated copy of a text for the caller.
int ReturnText(const std::string& text, char** out_text, size_t* out_len, char** errmsg);

// An entry point that asks the engine one thing about a user: `ask` turns
// the user's id into a StatusOr of the value for *out (which may be NULL,
// and is zeroed on failure).
template <typename T, typename Ask>
int AskAboutUser(T* out, presence_engine_t* engine, const char* user_id, size_t user_id_len,
                 char** errmsg, Ask ask) {
  if (out != nullptr) *out = T{};
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    absl::StatusOr<T> value = ask(user);
    if (!value.ok()) return ToC(value.status(), errmsg);
    if (out != nullptr) *out = *value;
    return Ok(errmsg);
  });
}

// An entry point that asks the engine a list about a user and returns it as
// one allocation of C structs (each filled by `fill`) that the caller frees
// with presence_free: NULL and a count of 0 when the list is empty. Both
// out-parameters are required (convention 5) and zeroed first.
template <typename C, typename Ask, typename Fill>
int ListAboutUser(C** out, const char* out_name, size_t* out_count, presence_engine_t* engine,
                  const char* user_id, size_t user_id_len, char** errmsg, Ask ask, Fill fill) {
  if (out_count != nullptr) *out_count = 0;
  if (out == nullptr) return NullArgument(errmsg, out_name);
  *out = nullptr;
  if (out_count == nullptr) return NullArgument(errmsg, "out_count");
  if (engine == nullptr) return NullArgument(errmsg, "engine");
  return Guard(errmsg, [&] {
    absl::string_view user;
    if (auto st = ToView(user_id, user_id_len, "user_id", &user); !st.ok()) return ToC(st, errmsg);
    auto list = ask(user);
    if (!list.ok()) return ToC(list.status(), errmsg);
    if (list->empty()) return Ok(errmsg);
    auto* array = static_cast<C*>(std::calloc(list->size(), sizeof(C)));
    if (array == nullptr) throw std::bad_alloc();
    for (size_t i = 0; i < list->size(); ++i) fill((*list)[i], &array[i]);
    *out = array;
    *out_count = list->size();
    return Ok(errmsg);
  });
}

}  // namespace presence::capi

#endif  // PRESENCE_CAPI_C_COMMON_H_
