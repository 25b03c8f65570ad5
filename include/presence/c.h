/* File: presence/c.h
 *
 * The C ABI of presence: everything a host written in C, or a binding for
 * another language (Python ctypes, Go cgo, ...), needs to run an engine and
 * its fan-out tier. It is a thin layer over the C++ API (presence/engine.h,
 * presence/fanout.h); the rules it keeps are those of docs/design.md, and the
 * comments of the C++ API say more about each call.
 *
 * CONVENTIONS
 *
 *  1. Names. Every name starts with presence_ (functions, types) or
 *     PRESENCE_ (macros, enum values). Functions are presence_<noun>_<verb>,
 *     where <noun> is the handle type they work on: presence_engine_beat,
 *     presence_fanout_poll. A C++ method Engine::SetOverride is
 *     presence_engine_set_override here.
 *
 *  2. Opaque handles only. presence_clock_t, presence_engine_t and
 *     presence_fanout_t are declared, never defined: the caller holds
 *     pointers, made by a _new function and released by the matching
 *     _destroy function. Each _destroy accepts NULL (a no-op) and must be the
 *     last call on that handle. Handles keep what they depend on alive (an
 *     engine holds a reference to its clock, a fan-out to its engine), so
 *     they may be destroyed in any order: convenient for bindings whose
 *     finalizers run in no particular order. Device handles and subscribers
 *     are plain uint64_t values, never pointers.
 *
 *  3. Status codes. Every call that can fail returns an int: PRESENCE_OK (0)
 *     on success, else one of the presence_status_t values below. The
 *     numbers are those of absl::StatusCode (and of google.rpc.Code), so a
 *     host can forward them as gRPC statuses unchanged. The list is stable
 *     and append-only: a value never changes meaning and is never removed.
 *     Every absl::StatusCode has its value here, so a status passes through
 *     unchanged; a binding that meets a number it does not know (from a
 *     newer library) should treat it as a generic error.
 *
 *  4. Error messages. Every call that can fail takes `char** errmsg` as its
 *     last parameter. After the call, *errmsg is NULL when the call returned
 *     PRESENCE_OK, and otherwise points to a NUL-terminated message that the
 *     library allocated and the caller frees with presence_free(). The
 *     previous value of *errmsg is overwritten, never read or freed. Pass
 *     NULL for errmsg to get the status code only. There is no global or
 *     thread-local error state, so a call may move between threads (as
 *     goroutines do) between its return and the reading of its error.
 *
 *  5. Parameters come in this order: out-parameters first, then the handle,
 *     then the inputs, then errmsg. An out-parameter that returns a value may
 *     be NULL when the caller does not want it; one that returns a buffer may
 *     not. On failure, out-parameters are zeroed (buffers set to NULL) unless
 *     the function says otherwise.
 *
 *  6. Bytes are a pointer and a length: `const char* id, size_t id_len`.
 *     Ids are opaque bytes (they may hold NUL and are not NUL-terminated);
 *     a NULL pointer is allowed only with length 0. A list of ids is an array
 *     of presence_bytes_t and a count. The library reads caller memory only
 *     during the call and keeps no pointer to it afterwards (a sink's
 *     payload excepted, which it only passes back). For cgo: an id passed as
 *     an argument may point into Go memory as is; a presence_signal_t or a
 *     presence_bytes_t array that holds pointers to Go memory needs those
 *     pinned (runtime.Pinner) or copied to C memory, per the cgo rules.
 *
 *  7. Buffers that the library returns (results, batches, metrics text,
 *     error messages) are allocated by the library and freed, each with one
 *     call, by presence_free(). Never free them with free() (the library
 *     may use a different allocator than the caller) and never free the
 *     pointers inside them: a get result holds its user ids in the same
 *     allocation as the array.
 *
 *  8. Enumerations are passed as int (int32_t in structs), with the numbers
 *     of presence.v1 (proto/presence/v1/presence.proto); 0 is never a valid
 *     value, so a zeroed field is caught. A value outside an enumeration
 *     answers PRESENCE_ERR_INVALID_ARGUMENT. Booleans are uint8_t (0: false).
 *     Times are int64_t milliseconds on the engine's clock.
 *
 *  9. Versioned option structs. Each *_options_t starts with a `version`
 *     field. Initialise one with its _INIT macro (C) or its _options_init()
 *     function (bindings, which cannot expand macros), then set the fields
 *     that matter; passing NULL instead of a struct means "every default".
 *     Fields are only ever appended, with a new version number, so a caller
 *     built against an older header keeps working with a newer library.
 *     Structs that the caller fills per call (presence_signal_t) and those
 *     that the library fills (presence_user_presence_t, ...) have frozen
 *     layouts: should one need a field, a new struct and new functions come
 *     beside the old ones.
 *
 * 10. Versions. PRESENCE_VERSION_MAJOR, _MINOR, _PATCH, _NUMBER and _STRING
 *     (presence/version.h) are the version of the headers;
 *     presence_version_number() and presence_version_string() that of the
 *     library actually linked. A binding should check that the majors agree.
 *
 * 11. Threads. Each handle type states what may be shared between threads
 *     (see THREAD SAFETY at each). In short: every call on an engine or a
 *     fan-out may come from any thread at once, except _destroy.
 *
 * 12. Callbacks are a function pointer plus a `void* payload` that the
 *     library passes back as the callback's last argument. Each callback
 *     states on which thread it runs and what it may call. A callback must
 *     return normally (no longjmp, no C++ exception, no Go panic through it).
 *
 * 13. No C++ exception ever crosses this boundary. Every function catches
 *     everything; running out of memory answers
 *     PRESENCE_ERR_RESOURCE_EXHAUSTED, anything else unexpected
 *     PRESENCE_ERR_INTERNAL.
 *
 * EXAMPLE
 *
 *   presence_clock_t* clock = NULL;
 *   presence_engine_t* engine = NULL;
 *   presence_engine_options_t opts = PRESENCE_ENGINE_OPTIONS_INIT;
 *   char* err = NULL;
 *   presence_clock_manual_new(&clock, 1000000, NULL);
 *   opts.clock = clock;                          (NULL: the system clock)
 *   if (presence_engine_new(&engine, &opts, &err) != PRESENCE_OK) {
 *     fprintf(stderr, "%s\n", err);
 *     presence_free(err);
 *   }
 *   presence_signal_t s = PRESENCE_SIGNAL_INIT;
 *   s.user_id = "alice"; s.user_id_len = 5;
 *   s.device_id = "laptop"; s.device_id_len = 6;
 *   s.session_id = 1;
 *   uint64_t handle = 0;
 *   presence_engine_connect(&handle, engine, &s, NULL);
 *   presence_engine_beat(engine, handle, PRESENCE_ACTIVITY_ACTIVE,
 *                        PRESENCE_SOURCE_APP, NULL);      (every second)
 *   presence_engine_tick(NULL, engine, NULL);              (every 100 ms)
 *   presence_engine_destroy(engine);
 *   presence_clock_destroy(clock);
 */
#ifndef PRESENCE_C_H_
#define PRESENCE_C_H_

#include <stddef.h>
#include <stdint.h>

#include "presence/export.h"
#include "presence/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Status codes (convention 3) ----------------------------------------- */

typedef enum presence_status_t {
  PRESENCE_OK = 0,
  /* Bad input: a NULL handle or pointer, an id empty or too long, a value
   * outside its enumeration or range, an options struct of an unknown
   * version. Nothing was changed. */
  PRESENCE_ERR_INVALID_ARGUMENT = 3,
  /* Unknown or closed: a device handle that expired or was disconnected, a
   * user with no such override, an unknown subscriber or topic, a user that
   * neither the engine nor its history knows, a gateway no device carries. */
  PRESENCE_ERR_NOT_FOUND = 5,
  /* A limit was passed (devices per user, overrides per user, subscribers,
   * list or topic sizes), or the library ran out of memory. */
  PRESENCE_ERR_RESOURCE_EXHAUSTED = 8,
  /* The call does not fit the current state: a stale signal (from a session
   * older than the device's current one, or older than one already
   * applied: counted and dropped, never applied), polling a push
   * subscriber, presence_engine_tick called from inside a callback, a
   * history query on an engine with no history store, a data folder that
   * another engine (or FileStore) holds, or one of a newer format. */
  PRESENCE_ERR_FAILED_PRECONDITION = 9,
  /* Anything unexpected: a bug in presence. The message says more. */
  PRESENCE_ERR_INTERNAL = 13,
  /* A store or bus behind the engine cannot be reached for now (the
   * adapters of the C++ API answer it): the call may succeed when retried. */
  PRESENCE_ERR_UNAVAILABLE = 14,
  /* Stored data was found damaged beyond what recovery handles (the file
   * store skips a damaged snapshot itself and reports it in its metrics). */
  PRESENCE_ERR_DATA_LOSS = 15,
  /* Not permitted: a data folder that cannot be read or written (EACCES,
   * EPERM, a read-only file system). */
  PRESENCE_ERR_PERMISSION_DENIED = 7,
  /* The remaining codes of absl::StatusCode, which no store of the C ABI
   * answers today; they are here so that every status passes through. */
  PRESENCE_ERR_CANCELLED = 1,
  PRESENCE_ERR_UNKNOWN = 2,
  PRESENCE_ERR_DEADLINE_EXCEEDED = 4,
  PRESENCE_ERR_ALREADY_EXISTS = 6,
  PRESENCE_ERR_ABORTED = 10,
  PRESENCE_ERR_OUT_OF_RANGE = 11,
  PRESENCE_ERR_UNIMPLEMENTED = 12,
  PRESENCE_ERR_UNAUTHENTICATED = 16
} presence_status_t;

/* presence_status_name returns the name of a status code ("OK",
 * "INVALID_ARGUMENT", "DATA_LOSS", ...), or "UNKNOWN" for a number that is
 * not one. The string is static: do not free it. */
PRESENCE_EXPORT const char* presence_status_name(int status);

/* ---- Enumerations (convention 8) --------------------------------------------
 * The same numbers as presence/types.h and proto/presence/v1/presence.proto. */

/* What others see of a user. */
typedef enum presence_state_t {
  PRESENCE_STATE_OFFLINE = 1,
  PRESENCE_STATE_AWAY = 2,
  PRESENCE_STATE_ONLINE = 3,
  PRESENCE_STATE_DND = 4
} presence_state_t;

/* Where a signal came from; precedence by value (MANUAL > APP > INFERRED). */
typedef enum presence_source_t {
  PRESENCE_SOURCE_INFERRED = 1, /* deduced by the server (mobile background, push receipt) */
  PRESENCE_SOURCE_APP = 2,      /* the client app itself (WebSocket ping, heartbeat) */
  PRESENCE_SOURCE_MANUAL = 3    /* an explicit report by the user (a click, a message) */
} presence_source_t;

/* What a signal says about the person behind the device. */
typedef enum presence_activity_t {
  PRESENCE_ACTIVITY_ACTIVE = 1,
  PRESENCE_ACTIVITY_IDLE = 2
} presence_activity_t;

/* The kind of device, counted in device summaries. */
typedef enum presence_platform_t {
  PRESENCE_PLATFORM_WEB = 1,
  PRESENCE_PLATFORM_DESKTOP = 2,
  PRESENCE_PLATFORM_MOBILE = 3,
  PRESENCE_PLATFORM_CONSOLE = 4,
  PRESENCE_PLATFORM_OTHER = 5
} presence_platform_t;
#define PRESENCE_PLATFORM_COUNT 5

/* A manual state that a user sets; INVISIBLE shows as OFFLINE to everyone
 * but the user. */
typedef enum presence_override_state_t {
  PRESENCE_OVERRIDE_ONLINE = 1,
  PRESENCE_OVERRIDE_AWAY = 2,
  PRESENCE_OVERRIDE_DND = 3,
  PRESENCE_OVERRIDE_INVISIBLE = 4
} presence_override_state_t;

/* Why a user's published state changed (a transition's cause). */
typedef enum presence_cause_t {
  PRESENCE_CAUSE_SIGNAL = 1,          /* a device came alive or changed activity */
  PRESENCE_CAUSE_TIMEOUT = 2,         /* a device stopped signalling */
  PRESENCE_CAUSE_DISCONNECT = 3,      /* a device disconnected */
  PRESENCE_CAUSE_OVERRIDE = 4,        /* an override was set or revoked */
  PRESENCE_CAUSE_OVERRIDE_EXPIRY = 5, /* an override reached its end time */
  PRESENCE_CAUSE_MERGE = 6,           /* a record merged from elsewhere (a rebuild) */
  PRESENCE_CAUSE_WITHHELD = 7         /* not part of the public view (history read by others) */
} presence_cause_t;

/* Where an engine keeps its state (engine options, version 2). */
typedef enum presence_store_kind_t {
  /* Memory only (the default): nothing survives the engine, and there is no
   * history (history queries answer FAILED_PRECONDITION). */
  PRESENCE_STORE_MEMORY = 1,
  /* The crash-safe file store (presence/file_store.h) in one data folder:
   * users, devices and the history survive a restart, and a new engine on
   * the folder loads them. */
  PRESENCE_STORE_FILE = 2
} presence_store_kind_t;

/* When the file store fdatasyncs its log (presence::SyncPolicy, whose
 * numbers these are): what an acknowledged write survives. */
typedef enum presence_file_sync_t {
  PRESENCE_FILE_SYNC_EVERY_WRITE = 1, /* every write: a crash, an OS crash, a power loss */
  PRESENCE_FILE_SYNC_INTERVAL = 2,    /* at most every file_sync_interval_ms: an OS crash
                                         loses at most that much */
  PRESENCE_FILE_SYNC_NEVER = 3        /* when the OS chooses (and on destroy) */
} presence_file_sync_t;

/* CLEAN (logout): the device is dead at once. ABRUPT (socket dropped): it
 * stays live for reconnect_grace_ms, so that a quick reconnect shows
 * nothing. */
typedef enum presence_disconnect_kind_t {
  PRESENCE_DISCONNECT_CLEAN = 1,
  PRESENCE_DISCONNECT_ABRUPT = 2
} presence_disconnect_kind_t;

/* Limits on ids, in bytes (the least is 1). */
#define PRESENCE_MAX_USER_ID_BYTES 128
#define PRESENCE_MAX_DEVICE_ID_BYTES 128
#define PRESENCE_MAX_GATEWAY_BYTES 128
#define PRESENCE_MAX_TOPIC_BYTES 128

/* ---- Version and memory (conventions 7 and 10) ---------------------------- */

/* The version of the linked library, as PRESENCE_VERSION_NUMBER
 * (major * 10000 + minor * 100 + patch) and as a static string ("0.1.0"). */
PRESENCE_EXPORT int presence_version_number(void);
PRESENCE_EXPORT const char* presence_version_string(void);

/* presence_free frees a buffer that the library returned. NULL is a no-op. */
PRESENCE_EXPORT void presence_free(void* ptr);

/* presence_bytes_t is one byte string in a list (convention 6). */
typedef struct presence_bytes_t {
  const char* data;
  size_t len;
} presence_bytes_t;

/* ---- Clock ----------------------------------------------------------------
 *
 * presence_clock_t is a manual clock: time moves only when the host moves
 * it, which makes tests and simulations deterministic. (An engine created
 * without a clock uses the system clock.)
 *
 * THREAD SAFETY: every call may come from any thread at once.
 * LIFESPAN: an engine created with the clock holds a reference to it, so the
 * caller may destroy its own pointer at any time. */
typedef struct presence_clock_t presence_clock_t;

/* Creates a manual clock that reads start_ms. */
PRESENCE_EXPORT int presence_clock_manual_new(presence_clock_t** out_clock, int64_t start_ms,
                                              char** errmsg);
/* Releases the caller's reference. NULL is a no-op. */
PRESENCE_EXPORT void presence_clock_destroy(presence_clock_t* clock);
/* Moves the clock forward by delta_ms; INVALID_ARGUMENT when negative. */
PRESENCE_EXPORT int presence_clock_advance(presence_clock_t* clock, int64_t delta_ms,
                                           char** errmsg);
/* Sets the clock; INVALID_ARGUMENT when now_ms is before its time (a clock
 * never goes back). */
PRESENCE_EXPORT int presence_clock_set(presence_clock_t* clock, int64_t now_ms, char** errmsg);
/* The clock's time. */
PRESENCE_EXPORT int presence_clock_now(int64_t* out_now_ms, const presence_clock_t* clock,
                                       char** errmsg);

/* ---- Engine options (convention 9) ------------------------------------------
 *
 * The fields of presence::Options (presence/options.h), which says more
 * about each. To add a field: append it, raise
 * PRESENCE_ENGINE_OPTIONS_VERSION, extend the _INIT macro, and read the field
 * in capi/c_engine.cc only when options->version is at least the new version. */
#define PRESENCE_ENGINE_OPTIONS_VERSION 3

/* presence_probe_t: ping device `device_id` of user `user_id`, in session
 * `session_id`, and answer with presence_engine_answer_probe(probe_id)
 * (docs/design.md rule 9). The pointers are valid during the callback only. */
typedef struct presence_probe_t {
  const char* user_id;
  size_t user_id_len;
  const char* device_id;
  size_t device_id_len;
  uint64_t session_id;
  uint64_t probe_id; /* never 0 */
  int32_t source;    /* presence_source_t the answer counts as */
  int32_t attempt;   /* 1 for the first probe of a silence, 2 for the first retry, ... */
  const char* gateway; /* that carried the device's last signal; "" (len 0) when none */
  size_t gateway_len;
} presence_probe_t;

/* presence_probe_cb asks the host to check a silent device: send a
 * transport-level check (a WebSocket ping, a push) and report its answer
 * with presence_engine_answer_probe.
 * THREAD: called on the thread running presence_engine_tick, after the
 * tick's work and before the fan-outs' sinks, with no lock of the library
 * held, one probe at a time. It must not block for long.
 * MAY CALL: any function of the engine and fan-out (answering at once
 * included), except presence_engine_tick (FAILED_PRECONDITION) and
 * presence_engine_destroy. */
typedef void (*presence_probe_cb)(const presence_probe_t* probe, void* payload);

typedef struct presence_engine_options_t {
  uint32_t version;       /* PRESENCE_ENGINE_OPTIONS_VERSION */
  int32_t shards;         /* lock shards, rounded up to a power of two, <= 256; 0: 16 */
  presence_clock_t* clock; /* NULL: the system clock. The engine holds a reference. */
  /* Liveness per source (docs/design.md rule 1): the expected interval between
   * signals, and the silence after which the source no longer keeps the
   * device live. */
  int64_t inferred_interval_ms;      /* 60000 */
  int64_t inferred_offline_after_ms; /* 240000 */
  int64_t app_interval_ms;           /* 1000 */
  int64_t app_offline_after_ms;      /* 4000 */
  int64_t manual_interval_ms;        /* 1000 */
  int64_t manual_offline_after_ms;   /* 4000 */
  int64_t reconnect_grace_ms;        /* 1500: an abrupt disconnect waits this long */
  int64_t min_dwell_ms;              /* 1000: at most one published change per user per dwell; at most 2^30 */
  int64_t max_future_skew_ms;        /* 5000: signals stamped further ahead are rejected */
  int64_t max_signal_age_ms;         /* 300000: signals stamped further behind are rejected */
  int64_t dead_retention_ms;         /* 300000: a dead device's record is kept this long */
  int64_t user_retention_ms;         /* 86400000: a user with nothing left is forgotten */
  int64_t false_offline_window_ms;   /* 30000: a return this soon counts as a false offline */
  int32_t max_devices_per_user;      /* 64 */
  int32_t max_overrides_per_user;    /* 16 */
  uint8_t inferred_can_be_online;    /* 0: a device kept live only by INFERRED shows AWAY */
  uint8_t override_requires_live_device; /* 1: DND with no live device shows OFFLINE */
  /* ---- Version 2 ---- */
  /* Flood limit: most signals one device may have accepted per second
   * (heartbeats included); past it they answer RESOURCE_EXHAUSTED and are
   * dropped, and the device keeps its state. 0..65535; 0: no limit. */
  int32_t max_signals_per_device_per_sec; /* 20 */
  /* presence_store_kind_t: PRESENCE_STORE_MEMORY or PRESENCE_STORE_FILE. */
  int32_t store;                          /* PRESENCE_STORE_MEMORY */
  /* Memory budget for users and devices, in bytes: a signal that would
   * create a device or user past it answers RESOURCE_EXHAUSTED; nothing
   * held is evicted. 0: no budget. */
  int64_t memory_budget_bytes;            /* 0 */
  /* PRESENCE_STORE_FILE: the data folder, created when missing (a path,
   * without NUL bytes; read during presence_engine_new only). It must be
   * empty (NULL/0) with PRESENCE_STORE_MEMORY. One engine at a time may
   * have a folder open. */
  const char* file_dir;                   /* NULL */
  size_t file_dir_len;                    /* 0 */
  int64_t file_sync_interval_ms;          /* 100: PRESENCE_FILE_SYNC_INTERVAL only; > 0 */
  int32_t file_sync;                      /* presence_file_sync_t: EVERY_WRITE */
  /* ---- Version 3 ---- */
  /* Push/pull checks (docs/design.md rule 9). prober NULL: the engine only
   * waits. Set: a device whose every live source was silent past its
   * interval plus probe_margin_ms is probed, then again every
   * probe_retry_ms, at most max_probes (1..8) times per silence; the answer
   * counts as a signal. offline_after stays the upper bound. */
  presence_probe_cb prober;               /* NULL */
  void* prober_payload;                   /* passed to prober as its last argument */
  int64_t probe_margin_ms;                /* 1000 */
  int64_t probe_retry_ms;                 /* 500 */
  int32_t max_probes;                     /* 4 */
  /* Most probes per second for the devices of one gateway; 0: no limit. */
  int32_t max_probes_per_gateway_per_sec; /* 1000 */
} presence_engine_options_t;

#define PRESENCE_ENGINE_OPTIONS_INIT                                                     \
  {                                                                                      \
    PRESENCE_ENGINE_OPTIONS_VERSION, 0, NULL, 60000, 240000, 1000, 4000, 1000, 4000,     \
        1500, 1000, 5000, 300000, 300000, 86400000, 30000, 64, 16, 0, 1, 20,             \
        PRESENCE_STORE_MEMORY, 0, NULL, 0, 100, PRESENCE_FILE_SYNC_EVERY_WRITE, NULL,    \
        NULL, 1000, 500, 4, 1000                                                         \
  }

/* Fills *options with the defaults of `version` (1 to 3; pass
 * PRESENCE_ENGINE_OPTIONS_VERSION), writing only the fields that version
 * has. INVALID_ARGUMENT for a version this library does not know. */
PRESENCE_EXPORT int presence_engine_options_init(presence_engine_options_t* options,
                                                 uint32_t version, char** errmsg);

/* ---- Engine -------------------------------------------------------------------
 *
 * presence_engine_t decides who is online (presence::Engine). The host feeds
 * it signals, calls presence_engine_tick about every 100 ms, and reads states
 * with presence_engine_get or receives diffs through a fan-out.
 *
 * THREAD SAFETY: every call may come from any number of threads at once,
 * except presence_engine_destroy, which must be the last. Ticks are
 * serialised internally (a second caller waits); a tick must not be called
 * from inside a callback (it answers FAILED_PRECONDITION). A heartbeat on a
 * handle of a live device takes no lock. */
typedef struct presence_engine_t presence_engine_t;

/* Reports the answer to a probe (docs/design.md rule 9): it counts as a
 * signal of the probed device and source, at the engine's time, with the
 * activity that source last had. FAILED_PRECONDITION for a late answer (the
 * device signalled, died or disconnected since; counted in
 * presence_probes_late_total, nothing applied); NOT_FOUND for an id that no
 * probe of this engine had. */
PRESENCE_EXPORT int presence_engine_answer_probe(presence_engine_t* engine, uint64_t probe_id,
                                                 char** errmsg);

/* Creates an engine. options may be NULL (every default, the system
 * clock, memory only). INVALID_ARGUMENT when a field is out of range.
 * With PRESENCE_STORE_FILE the engine opens the data folder, owns the file
 * store until it is freed, loads what the folder holds (users and their
 * devices) and keeps its history there; the message of a folder that
 * cannot be opened names it: FAILED_PRECONDITION when another engine holds
 * it (or it holds data of a newer format), PERMISSION_DENIED when it cannot
 * be read or created, another status for other I/O errors. */
PRESENCE_EXPORT int presence_engine_new(presence_engine_t** out_engine,
                                        const presence_engine_options_t* options,
                                        char** errmsg);
/* Releases the caller's reference; the engine is freed once no fan-out
 * holds it either, and then its file store is closed (which syncs the log
 * and releases the folder). NULL is a no-op. */
PRESENCE_EXPORT void presence_engine_destroy(presence_engine_t* engine);

/* presence_signal_t says that a device is alive (docs/design.md section 1). The
 * pointers are read during the call only. Frozen layout (convention 9). */
typedef struct presence_signal_t {
  const char* user_id;   /* 1..PRESENCE_MAX_USER_ID_BYTES bytes */
  size_t user_id_len;
  const char* device_id; /* 1..PRESENCE_MAX_DEVICE_ID_BYTES bytes */
  size_t device_id_len;
  const char* gateway;   /* optional: the host process carrying it (0..128 bytes) */
  size_t gateway_len;
  /* One connection of the device: > 0, and grows on every reconnect. A
   * signal from an older session is stale. */
  uint64_t session_id;
  int64_t timestamp_ms;  /* when it was produced, on the engine's clock; 0: now */
  uint64_t trace_id;     /* carried into the change it causes */
  int32_t platform;      /* presence_platform_t */
  int32_t source;        /* presence_source_t */
  int32_t activity;      /* presence_activity_t */
} presence_signal_t;

/* No ids, no session; platform OTHER, source APP, activity ACTIVE (the
 * defaults of the C++ presence::Signal). */
#define PRESENCE_SIGNAL_INIT                                                             \
  {                                                                                      \
    NULL, 0, NULL, 0, NULL, 0, 0, 0, 0, PRESENCE_PLATFORM_OTHER, PRESENCE_SOURCE_APP,    \
        PRESENCE_ACTIVITY_ACTIVE                                                         \
  }

/* Applies one keyed signal (docs/design.md rules 1, 2 and 5); a signal for a
 * device the engine does not hold creates it. FAILED_PRECONDITION for a
 * stale signal (counted and dropped). */
PRESENCE_EXPORT int presence_engine_signal(presence_engine_t* engine,
                                           const presence_signal_t* signal, char** errmsg);

/* The outcome of presence_engine_signal_batch and presence_engine_beat_many.
 * Frozen layout. */
typedef struct presence_batch_result_t {
  size_t applied;      /* accepted (exact replays included: they change nothing) */
  size_t stale;        /* dropped as stale */
  size_t rejected;     /* invalid, or a limit passed */
  int32_t first_error; /* status of the first signal not applied; PRESENCE_OK if none */
} presence_batch_result_t;

/* Applies `count` signals in order, in one call (each shard is locked once
 * per batch). Returns PRESENCE_OK when every signal was applied; otherwise
 * the status of the first signal that was not, with its message in
 * *errmsg. Either way *out_result (may be NULL) counts the outcomes, and
 * the signals after a failed one are still applied. When the call itself is
 * invalid (a NULL engine, NULL signals with count > 0) nothing is applied and
 * every count is 0, so applied + stale + rejected < count tells that case
 * apart. */
PRESENCE_EXPORT int presence_engine_signal_batch(presence_batch_result_t* out_result,
                                                 presence_engine_t* engine,
                                                 const presence_signal_t* signals, size_t count,
                                                 char** errmsg);

/* Ends the session `session_id` (0: the current one) of a device named by
 * its ids. `kind` is a presence_disconnect_kind_t. NOT_FOUND when the
 * device is unknown or already closed. */
PRESENCE_EXPORT int presence_engine_disconnect_device(presence_engine_t* engine,
                                                      const char* user_id, size_t user_id_len,
                                                      const char* device_id,
                                                      size_t device_id_len, uint64_t session_id,
                                                      int kind, char** errmsg);

/* ---- Handles: the heartbeat fast path ------------------------------------------
 *
 * A device handle is a uint64_t that the host keeps beside its socket (0 is
 * never a handle). A handle stops working when its device is disconnected,
 * replaced by a newer session, or forgotten after dead_retention_ms; calls
 * on it then answer NOT_FOUND. */

/* Applies `signal` as a connect and returns its device's handle.
 * Connecting with a newer session_id replaces the device's previous
 * session, whose handle stops working. */
PRESENCE_EXPORT int presence_engine_connect(uint64_t* out_handle, presence_engine_t* engine,
                                            const presence_signal_t* signal, char** errmsg);
/* A heartbeat on the handle, at the engine's current time. O(1), no
 * allocation, and no lock when only the time changes. `activity` is a
 * presence_activity_t, `source` a presence_source_t. */
PRESENCE_EXPORT int presence_engine_beat(presence_engine_t* engine, uint64_t handle,
                                         int activity, int source, char** errmsg);
/* Heartbeats on `count` handles in one call: presence_engine_beat on each in
 * turn, with the same activity and source, at one reading of the clock, but
 * with their memory accesses overlapped, so that a host which gathers the
 * sockets an event loop found ready pays several times less per beat once
 * the engine outgrows the CPU caches. Returns PRESENCE_OK when every beat
 * was applied; otherwise the status of the first that was not (a closed or
 * unknown handle: NOT_FOUND), with its message in *errmsg, and the beats
 * after it are still applied. *out_result (may be NULL) counts the outcomes;
 * an unknown activity or source rejects every beat. An invalid call (a NULL
 * engine, NULL handles with count > 0, an enum value past a byte) applies
 * nothing and counts nothing. */
PRESENCE_EXPORT int presence_engine_beat_many(presence_batch_result_t* out_result,
                                              presence_engine_t* engine, const uint64_t* handles,
                                              size_t count, int activity, int source,
                                              char** errmsg);
/* Closes the handle's session (`kind`: presence_disconnect_kind_t). The
 * handle is invalid afterwards (a second call answers NOT_FOUND). */
PRESENCE_EXPORT int presence_engine_disconnect(presence_engine_t* engine, uint64_t handle,
                                               int kind, char** errmsg);

/* ---- Overrides (docs/design.md section 1 and rule 3) ---------------------------------- */

/* Pushes a manual state (`state`: presence_override_state_t) on the user's
 * stack and returns its id. until_ms is an absolute time on the engine's
 * clock, 0 for "until revoked"; a time not after now is INVALID_ARGUMENT. */
PRESENCE_EXPORT int presence_engine_set_override(uint64_t* out_override_id,
                                                 presence_engine_t* engine, const char* user_id,
                                                 size_t user_id_len, int state, int64_t until_ms,
                                                 uint64_t trace_id, char** errmsg);
/* Removes one override. NOT_FOUND when the user has none with that id. */
PRESENCE_EXPORT int presence_engine_revoke_override(presence_engine_t* engine,
                                                    const char* user_id, size_t user_id_len,
                                                    uint64_t override_id, char** errmsg);
/* Removes every override of the user; *out_removed says how many. */
PRESENCE_EXPORT int presence_engine_clear_overrides(size_t* out_removed,
                                                    presence_engine_t* engine,
                                                    const char* user_id, size_t user_id_len,
                                                    char** errmsg);
/* The operator's bulk revoke: every override of any user set in
 * [from_ms, to_ms]. */
PRESENCE_EXPORT int presence_engine_revoke_overrides_set_between(size_t* out_removed,
                                                                 presence_engine_t* engine,
                                                                 int64_t from_ms, int64_t to_ms,
                                                                 char** errmsg);

/* One override on a user's stack. Frozen layout. */
typedef struct presence_override_t {
  uint64_t id;
  int64_t set_at_ms;
  int64_t until_ms; /* 0: until revoked */
  int32_t state;    /* presence_override_state_t */
} presence_override_t;

/* The user's override stack, oldest first: an array of *out_count entries
 * freed with one presence_free(*out_overrides) (NULL when empty). Neither
 * out-parameter may be NULL. */
PRESENCE_EXPORT int presence_engine_list_overrides(presence_override_t** out_overrides,
                                                   size_t* out_count, presence_engine_t* engine,
                                                   const char* user_id, size_t user_id_len,
                                                   char** errmsg);

/* ---- Queries (docs/design.md section 4) -------------------------------------------- */

/* One user, as presence_engine_get answers. Frozen layout. */
typedef struct presence_user_presence_t {
  /* The id asked for, in the result's own allocation (followed by a NUL
   * for convenience; user_id_len is what counts). Empty for an id that
   * failed validation. */
  const char* user_id;
  size_t user_id_len;
  uint64_t version;          /* of the last published change of the viewer's view */
  int64_t last_seen_ms;      /* latest accepted signal; 0: never seen */
  int64_t freshness_ms;      /* now - last_seen_ms (0 when never seen) */
  int64_t override_until_ms; /* 0: no end time */
  int32_t state;             /* presence_state_t, as the viewer sees it */
  int32_t override_state;    /* presence_override_state_t; 0 when has_override is 0 */
  uint32_t live_devices;     /* live devices, all platforms */
  uint32_t devices[PRESENCE_PLATFORM_COUNT]; /* live devices per platform, index platform - 1 */
  uint8_t known;             /* 0: nothing to show of this id (every field 0) */
  uint8_t has_override;      /* an override shows */
} presence_user_presence_t;

/* Answers for `count` ids, in order, as the user `viewer_user_id` sees
 * them (NULL/0: an anonymous viewer): the user itself sees its true state,
 * everyone else its public view (docs/design.md rule 8): an invisible user is
 * OFFLINE with no devices and no override, its last_seen and version stay
 * where they were when it went invisible, and a user OFFLINE that was never
 * published or not seen for the retention is not known. State is exact at the
 * clock's now, even between ticks. Ids that fail validation (empty, or
 * longer than PRESENCE_MAX_USER_ID_BYTES) come back with known = 0.
 *
 * OWNERSHIP: *out_users is an array of `count` entries in one allocation
 * that also holds their user ids; free it with one presence_free(*out_users).
 * It is NULL when count is 0. */
PRESENCE_EXPORT int presence_engine_get(presence_user_presence_t** out_users,
                                        presence_engine_t* engine,
                                        const presence_bytes_t* user_ids, size_t count,
                                        const char* viewer_user_id, size_t viewer_user_id_len,
                                        char** errmsg);
/* As presence_engine_get, but `state` and `version` are those of each
 * user's last published change: what subscribers have been told. */
PRESENCE_EXPORT int presence_engine_get_published(presence_user_presence_t** out_users,
                                                  presence_engine_t* engine,
                                                  const presence_bytes_t* user_ids, size_t count,
                                                  const char* viewer_user_id,
                                                  size_t viewer_user_id_len, char** errmsg);

/* ---- History and durable state (docs/design.md sections 4, 5 and 7) ------------------
 *
 * The history is the audit trail of every published transition; an engine
 * has one with PRESENCE_STORE_FILE (engine options, version 2). Without
 * one, history and time in states answer FAILED_PRECONDITION. Transitions
 * reach the history on the tick that publishes them.
 *
 * THREAD SAFETY: as every engine call, except presence_engine_rebuild (see
 * there). */

/* History queries take a viewer, like presence_engine_get: the user itself
 * (viewer_user_id equal to user_id) reads every transition with both views,
 * cause and trace id; anyone else (another id, or NULL and 0) reads the
 * public view only (docs/design.md rule 8): the changes of the public view, with
 * the public version and last_seen, self_state equal to state,
 * PRESENCE_CAUSE_WITHHELD and trace id 0. The functions without `_as` are
 * the same with no viewer. */

/* One published transition of a user. Frozen layout. */
typedef struct presence_transition_t {
  uint64_t version;      /* the user's version after it (the viewer's view) */
  int64_t at_ms;         /* when it was published */
  int64_t last_seen_ms;  /* the user's last accepted signal then (the viewer's view) */
  uint64_t trace_id;     /* of the signal or override that caused it; 0: none */
  int32_t previous;      /* presence_state_t, public view */
  int32_t state;         /* presence_state_t, public view (OFFLINE while invisible) */
  int32_t self_state;    /* presence_state_t, the user's own view */
  int32_t cause;         /* presence_cause_t */
} presence_transition_t;

/* The user's transitions with at_ms in [from_ms, to_ms], oldest first:
 * an array of *out_count entries freed with one presence_free(*out_transitions)
 * (NULL when there are none). Neither out-parameter may be NULL.
 * INVALID_ARGUMENT when from_ms is after to_ms; FAILED_PRECONDITION without
 * a history store. */
PRESENCE_EXPORT int presence_engine_history(presence_transition_t** out_transitions,
                                            size_t* out_count, presence_engine_t* engine,
                                            const char* user_id, size_t user_id_len,
                                            int64_t from_ms, int64_t to_ms, char** errmsg);
PRESENCE_EXPORT int presence_engine_history_as(presence_transition_t** out_transitions,
                                               size_t* out_count, presence_engine_t* engine,
                                               const char* user_id, size_t user_id_len,
                                               int64_t from_ms, int64_t to_ms,
                                               const char* viewer_user_id,
                                               size_t viewer_user_id_len, char** errmsg);

/* ---- The per-device audit (docs/design.md section 4) ---- */

/* What happened to one device. The PRESENCE_DEVICE_DEAD_* events end a
 * session's life and say why. */
typedef enum presence_device_event_t {
  PRESENCE_DEVICE_CONNECT = 1,          /* a session became live */
  PRESENCE_DEVICE_GRACE = 2,            /* an abrupt disconnect: the reconnect grace began */
  PRESENCE_DEVICE_DEAD_TIMEOUT = 3,     /* silent past offline_after, probes unanswered */
  PRESENCE_DEVICE_DEAD_AFTER_GRACE = 4, /* abrupt disconnect, no reconnect within the grace */
  PRESENCE_DEVICE_DEAD_ABRUPT = 5,      /* abrupt disconnect of a device already lapsed */
  PRESENCE_DEVICE_DEAD_CLEAN = 6,       /* a clean disconnect */
  PRESENCE_DEVICE_DEAD_DRAINED = 7,     /* the operator drained its gateway */
  PRESENCE_DEVICE_DEAD_REPLACED = 8,    /* a newer session of the same device took over */
  PRESENCE_DEVICE_PROBE_ANSWERED = 9,   /* the host answered a probe of the silent device */
  PRESENCE_DEVICE_PROBE_GIVEN_UP = 10   /* it died for silence, its probes unanswered */
} presence_device_event_t;

/* One transition of a device. Frozen layout. */
typedef struct presence_device_transition_t {
  int64_t at_ms;       /* the engine's clock when it happened */
  uint64_t session_id; /* the session it happened to */
  int32_t event;       /* presence_device_event_t */
  int32_t platform;    /* presence_platform_t, the device's then */
} presence_device_transition_t;

/* The device's transitions with at_ms in [from_ms, to_ms], oldest first: an
 * array of *out_count entries freed with one presence_free(*out_transitions)
 * (NULL when there are none, as for an unknown user or device). Neither
 * out-parameter may be NULL. A device's audit is its user's own: the viewer
 * must be the user (an operator's host asks as the user); any other viewer,
 * NULL included, gets PERMISSION_DENIED whether or not the user or the device
 * exists. INVALID_ARGUMENT for a bad id or from_ms after to_ms;
 * FAILED_PRECONDITION without a history store. */
PRESENCE_EXPORT int presence_engine_device_history(
    presence_device_transition_t** out_transitions, size_t* out_count, presence_engine_t* engine,
    const char* user_id, size_t user_id_len, const char* device_id, size_t device_id_len,
    int64_t from_ms, int64_t to_ms, const char* viewer_user_id, size_t viewer_user_id_len,
    char** errmsg);

/* Time the user spent in each state in [from_ms, to_ms], from the history,
 * in the viewer's view; the part of the window after now, or before 0, is
 * not counted. Frozen layout. */
typedef struct presence_state_durations_t {
  int64_t online_ms;
  int64_t away_ms;
  int64_t dnd_ms;
  int64_t offline_ms;
} presence_state_durations_t;

PRESENCE_EXPORT int presence_engine_time_in_states(presence_state_durations_t* out_durations,
                                                   presence_engine_t* engine,
                                                   const char* user_id, size_t user_id_len,
                                                   int64_t from_ms, int64_t to_ms,
                                                   char** errmsg);
PRESENCE_EXPORT int presence_engine_time_in_states_as(
    presence_state_durations_t* out_durations, presence_engine_t* engine, const char* user_id,
    size_t user_id_len, int64_t from_ms, int64_t to_ms, const char* viewer_user_id,
    size_t viewer_user_id_len, char** errmsg);

/* The user's last accepted signal in the viewer's view: from the engine
 * while it knows the user, else from the history (for users long offline).
 * NOT_FOUND when neither knows the user (for anyone but the user: when its
 * public view never showed it). Works without a history store too (the
 * engine only). */
PRESENCE_EXPORT int presence_engine_last_seen(int64_t* out_last_seen_ms,
                                              presence_engine_t* engine, const char* user_id,
                                              size_t user_id_len, char** errmsg);
PRESENCE_EXPORT int presence_engine_last_seen_as(int64_t* out_last_seen_ms,
                                                 presence_engine_t* engine, const char* user_id,
                                                 size_t user_id_len, const char* viewer_user_id,
                                                 size_t viewer_user_id_len, char** errmsg);

/* Forgets the user everywhere: its devices, overrides and records in the
 * engine, the store (with the next tick) and the history. Its device
 * handles stop working; a later signal starts anew. Erasing an unknown user
 * is PRESENCE_OK. */
PRESENCE_EXPORT int presence_engine_erase(presence_engine_t* engine, const char* user_id,
                                          size_t user_id_len, char** errmsg);

/* The operator's drain of a gateway (a host process going away):
 * disconnects cleanly up to max_devices (> 0) open devices whose signals
 * named `gateway`, and says how many in *out_drained. Call again until it
 * answers 0. NOT_FOUND when no device carries the gateway (none ever did,
 * or they are all gone). */
PRESENCE_EXPORT int presence_engine_drain_gateway(size_t* out_drained, presence_engine_t* engine,
                                                  const char* gateway, size_t gateway_len,
                                                  size_t max_devices, char** errmsg);

/* The operator's rebuild: drops everything the engine holds in memory and
 * reloads it from its store (nothing, for PRESENCE_STORE_MEMORY). Changes
 * not yet written are lost, so tick first. THREAD SAFETY: do not feed the
 * engine (signals, handles, overrides) while it runs. */
PRESENCE_EXPORT int presence_engine_rebuild(presence_engine_t* engine, char** errmsg);

/* ---- Time and operations --------------------------------------------------------- */

/* Fires the timers that are due and publishes the changes (to every fan-out
 * over the engine, which delivers to push sinks on this thread). Call it
 * every flush interval (100 ms). *out_published: change events published. */
PRESENCE_EXPORT int presence_engine_tick(size_t* out_published, presence_engine_t* engine,
                                         char** errmsg);
/* The engine's notion of now: its clock's time. */
PRESENCE_EXPORT int presence_engine_now(int64_t* out_now_ms, const presence_engine_t* engine,
                                        char** errmsg);
/* Every engine metric in Prometheus text format, followed by the file
 * store's (writes, syncs, recovery) when the engine has one: a
 * NUL-terminated buffer of *out_len bytes (out_len may be NULL), freed
 * with presence_free. */
PRESENCE_EXPORT int presence_engine_render_metrics(char** out_text, size_t* out_len,
                                                   const presence_engine_t* engine,
                                                   char** errmsg);

/* ---- Fan-out options (convention 9) --------------------------------------------
 *
 * The fields of presence::FanoutOptions (presence/fanout.h). */
#define PRESENCE_FANOUT_OPTIONS_VERSION 1

typedef struct presence_fanout_options_t {
  uint32_t version;                 /* PRESENCE_FANOUT_OPTIONS_VERSION */
  int64_t flush_interval_ms;        /* 100 */
  size_t max_batch;                 /* 1024: flush sooner when this many changes wait */
  double rate_per_sec;              /* 50: token bucket per subscriber, batches/s; 0: unlimited */
  double burst;                     /* 20 */
  size_t max_outbox_batches;        /* 256: past it a polling subscriber gets a snapshot */
  size_t resume_window;             /* 64 batches kept for resume ... */
  size_t resume_window_bytes;       /* 32768 ... and at most this many bytes */
  size_t interval_mode_members;     /* 1000: larger topics flush at most every ... */
  int64_t large_topic_interval_ms;  /* 1000 */
  size_t counts_only_members;       /* 10000: larger topics carry counts only */
  size_t topic_history;             /* 32 */
  size_t max_subscribers;           /* 1048576 */
  size_t max_list_users;            /* 10000 */
  size_t max_topics_per_subscriber; /* 1000 */
  size_t max_topic_members;         /* 1048576 */
} presence_fanout_options_t;

#define PRESENCE_FANOUT_OPTIONS_INIT                                                     \
  {                                                                                      \
    PRESENCE_FANOUT_OPTIONS_VERSION, 100, 1024, 50.0, 20.0, 256, 64, 32768, 1000, 1000,  \
        10000, 32, 1048576, 10000, 1000, 1048576                                         \
  }

PRESENCE_EXPORT int presence_fanout_options_init(presence_fanout_options_t* options,
                                                 uint32_t version, char** errmsg);

/* ---- Fan-out (docs/design.md section 3) -------------------------------------------------
 *
 * presence_fanout_t delivers an engine's published changes to subscribers
 * as batched diffs (presence::Fanout). A subscriber watches a list of users,
 * topics, or both. Every batch is an encoded presence.v1.DiffBatch
 * (proto/presence/v1/presence.proto): the first is a snapshot of the whole
 * interest set, later ones carry only what changed; `sequence` grows by one
 * per batch and is the cursor for presence_fanout_resume.
 *
 * Delivery is pull (presence_fanout_poll) or push (a sink callback given at
 * subscribe). The fan-out flushes from presence_engine_tick.
 *
 * THREAD SAFETY: every call may come from any thread at once, except
 * presence_fanout_destroy, which must be the last (and must not be made from
 * inside a sink). */
typedef struct presence_fanout_t presence_fanout_t;

/* Creates a fan-out over `engine` and attaches it, so that the engine's
 * ticks feed it. It holds a reference to the engine. options may be NULL. */
PRESENCE_EXPORT int presence_fanout_new(presence_fanout_t** out_fanout,
                                        presence_engine_t* engine,
                                        const presence_fanout_options_t* options, char** errmsg);
/* Detaches from the engine (waiting for a tick in progress), calls
 * sink_payload_free of every open push subscriber, and frees the fan-out.
 * NULL is a no-op. */
PRESENCE_EXPORT void presence_fanout_destroy(presence_fanout_t* fanout);

/* presence_sink_cb receives one encoded DiffBatch for a push subscriber.
 *
 * THREAD: called on the thread running presence_engine_tick (or
 * presence_fanout_resume), with no lock of the library held. Batches to one
 * subscriber come one at a time, in sequence order, as long as the host
 * does not tick and resume at once.
 * OWNERSHIP: `batch` is valid only during the call; copy what you keep.
 * MAY CALL: any function of the engine and fan-out, including
 * presence_fanout_unsubscribe of this subscriber, except
 * presence_engine_tick (FAILED_PRECONDITION) and presence_fanout_destroy. */
typedef void (*presence_sink_cb)(uint64_t subscriber, const char* batch, size_t batch_len,
                                 void* payload);
/* Releases a payload; see presence_subscriber_options_t. */
typedef void (*presence_payload_free_cb)(void* payload);

#define PRESENCE_SUBSCRIBER_OPTIONS_VERSION 1

typedef struct presence_subscriber_options_t {
  uint32_t version; /* PRESENCE_SUBSCRIBER_OPTIONS_VERSION */
  /* When set, the subscriber belongs to this user: watching the user in its
   * list, it sees the user's true state. Empty: a plain watcher. */
  const char* owner_user_id;
  size_t owner_user_id_len;
  /* Push delivery: called with every batch. NULL: pull with
   * presence_fanout_poll (and the two fields below are ignored). */
  presence_sink_cb sink;
  void* sink_payload; /* passed to sink as its last argument */
  /* Optional: called once with sink_payload after the last call to sink,
   * when the subscriber is unsubscribed or the fan-out destroyed (never
   * while a sink call is running). Not called when subscribe fails. */
  presence_payload_free_cb sink_payload_free;
} presence_subscriber_options_t;

#define PRESENCE_SUBSCRIBER_OPTIONS_INIT \
  { PRESENCE_SUBSCRIBER_OPTIONS_VERSION, NULL, 0, NULL, NULL, NULL }

PRESENCE_EXPORT int presence_subscriber_options_init(presence_subscriber_options_t* options,
                                                     uint32_t version, char** errmsg);

/* Opens a subscriber (options may be NULL: a plain pull subscriber) and
 * returns its id (never 0). Its first batch is a snapshot. */
PRESENCE_EXPORT int presence_fanout_subscribe(uint64_t* out_subscriber,
                                              presence_fanout_t* fanout,
                                              const presence_subscriber_options_t* options,
                                              char** errmsg);
/* Closes a subscriber: returns once no sink call to it is running, and
 * none starts after. Called from inside the subscriber's own sink it does
 * not wait for that call, which is the last one. It waits for sink calls
 * running on other threads (presence_fanout_resume), so a sink must not
 * unsubscribe a subscriber whose sink waits for it. NOT_FOUND when unknown
 * or already closed. */
PRESENCE_EXPORT int presence_fanout_unsubscribe(presence_fanout_t* fanout, uint64_t subscriber,
                                                char** errmsg);

/* The subscriber's list. Users added appear in its next batch with their
 * current state; users removed appear once with `removed` set. Replace sets
 * the whole list. RESOURCE_EXHAUSTED past max_list_users. */
PRESENCE_EXPORT int presence_fanout_add_users(presence_fanout_t* fanout, uint64_t subscriber,
                                              const presence_bytes_t* user_ids, size_t count,
                                              char** errmsg);
PRESENCE_EXPORT int presence_fanout_remove_users(presence_fanout_t* fanout, uint64_t subscriber,
                                                 const presence_bytes_t* user_ids, size_t count,
                                                 char** errmsg);
PRESENCE_EXPORT int presence_fanout_replace_users(presence_fanout_t* fanout,
                                                  uint64_t subscriber,
                                                  const presence_bytes_t* user_ids, size_t count,
                                                  char** errmsg);

/* Topics the subscriber watches. Join answers NOT_FOUND for a topic with no
 * members; the next batch carries the whole topic. */
PRESENCE_EXPORT int presence_fanout_join(presence_fanout_t* fanout, uint64_t subscriber,
                                         const char* topic, size_t topic_len, char** errmsg);
PRESENCE_EXPORT int presence_fanout_leave(presence_fanout_t* fanout, uint64_t subscriber,
                                          const char* topic, size_t topic_len, char** errmsg);

/* Topic membership, which the host sets. A topic exists while it has
 * members. */
PRESENCE_EXPORT int presence_fanout_add_members(presence_fanout_t* fanout, const char* topic,
                                                size_t topic_len,
                                                const presence_bytes_t* user_ids, size_t count,
                                                char** errmsg);
PRESENCE_EXPORT int presence_fanout_remove_members(presence_fanout_t* fanout, const char* topic,
                                                   size_t topic_len,
                                                   const presence_bytes_t* user_ids,
                                                   size_t count, char** errmsg);
PRESENCE_EXPORT int presence_fanout_replace_members(presence_fanout_t* fanout, const char* topic,
                                                    size_t topic_len,
                                                    const presence_bytes_t* user_ids,
                                                    size_t count, char** errmsg);

/* Takes the subscriber's oldest undelivered batch. When there is one,
 * *out_has_batch is 1 and *out_batch holds the encoded DiffBatch, *out_len
 * bytes that the library allocated: free them with presence_free. When
 * there is none, the call still answers PRESENCE_OK, with *out_has_batch 0,
 * *out_batch NULL and *out_len 0. out_has_batch may be NULL; out_batch and
 * out_len may not. FAILED_PRECONDITION for a push subscriber. */
PRESENCE_EXPORT int presence_fanout_poll(uint8_t* out_has_batch, char** out_batch,
                                         size_t* out_len, presence_fanout_t* fanout,
                                         uint64_t subscriber, char** errmsg);

/* The subscriber reconnected and last applied batch `cursor` (its
 * sequence; 0: none). The batches after it are delivered again, with the
 * same sequence numbers, when still held, else one snapshot is: to the
 * sink, on this thread, before the call returns, or to the poll queue.
 * INVALID_ARGUMENT for a cursor from the future. */
PRESENCE_EXPORT int presence_fanout_resume(presence_fanout_t* fanout, uint64_t subscriber,
                                           uint64_t cursor, char** errmsg);

/* Fan-out metrics in Prometheus text format, as
 * presence_engine_render_metrics. */
PRESENCE_EXPORT int presence_fanout_render_metrics(char** out_text, size_t* out_len,
                                                   const presence_fanout_t* fanout,
                                                   char** errmsg);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PRESENCE_C_H_ */
