// The C ABI's shared helpers (capi/c_common.h) and the entry points that
// belong to no handle: status names, the version, and presence_free.
#include "capi/c_common.h"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "capi/c_internal.h"
#include "presence/c.h"
#include "presence/engine.h"
#include "presence/types.h"
#include "presence/version.h"

namespace presence::capi {

// ---- Status and message -----------------------------------------------------------

char* CopyString(const char* data, size_t len) noexcept {
  char* out = static_cast<char*>(std::malloc(len + 1));
  if (out == nullptr) return nullptr;
  if (len > 0) std::memcpy(out, data, len);
  out[len] = '\0';
  return out;
}

int Fail(char** errmsg, int code, absl::string_view message) noexcept {
  if (errmsg != nullptr) *errmsg = CopyString(message.data(), message.size());
  return code;
}

const char* CodeName(int code) noexcept {
  switch (code) {
    case PRESENCE_OK: return "OK";
    case PRESENCE_ERR_CANCELLED: return "CANCELLED";
    case PRESENCE_ERR_UNKNOWN: return "UNKNOWN";
    case PRESENCE_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case PRESENCE_ERR_DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case PRESENCE_ERR_NOT_FOUND: return "NOT_FOUND";
    case PRESENCE_ERR_ALREADY_EXISTS: return "ALREADY_EXISTS";
    case PRESENCE_ERR_PERMISSION_DENIED: return "PERMISSION_DENIED";
    case PRESENCE_ERR_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case PRESENCE_ERR_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case PRESENCE_ERR_ABORTED: return "ABORTED";
    case PRESENCE_ERR_OUT_OF_RANGE: return "OUT_OF_RANGE";
    case PRESENCE_ERR_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case PRESENCE_ERR_INTERNAL: return "INTERNAL";
    case PRESENCE_ERR_UNAVAILABLE: return "UNAVAILABLE";
    case PRESENCE_ERR_DATA_LOSS: return "DATA_LOSS";
    case PRESENCE_ERR_UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

void AddBatch(presence::BatchResult r, presence::BatchResult* total) {
  total->applied += r.applied;
  total->stale += r.stale;
  total->rejected += r.rejected;
  if (total->first_error.ok()) total->first_error = std::move(r.first_error);
}

int ToC(const presence::BatchResult& total, presence_batch_result_t* out, char** errmsg) {
  const int rc = ToC(total.first_error, errmsg);
  if (out != nullptr) *out = presence_batch_result_t{total.applied, total.stale, total.rejected, rc};
  return rc;
}

int CaughtException(char** errmsg) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return Fail(errmsg, PRESENCE_ERR_RESOURCE_EXHAUSTED, "out of memory");
  } catch (const std::exception& e) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "unexpected C++ exception: %s", e.what());
    return Fail(errmsg, PRESENCE_ERR_INTERNAL, buf);
  } catch (...) {
    return Fail(errmsg, PRESENCE_ERR_INTERNAL, "unexpected C++ exception");
  }
}

int Invalid(char** errmsg, absl::string_view message) noexcept {
  return Fail(errmsg, PRESENCE_ERR_INVALID_ARGUMENT, message);
}

int NullArgument(char** errmsg, const char* what) noexcept {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s is NULL", what);
  return Invalid(errmsg, buf);
}

// ---- Conversions ----------------------------------------------------------------------

absl::Status ToView(const char* data, size_t len, absl::string_view what, absl::string_view* out) {
  if (data == nullptr && len != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is NULL with length ", len));
  }
  if (ABSL_PREDICT_FALSE(len > static_cast<size_t>(std::numeric_limits<ptrdiff_t>::max()))) {
    return absl::InvalidArgumentError(absl::StrCat(what, " length ", len, " is out of range"));
  }
  *out = len == 0 ? absl::string_view() : absl::string_view(data, len);
  return absl::OkStatus();
}

absl::Status ToBoundedView(const char* data, size_t len, size_t max_len, absl::string_view what,
                           absl::string_view* out) {
  if (len > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", len, " bytes; the most is ", max_len));
  }
  return ToView(data, len, what, out);
}

absl::Status ToViews(const presence_bytes_t* ids, size_t count, absl::string_view what,
                     std::vector<absl::string_view>* out) {
  out->clear();
  if (count == 0) return absl::OkStatus();
  if (ids == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is NULL with count ", count));
  }
  if (count > out->max_size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": count ", count, " is too large"));
  }
  out->reserve(count);
  for (size_t i = 0; i < count; ++i) {
    absl::string_view v;
    if (auto st = ToView(ids[i].data, ids[i].len, absl::StrCat(what, "[", i, "]"), &v); !st.ok()) {
      return st;
    }
    out->push_back(v);
  }
  return absl::OkStatus();
}

absl::Status BadEnum(absl::string_view what, int v) {
  return absl::InvalidArgumentError(absl::StrCat("unknown ", what, " value ", v));
}

// ---- Reference counts --------------------------------------------------------------------

void Ref(presence_clock_t* c) { c->refs.fetch_add(1, std::memory_order_relaxed); }
void Unref(presence_clock_t* c) {
  if (c != nullptr && c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete c;
}
void Ref(presence_engine_t* e) { e->refs.fetch_add(1, std::memory_order_relaxed); }
void Unref(presence_engine_t* e) {
  if (e == nullptr || e->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  e->rep.reset();         // first the engine, which reads the clock and writes the store ...
  e->file_store.reset();  // ... then the store (syncs and releases the folder) ...
  Unref(e->clock);        // ... then the clock
  delete e;
}

// ---- Results ----------------------------------------------------------------------------------

int ReturnText(const std::string& text, char** out_text, size_t* out_len, char** errmsg) {
  char* copy = CopyString(text.data(), text.size());
  if (copy == nullptr) throw std::bad_alloc();
  *out_text = copy;
  if (out_len != nullptr) *out_len = text.size();
  return Ok(errmsg);
}

#define PRESENCE_SAME_CODE(c, k) \
  static_assert(PRESENCE_##c == static_cast<int>(absl::StatusCode::k), "not absl's number")
PRESENCE_SAME_CODE(OK, kOk);
PRESENCE_SAME_CODE(ERR_CANCELLED, kCancelled);
PRESENCE_SAME_CODE(ERR_UNKNOWN, kUnknown);
PRESENCE_SAME_CODE(ERR_INVALID_ARGUMENT, kInvalidArgument);
PRESENCE_SAME_CODE(ERR_DEADLINE_EXCEEDED, kDeadlineExceeded);
PRESENCE_SAME_CODE(ERR_NOT_FOUND, kNotFound);
PRESENCE_SAME_CODE(ERR_ALREADY_EXISTS, kAlreadyExists);
PRESENCE_SAME_CODE(ERR_PERMISSION_DENIED, kPermissionDenied);
PRESENCE_SAME_CODE(ERR_RESOURCE_EXHAUSTED, kResourceExhausted);
PRESENCE_SAME_CODE(ERR_FAILED_PRECONDITION, kFailedPrecondition);
PRESENCE_SAME_CODE(ERR_ABORTED, kAborted);
PRESENCE_SAME_CODE(ERR_OUT_OF_RANGE, kOutOfRange);
PRESENCE_SAME_CODE(ERR_UNIMPLEMENTED, kUnimplemented);
PRESENCE_SAME_CODE(ERR_INTERNAL, kInternal);
PRESENCE_SAME_CODE(ERR_UNAVAILABLE, kUnavailable);
PRESENCE_SAME_CODE(ERR_DATA_LOSS, kDataLoss);
PRESENCE_SAME_CODE(ERR_UNAUTHENTICATED, kUnauthenticated);
#undef PRESENCE_SAME_CODE

}  // namespace presence::capi

using presence::capi::CodeName;

// ---- Version and memory -------------------------------------------------------------------------

const char* presence_status_name(int status) { return CodeName(status); }

int presence_version_number(void) { return PRESENCE_VERSION_NUMBER; }
const char* presence_version_string(void) { return PRESENCE_VERSION_STRING; }
void presence_free(void* ptr) { std::free(ptr); }
