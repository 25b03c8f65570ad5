/* The C ABI test: include/presence/c.h exercised from plain C (C99), linked
 * against libpresence.so exactly as a C host or a binding would use it, on
 * a manual clock. No C++ test framework: each CHECK counts a pass or a
 * failure, and the program prints "N passed, N failed" at the end and exits
 * non-zero when anything failed.
 *
 * Sections: version and status names; option structs (versions 1 to 3);
 * the clock; engine lifecycle; keyed signals, single and batch; handles;
 * overrides; get; tick; fan-out with poll, topics, resume; push sinks with
 * payloads; probes of silent devices (a C prober callback); metrics; lifetimes (destroy in any order); threads (heartbeats,
 * ticks and unsubscribes at once, and no payload freed while its sink runs);
 * limits (flood limit, memory budget); the file store (a durable round trip,
 * folders that cannot be opened); history and operations (history, time in
 * states, last seen, erase, drain, rebuild); bad input (NULL handles and
 * pointers, lengths out of range, invalid enum values, NULL destroys), each
 * answering a clear status and never crashing. */
#define _XOPEN_SOURCE 700 /* pthreads, mkdtemp and nftw, in strict C99 */

#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "presence/c.h"

static int passed = 0;
static int failed = 0;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (cond) {                                                                 \
      ++passed;                                                                 \
    } else {                                                                    \
      ++failed;                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                           \
  } while (0)

/* The message of the last EXPECT, kept for checks on its text. */
static char last_msg[512];
static char* err = NULL;

/* Checks that a call answered `want`, and that *errmsg follows convention
 * 4: NULL on success, a non-empty message otherwise. Frees the message. */
static int expect_at(int got, int want, const char* call, int line) {
  int ok = got == want;
  last_msg[0] = '\0';
  if (want == PRESENCE_OK) {
    ok = ok && err == NULL;
  } else {
    ok = ok && err != NULL && err[0] != '\0';
  }
  if (err != NULL) {
    strncpy(last_msg, err, sizeof last_msg - 1);
    last_msg[sizeof last_msg - 1] = '\0';
  }
  if (ok) {
    ++passed;
  } else {
    ++failed;
    fprintf(stderr, "%s:%d: %s\n  answered %s (%d), expected %s (%d); message: %s\n", __FILE__,
            line, call, presence_status_name(got), got, presence_status_name(want), want,
            err ? err : "(none)");
  }
  presence_free(err);
  err = NULL;
  return ok;
}
#define EXPECT(want, call) expect_at((call), (want), #call, __LINE__)

static int contains(const char* haystack, const char* needle) {
  return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* ---- A small reader of the wire form (presence.v1.DiffBatch) -------------------
 * Enough protobuf to check what a subscriber receives: varints and
 * length-delimited fields; other wire types are skipped. */

typedef struct {
  const unsigned char* p;
  const unsigned char* end;
} reader_t;

static int read_varint(reader_t* r, uint64_t* v) {
  int shift = 0;
  *v = 0;
  while (r->p < r->end && shift < 64) {
    unsigned char b = *r->p++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return 1;
    shift += 7;
  }
  return 0;
}

/* Reads one field: a varint into *v, or bytes into *data and *len. */
static int read_field(reader_t* r, uint32_t* field, uint64_t* v, const unsigned char** data,
                      size_t* len) {
  uint64_t key;
  *data = NULL;
  *len = 0;
  *v = 0;
  if (!read_varint(r, &key)) return 0;
  *field = (uint32_t)(key >> 3);
  switch (key & 7) {
    case 0: return read_varint(r, v);
    case 1: if (r->end - r->p < 8) return 0; r->p += 8; return 1;
    case 5: if (r->end - r->p < 4) return 0; r->p += 4; return 1;
    case 2:
      if (!read_varint(r, v) || *v > (uint64_t)(r->end - r->p)) return 0;
      *data = r->p;
      *len = (size_t)*v;
      r->p += *len;
      return 1;
    default: return 0;
  }
}

#define MAX_ENTRIES 64
typedef struct {
  char user[PRESENCE_MAX_USER_ID_BYTES + 1];
  char topic[PRESENCE_MAX_TOPIC_BYTES + 1]; /* "" for the subscriber's list */
  int state;
  int removed;
} entry_t;

typedef struct {
  int ok;
  uint64_t subscriber;
  uint64_t sequence;
  int snapshot;
  int n;
  entry_t e[MAX_ENTRIES];
} decoded_t;

static void copy_id(char* out, const unsigned char* data, size_t len) {
  if (len > PRESENCE_MAX_USER_ID_BYTES) len = PRESENCE_MAX_USER_ID_BYTES;
  memcpy(out, data, len);
  out[len] = '\0';
}

static int decode_user(const unsigned char* data, size_t len, const char* topic, decoded_t* d) {
  reader_t r;
  entry_t* e;
  uint32_t f;
  uint64_t v;
  const unsigned char* b;
  size_t n;
  if (d->n >= MAX_ENTRIES) return 0;
  e = &d->e[d->n++];
  memset(e, 0, sizeof *e);
  strcpy(e->topic, topic);
  r.p = data;
  r.end = data + len;
  while (r.p < r.end) {
    if (!read_field(&r, &f, &v, &b, &n)) return 0;
    if (f == 1 && b != NULL) copy_id(e->user, b, n);
    if (f == 2 && b == NULL) e->state = (int)v;
    if (f == 6 && b == NULL) e->removed = (int)v;
  }
  return 1;
}

static int decode_section(const unsigned char* data, size_t len, decoded_t* d) {
  char topic[PRESENCE_MAX_TOPIC_BYTES + 1] = "";
  reader_t r;
  uint32_t f;
  uint64_t v;
  const unsigned char* b;
  size_t n;
  /* The topic's name comes first on the wire, but do not rely on it. */
  r.p = data;
  r.end = data + len;
  while (r.p < r.end) {
    if (!read_field(&r, &f, &v, &b, &n)) return 0;
    if (f == 1 && b != NULL) copy_id(topic, b, n);
  }
  r.p = data;
  while (r.p < r.end) {
    if (!read_field(&r, &f, &v, &b, &n)) return 0;
    if (f == 3 && b != NULL && !decode_user(b, n, topic, d)) return 0;
  }
  return 1;
}

static decoded_t decode_batch(const char* bytes, size_t len) {
  decoded_t d;
  reader_t r;
  uint32_t f;
  uint64_t v;
  const unsigned char* b;
  size_t n;
  memset(&d, 0, sizeof d);
  r.p = (const unsigned char*)bytes;
  r.end = r.p + len;
  while (r.p < r.end) {
    if (!read_field(&r, &f, &v, &b, &n)) return d;
    if (f == 1 && b == NULL) d.subscriber = v;
    if (f == 2 && b == NULL) d.sequence = v;
    if (f == 3 && b == NULL) d.snapshot = (int)v;
    if (f == 4 && b != NULL && !decode_user(b, n, "", &d)) return d;
    if (f == 5 && b != NULL && !decode_section(b, n, &d)) return d;
  }
  d.ok = 1;
  return d;
}

/* The state a batch carries for `user` in `topic` ("" for the list), or 0. */
static int state_in(const decoded_t* d, const char* user, const char* topic) {
  int i;
  for (i = 0; i < d->n; ++i) {
    if (strcmp(d->e[i].user, user) == 0 && strcmp(d->e[i].topic, topic) == 0) {
      return d->e[i].removed ? -1 : d->e[i].state;
    }
  }
  return 0;
}

/* ---- Helpers ---------------------------------------------------------------------- */

static presence_bytes_t bytes_of(const char* s) {
  presence_bytes_t b;
  b.data = s;
  b.len = strlen(s);
  return b;
}

static presence_signal_t make_signal(const char* user, const char* device, uint64_t session) {
  presence_signal_t s = PRESENCE_SIGNAL_INIT;
  s.user_id = user;
  s.user_id_len = strlen(user);
  s.device_id = device;
  s.device_id_len = strlen(device);
  s.session_id = session;
  s.platform = PRESENCE_PLATFORM_WEB;
  return s;
}

/* An engine on a manual clock, with no dwell (so every change publishes at
 * the next tick) unless the test wants the defaults. */
typedef struct {
  presence_clock_t* clock;
  presence_engine_t* engine;
} world_t;

static world_t make_world(int64_t min_dwell_ms) {
  world_t w;
  presence_engine_options_t o = PRESENCE_ENGINE_OPTIONS_INIT;
  w.clock = NULL;
  w.engine = NULL;
  EXPECT(PRESENCE_OK, presence_clock_manual_new(&w.clock, 1000000, &err));
  o.clock = w.clock;
  o.min_dwell_ms = min_dwell_ms;
  EXPECT(PRESENCE_OK, presence_engine_new(&w.engine, &o, &err));
  return w;
}

static void free_world(world_t* w) {
  presence_engine_destroy(w->engine);
  presence_clock_destroy(w->clock);
}

/* Moves time forward and ticks; returns how many changes were published. */
static size_t step(world_t* w, int64_t ms) {
  size_t published = 0;
  EXPECT(PRESENCE_OK, presence_clock_advance(w->clock, ms, &err));
  EXPECT(PRESENCE_OK, presence_engine_tick(&published, w->engine, &err));
  return published;
}

/* The state of one user as `viewer` sees it (0 when the call failed). */
static presence_user_presence_t get_one(world_t* w, const char* user, const char* viewer) {
  presence_user_presence_t out;
  presence_user_presence_t* users = NULL;
  presence_bytes_t id = bytes_of(user);
  memset(&out, 0, sizeof out);
  if (EXPECT(PRESENCE_OK, presence_engine_get(&users, w->engine, &id, 1, viewer,
                                              viewer ? strlen(viewer) : 0, &err))) {
    out = users[0];
    out.user_id = NULL; /* it pointed into the freed result */
  }
  presence_free(users);
  return out;
}

/* ---- Sections ----------------------------------------------------------------------- */

static void test_version(void) {
  CHECK(presence_version_number() == PRESENCE_VERSION_NUMBER);
  CHECK(strcmp(presence_version_string(), PRESENCE_VERSION_STRING) == 0);
  CHECK(PRESENCE_VERSION_NUMBER ==
        PRESENCE_VERSION_MAJOR * 10000 + PRESENCE_VERSION_MINOR * 100 + PRESENCE_VERSION_PATCH);
  CHECK(strcmp(presence_status_name(PRESENCE_OK), "OK") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_INVALID_ARGUMENT), "INVALID_ARGUMENT") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_NOT_FOUND), "NOT_FOUND") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_FAILED_PRECONDITION), "FAILED_PRECONDITION") ==
        0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_INTERNAL), "INTERNAL") == 0);
  /* Every absl::StatusCode, with absl's number. */
  CHECK(PRESENCE_ERR_CANCELLED == 1 && PRESENCE_ERR_UNKNOWN == 2 &&
        PRESENCE_ERR_DEADLINE_EXCEEDED == 4 && PRESENCE_ERR_ALREADY_EXISTS == 6 &&
        PRESENCE_ERR_PERMISSION_DENIED == 7 && PRESENCE_ERR_ABORTED == 10 &&
        PRESENCE_ERR_OUT_OF_RANGE == 11 && PRESENCE_ERR_UNIMPLEMENTED == 12 &&
        PRESENCE_ERR_UNAVAILABLE == 14 && PRESENCE_ERR_DATA_LOSS == 15 &&
        PRESENCE_ERR_UNAUTHENTICATED == 16);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_UNAVAILABLE), "UNAVAILABLE") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_DATA_LOSS), "DATA_LOSS") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_PERMISSION_DENIED), "PERMISSION_DENIED") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_ALREADY_EXISTS), "ALREADY_EXISTS") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_ABORTED), "ABORTED") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_OUT_OF_RANGE), "OUT_OF_RANGE") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_CANCELLED), "CANCELLED") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_UNKNOWN), "UNKNOWN") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_UNIMPLEMENTED), "UNIMPLEMENTED") == 0);
  CHECK(strcmp(presence_status_name(PRESENCE_ERR_UNAUTHENTICATED), "UNAUTHENTICATED") == 0);
  CHECK(strcmp(presence_status_name(17), "UNKNOWN") == 0);
  CHECK(strcmp(presence_status_name(12345), "UNKNOWN") == 0);
  CHECK(strcmp(presence_status_name(-1), "UNKNOWN") == 0);
  presence_free(NULL);
}

static void test_options(void) {
  presence_engine_options_t a = PRESENCE_ENGINE_OPTIONS_INIT;
  presence_engine_options_t b;
  presence_fanout_options_t fa = PRESENCE_FANOUT_OPTIONS_INIT;
  presence_fanout_options_t fb;
  presence_subscriber_options_t sa = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  presence_subscriber_options_t sb;

  /* The function fills what the macro does. */
  memset(&b, 0xab, sizeof b);
  EXPECT(PRESENCE_OK, presence_engine_options_init(&b, PRESENCE_ENGINE_OPTIONS_VERSION, &err));
  CHECK(b.version == PRESENCE_ENGINE_OPTIONS_VERSION && a.version == b.version);
  CHECK(b.clock == NULL && b.shards == a.shards);
  CHECK(b.app_interval_ms == 1000 && b.app_offline_after_ms == 4000);
  CHECK(b.inferred_interval_ms == a.inferred_interval_ms &&
        b.inferred_offline_after_ms == a.inferred_offline_after_ms);
  CHECK(b.manual_interval_ms == a.manual_interval_ms &&
        b.manual_offline_after_ms == a.manual_offline_after_ms);
  CHECK(b.reconnect_grace_ms == 1500 && b.min_dwell_ms == 1000);
  CHECK(b.max_future_skew_ms == a.max_future_skew_ms &&
        b.max_signal_age_ms == a.max_signal_age_ms);
  CHECK(b.dead_retention_ms == a.dead_retention_ms && b.user_retention_ms == a.user_retention_ms);
  CHECK(b.false_offline_window_ms == a.false_offline_window_ms);
  CHECK(b.max_devices_per_user == 64 && b.max_overrides_per_user == 16);
  CHECK(b.inferred_can_be_online == 0 && b.override_requires_live_device == 1);
  /* Version 2. */
  CHECK(PRESENCE_ENGINE_OPTIONS_VERSION == 3);
  CHECK(b.max_signals_per_device_per_sec == 20 && a.max_signals_per_device_per_sec == 20);
  CHECK(b.store == PRESENCE_STORE_MEMORY && a.store == PRESENCE_STORE_MEMORY);
  CHECK(b.memory_budget_bytes == 0 && a.memory_budget_bytes == 0);
  CHECK(b.file_dir == NULL && b.file_dir_len == 0 && a.file_dir == NULL);
  CHECK(b.file_sync == PRESENCE_FILE_SYNC_EVERY_WRITE && a.file_sync == b.file_sync);
  CHECK(b.file_sync_interval_ms == 100 && a.file_sync_interval_ms == 100);
  /* Version 3. */
  CHECK(b.prober == NULL && b.prober_payload == NULL && a.prober == NULL);
  CHECK(b.probe_margin_ms == 1000 && b.probe_retry_ms == 500 && a.probe_retry_ms == 500);
  CHECK(b.max_probes == 4 && a.max_probes == 4);
  CHECK(b.max_probes_per_gateway_per_sec == 1000 && a.max_probes_per_gateway_per_sec == 1000);
  /* Version 2 writes up to version 2's fields only. */
  memset(&b, 0xab, sizeof b);
  EXPECT(PRESENCE_OK, presence_engine_options_init(&b, 2, &err));
  CHECK(b.version == 2 && b.file_sync == PRESENCE_FILE_SYNC_EVERY_WRITE);
  CHECK(b.max_probes == (int32_t)0xabababab);
  /* Version 1 writes version 1's fields only: a caller built against the
   * older header has no room for the others. */
  memset(&b, 0xab, sizeof b);
  EXPECT(PRESENCE_OK, presence_engine_options_init(&b, 1, &err));
  CHECK(b.version == 1 && b.override_requires_live_device == 1 && b.max_devices_per_user == 64);
  CHECK(b.max_signals_per_device_per_sec == (int32_t)0xabababab);
  CHECK(b.file_sync == (int32_t)0xabababab && b.memory_budget_bytes != 0);

  memset(&fb, 0, sizeof fb);
  EXPECT(PRESENCE_OK, presence_fanout_options_init(&fb, PRESENCE_FANOUT_OPTIONS_VERSION, &err));
  CHECK(fb.version == fa.version && fb.flush_interval_ms == 100 && fb.max_batch == fa.max_batch);
  CHECK(fb.rate_per_sec == fa.rate_per_sec && fb.burst == fa.burst);
  CHECK(fb.resume_window == fa.resume_window && fb.max_topic_members == fa.max_topic_members);

  memset(&sb, 0x5a, sizeof sb);
  EXPECT(PRESENCE_OK,
         presence_subscriber_options_init(&sb, PRESENCE_SUBSCRIBER_OPTIONS_VERSION, &err));
  CHECK(sb.version == sa.version && sb.owner_user_id == NULL && sb.owner_user_id_len == 0);
  CHECK(sb.sink == NULL && sb.sink_payload == NULL && sb.sink_payload_free == NULL);

  /* Unknown versions and NULL structs. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_options_init(&b, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_options_init(&b, 99, &err));
  CHECK(contains(last_msg, "version 99") && contains(last_msg, "1 to 3"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_options_init(&b, 4, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_options_init(NULL, PRESENCE_ENGINE_OPTIONS_VERSION, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_options_init(&fb, 2, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_options_init(NULL, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_subscriber_options_init(&sb, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_subscriber_options_init(NULL, 1, &err));
  /* errmsg may be NULL: the code alone. */
  CHECK(presence_engine_options_init(NULL, 1, NULL) == PRESENCE_ERR_INVALID_ARGUMENT);
}

static void test_clock(void) {
  presence_clock_t* c = NULL;
  int64_t now = -1;
  EXPECT(PRESENCE_OK, presence_clock_manual_new(&c, 5000, &err));
  CHECK(c != NULL);
  EXPECT(PRESENCE_OK, presence_clock_now(&now, c, &err));
  CHECK(now == 5000);
  EXPECT(PRESENCE_OK, presence_clock_advance(c, 250, &err));
  EXPECT(PRESENCE_OK, presence_clock_now(&now, c, &err));
  CHECK(now == 5250);
  EXPECT(PRESENCE_OK, presence_clock_set(c, 9000, &err));
  EXPECT(PRESENCE_OK, presence_clock_now(&now, c, &err));
  CHECK(now == 9000);
  EXPECT(PRESENCE_OK, presence_clock_set(c, 9000, &err)); /* the same time is fine */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_clock_set(c, 8999, &err));
  CHECK(contains(last_msg, "never goes back"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_clock_advance(c, -1, &err));
  EXPECT(PRESENCE_OK, presence_clock_now(&now, c, &err));
  CHECK(now == 9000); /* failed calls changed nothing */
  EXPECT(PRESENCE_OK, presence_clock_now(NULL, c, &err));
  presence_clock_destroy(c);
}

static void test_engine_lifecycle(void) {
  presence_engine_t* e = NULL;
  presence_engine_options_t o = PRESENCE_ENGINE_OPTIONS_INIT;
  presence_clock_t* c = NULL;
  int64_t now = 0;

  /* NULL options: every default, on the system clock. */
  EXPECT(PRESENCE_OK, presence_engine_new(&e, NULL, &err));
  CHECK(e != NULL);
  EXPECT(PRESENCE_OK, presence_engine_now(&now, e, &err));
  CHECK(now > 1500000000000LL); /* ms since 1970: after 2017 */
  presence_engine_destroy(e);

  /* Options out of range: a clear message, no engine. */
  e = (presence_engine_t*)&o; /* must be overwritten */
  o.app_interval_ms = 0;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(e == NULL);
  CHECK(contains(last_msg, "interval_ms"));
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.shards = 1000;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "shards"));
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.version = 0; /* a zeroed struct: not initialised */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "PRESENCE_ENGINE_OPTIONS_INIT"));
  o.version = PRESENCE_ENGINE_OPTIONS_VERSION + 1; /* a newer header than the library */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));

  /* Version 2's fields out of range; each a clear message, no engine. */
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.store = 0;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(e == NULL && contains(last_msg, "unknown store value 0"));
  o.store = 3;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.file_sync = 4;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "unknown file_sync value 4"));
  o.file_sync = -1;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.file_dir = "/tmp/x";
  o.file_dir_len = 6; /* a folder, but the memory store */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "PRESENCE_STORE_FILE"));
  o.store = PRESENCE_STORE_FILE;
  o.file_dir = NULL; /* a length with no bytes */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "file_dir is NULL"));
  o.file_dir_len = 0; /* the file store with no folder */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "file_dir is empty"));
  o.file_dir = "/tmp/a\0b";
  o.file_dir_len = 8;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "NUL"));
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.max_signals_per_device_per_sec = 70000;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(contains(last_msg, "max_signals_per_device_per_sec"));
  o.max_signals_per_device_per_sec = -1;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.memory_budget_bytes = -1;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&e, &o, &err));
  CHECK(e == NULL && contains(last_msg, "memory_budget_bytes"));

  /* A version 1 struct: version 2's fields are not read, whatever they
   * hold (a caller built against the older header has no such fields). */
  memset(&o, 0x7f, sizeof o);
  EXPECT(PRESENCE_OK, presence_engine_options_init(&o, 1, &err));
  o.clock = NULL;
  EXPECT(PRESENCE_OK, presence_engine_new(&e, &o, &err));
  presence_engine_destroy(e);

  /* A manual clock, released by the caller before the engine: the engine
   * holds its own reference. */
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  EXPECT(PRESENCE_OK, presence_clock_manual_new(&c, 42000, &err));
  o.clock = c;
  EXPECT(PRESENCE_OK, presence_engine_new(&e, &o, &err));
  EXPECT(PRESENCE_OK, presence_clock_advance(c, 8000, &err));
  presence_clock_destroy(c);
  EXPECT(PRESENCE_OK, presence_engine_now(&now, e, &err));
  CHECK(now == 50000);
  presence_engine_destroy(e);
}

static void test_signals(void) {
  world_t w = make_world(0);
  presence_signal_t s = make_signal("alice", "laptop", 2);
  presence_signal_t batch[8];
  presence_batch_result_t r;
  presence_user_presence_t p;
  const char nul_id[] = {'n', '\0', 'l'};

  EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
  CHECK(step(&w, 100) == 1);
  p = get_one(&w, "alice", NULL);
  CHECK(p.known && p.state == PRESENCE_STATE_ONLINE && p.live_devices == 1);
  CHECK(p.devices[PRESENCE_PLATFORM_WEB - 1] == 1);

  /* An older session is stale: counted and dropped. */
  s.session_id = 1;
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION, presence_engine_signal(w.engine, &s, &err));
  CHECK(contains(last_msg, "stale") || contains(last_msg, "session"));
  /* IDLE makes alice AWAY. */
  s.session_id = 2;
  s.activity = PRESENCE_ACTIVITY_IDLE;
  EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
  CHECK(step(&w, 100) == 1);
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_AWAY);

  /* A batch: all applied. */
  batch[0] = make_signal("bob", "phone", 1);
  batch[0].platform = PRESENCE_PLATFORM_MOBILE;
  batch[1] = make_signal("carol", "desk", 1);
  batch[1].platform = PRESENCE_PLATFORM_DESKTOP;
  batch[1].gateway = "gw-1";
  batch[1].gateway_len = 4;
  batch[1].trace_id = 77;
  batch[2] = make_signal("alice", "laptop", 2);
  memset(&r, 0xff, sizeof r);
  EXPECT(PRESENCE_OK, presence_engine_signal_batch(&r, w.engine, batch, 3, &err));
  CHECK(r.applied == 3 && r.stale == 0 && r.rejected == 0 && r.first_error == PRESENCE_OK);
  CHECK(step(&w, 100) == 3);
  CHECK(get_one(&w, "bob", NULL).devices[PRESENCE_PLATFORM_MOBILE - 1] == 1);
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_ONLINE);

  /* A batch with bad signals among good ones: the good ones are applied,
   * the first failure is the answer, the counts say the rest. */
  batch[0] = make_signal("dave", "tv", 1);
  batch[1] = make_signal("erin", "tab", 1);
  batch[1].platform = 0; /* zeroed: unspecified */
  batch[2] = make_signal("frank", "pc", 1);
  batch[2].user_id = NULL; /* NULL with a length */
  batch[3] = make_signal("alice", "laptop", 1); /* stale */
  batch[4] = make_signal("gina", "pc", 1);
  batch[4].source = 1000; /* does not fit the C++ enum */
  batch[5] = make_signal("hank", "pc", 1);
  batch[5].activity = -3;
  batch[6] = make_signal("ivan", "pc", 0); /* session 0 */
  batch[7] = make_signal("judy", "pc", 1);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_signal_batch(&r, w.engine, batch, 8, &err));
  CHECK(contains(last_msg, "platform"));
  CHECK(r.applied == 2 && r.stale == 1 && r.rejected == 5);
  CHECK(r.first_error == PRESENCE_ERR_INVALID_ARGUMENT);
  CHECK(r.applied + r.stale + r.rejected == 8);
  step(&w, 100);
  CHECK(get_one(&w, "dave", NULL).state == PRESENCE_STATE_ONLINE);
  CHECK(get_one(&w, "judy", NULL).state == PRESENCE_STATE_ONLINE);
  CHECK(!get_one(&w, "erin", NULL).known && !get_one(&w, "gina", NULL).known);

  /* The first failure is the first in order, even when C rejects it. */
  batch[0] = make_signal("kim", "pc", 1);
  batch[0].device_id = NULL;
  batch[1] = make_signal("leo", "pc", 1);
  batch[1].platform = 9;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_signal_batch(&r, w.engine, batch, 2, &err));
  CHECK(contains(last_msg, "signals[0]") && contains(last_msg, "device_id"));
  CHECK(r.rejected == 2 && r.applied == 0);

  /* Only stale ones: FAILED_PRECONDITION. */
  batch[0] = make_signal("alice", "laptop", 1);
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION,
         presence_engine_signal_batch(&r, w.engine, batch, 1, &err));
  CHECK(r.stale == 1 && r.first_error == PRESENCE_ERR_FAILED_PRECONDITION);

  /* An empty batch, and counts not wanted. */
  EXPECT(PRESENCE_OK, presence_engine_signal_batch(&r, w.engine, NULL, 0, &err));
  CHECK(r.applied == 0 && r.stale == 0 && r.rejected == 0);
  batch[0] = make_signal("mia", "pc", 1);
  EXPECT(PRESENCE_OK, presence_engine_signal_batch(NULL, w.engine, batch, 1, &err));

  /* Ids are bytes: a NUL inside is fine. */
  s = make_signal("x", "pc", 1);
  s.user_id = nul_id;
  s.user_id_len = sizeof nul_id;
  EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
  {
    presence_bytes_t id;
    presence_user_presence_t* users = NULL;
    id.data = nul_id;
    id.len = sizeof nul_id;
    EXPECT(PRESENCE_OK, presence_engine_get(&users, w.engine, &id, 1, NULL, 0, &err));
    CHECK(users != NULL && users[0].known && users[0].user_id_len == 3 &&
          memcmp(users[0].user_id, nul_id, 3) == 0);
    presence_free(users);
  }

  /* Timestamps: from the future beyond the skew, rejected. */
  s = make_signal("nia", "pc", 1);
  s.timestamp_ms = 1000000 + 10 * 1000 * 1000;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, &s, &err));
  CHECK(contains(last_msg, "ahead"));

  /* Keyed disconnect: clean is at once. */
  EXPECT(PRESENCE_OK, presence_engine_disconnect_device(w.engine, "bob", 3, "phone", 5, 0,
                                                        PRESENCE_DISCONNECT_CLEAN, &err));
  step(&w, 100);
  CHECK(get_one(&w, "bob", NULL).state == PRESENCE_STATE_OFFLINE);
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_disconnect_device(
                                     w.engine, "bob", 3, "phone", 5, 0,
                                     PRESENCE_DISCONNECT_CLEAN, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_disconnect_device(
                                     w.engine, "nobody", 6, "pc", 2, 0,
                                     PRESENCE_DISCONNECT_ABRUPT, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_disconnect_device(w.engine, "carol", 5, "desk", 4, 0, 3, &err));
  CHECK(contains(last_msg, "disconnect kind"));
  free_world(&w);
}

static void test_handles(void) {
  world_t w = make_world(0);
  presence_signal_t s = make_signal("alice", "laptop", 1);
  uint64_t h = 0, h2 = 0;
  presence_user_presence_t p;

  EXPECT(PRESENCE_OK, presence_engine_connect(&h, w.engine, &s, &err));
  CHECK(h != 0);
  CHECK(step(&w, 100) == 1);
  /* Heartbeats keep the device live past offline_after (4 s). */
  {
    int i;
    for (i = 0; i < 10; ++i) {
      EXPECT(PRESENCE_OK, presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_ACTIVE,
                                               PRESENCE_SOURCE_APP, &err));
      step(&w, 1000);
    }
  }
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_ONLINE);
  EXPECT(PRESENCE_OK, presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_IDLE,
                                           PRESENCE_SOURCE_MANUAL, &err));
  step(&w, 100);
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_AWAY);
  EXPECT(PRESENCE_OK, presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_ACTIVE,
                                           PRESENCE_SOURCE_MANUAL, &err));
  step(&w, 100);

  /* Bad values on the hot path. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat(w.engine, h, 0, PRESENCE_SOURCE_APP, &err));
  CHECK(contains(last_msg, "activity"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_ACTIVE, 4, &err));
  CHECK(contains(last_msg, "source"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat(w.engine, h, 257, PRESENCE_SOURCE_APP, &err));
  CHECK(contains(last_msg, "257"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_ACTIVE, INT_MIN, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_beat(w.engine, 0, PRESENCE_ACTIVITY_ACTIVE,
                                                      PRESENCE_SOURCE_APP, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND,
         presence_engine_beat(w.engine, 0xdeadbeefdeadbeefULL, PRESENCE_ACTIVITY_ACTIVE,
                              PRESENCE_SOURCE_APP, &err));
  CHECK(presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP, NULL) ==
        PRESENCE_OK);

  /* An abrupt disconnect keeps the user online through the grace (1.5 s). */
  EXPECT(PRESENCE_OK, presence_engine_disconnect(w.engine, h, PRESENCE_DISCONNECT_ABRUPT, &err));
  step(&w, 1000);
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_ONLINE);
  /* A reconnect inside the grace: a new session and a new handle. */
  s.session_id = 2;
  EXPECT(PRESENCE_OK, presence_engine_connect(&h2, w.engine, &s, &err));
  CHECK(h2 != 0);
  step(&w, 2000);
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_ONLINE);
  /* The old handle is closed. */
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_ACTIVE,
                                                      PRESENCE_SOURCE_APP, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_disconnect(w.engine, h2, 0, &err));
  EXPECT(PRESENCE_OK, presence_engine_disconnect(w.engine, h2, PRESENCE_DISCONNECT_CLEAN, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND,
         presence_engine_disconnect(w.engine, h2, PRESENCE_DISCONNECT_CLEAN, &err));
  step(&w, 100);
  p = get_one(&w, "alice", NULL);
  CHECK(p.known && p.state == PRESENCE_STATE_OFFLINE && p.live_devices == 0);
  CHECK(p.last_seen_ms > 0 && p.freshness_ms >= 100);

  /* Connect answers like signal on bad input, and leaves the handle 0. */
  s.session_id = 0;
  h = 99;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_connect(&h, w.engine, &s, &err));
  CHECK(h == 0 && contains(last_msg, "session_id"));
  /* No handle wanted. */
  s.session_id = 3;
  EXPECT(PRESENCE_OK, presence_engine_connect(NULL, w.engine, &s, &err));
  free_world(&w);
}

static void test_beat_many(void) {
  world_t w = make_world(0);
  presence_signal_t s = make_signal("alice", "laptop", 1);
  presence_batch_result_t r;
  uint64_t hs[1100];
  size_t i;

  EXPECT(PRESENCE_OK, presence_engine_connect(&hs[0], w.engine, &s, &err));
  s = make_signal("bob", "phone", 1);
  EXPECT(PRESENCE_OK, presence_engine_connect(&hs[1], w.engine, &s, &err));
  /* More handles than one chunk of the call. */
  for (i = 2; i < 1100; ++i) {
    char user[16];
    snprintf(user, sizeof user, "user-%u", (unsigned)i);
    s = make_signal(user, "web", 1);
    EXPECT(PRESENCE_OK, presence_engine_connect(&hs[i], w.engine, &s, &err));
  }
  step(&w, 100);
  for (i = 0; i < 6; ++i) {
    EXPECT(PRESENCE_OK, presence_engine_beat_many(&r, w.engine, hs, 1100, PRESENCE_ACTIVITY_ACTIVE,
                                                  PRESENCE_SOURCE_APP, &err));
    CHECK(r.applied == 1100 && r.stale == 0 && r.rejected == 0 && r.first_error == PRESENCE_OK);
    step(&w, 1000);
  }
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_ONLINE);
  EXPECT(PRESENCE_OK, presence_engine_beat_many(NULL, w.engine, hs + 1, 1, PRESENCE_ACTIVITY_IDLE,
                                                PRESENCE_SOURCE_MANUAL, &err));
  step(&w, 100);
  CHECK(get_one(&w, "bob", NULL).state == PRESENCE_STATE_AWAY);

  /* A closed handle among good ones: NOT_FOUND first, the rest applied. */
  EXPECT(PRESENCE_OK, presence_engine_disconnect(w.engine, hs[0], PRESENCE_DISCONNECT_CLEAN, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND,
         presence_engine_beat_many(&r, w.engine, hs, 4, PRESENCE_ACTIVITY_IDLE,
                                   PRESENCE_SOURCE_MANUAL, &err));
  CHECK(r.applied == 3 && r.rejected == 1 && r.first_error == PRESENCE_ERR_NOT_FOUND);

  /* An unknown activity or source rejects every beat. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat_many(&r, w.engine, hs + 1, 2, 9, PRESENCE_SOURCE_APP, &err));
  CHECK(contains(last_msg, "activity") && r.applied == 0 && r.rejected == 2);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat_many(&r, w.engine, hs + 1, 1, PRESENCE_ACTIVITY_ACTIVE, 0, &err));
  CHECK(contains(last_msg, "source") && r.applied == 0 && r.rejected == 1);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat_many(&r, w.engine, hs + 1, 1, PRESENCE_ACTIVITY_ACTIVE, 1000, &err));
  CHECK(contains(last_msg, "source") && r.applied + r.stale + r.rejected == 0);
  /* Invalid calls apply and count nothing. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat_many(&r, w.engine, NULL, 3, PRESENCE_ACTIVITY_ACTIVE,
                                   PRESENCE_SOURCE_APP, &err));
  CHECK(contains(last_msg, "handles is NULL"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_beat_many(&r, NULL, hs, 1, PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP,
                                   &err));
  EXPECT(PRESENCE_OK, presence_engine_beat_many(&r, w.engine, NULL, 0, PRESENCE_ACTIVITY_ACTIVE,
                                                PRESENCE_SOURCE_APP, &err));
  CHECK(r.applied == 0);
  free_world(&w);
}

static void test_overrides(void) {
  world_t w = make_world(0);
  presence_signal_t s = make_signal("alice", "laptop", 1);
  uint64_t dnd = 0, inv = 0, id = 0;
  size_t removed = 99;
  presence_override_t* list = NULL;
  size_t n = 99;
  presence_user_presence_t p;
  int64_t now = 0;

  EXPECT(PRESENCE_OK, presence_engine_connect(NULL, w.engine, &s, &err));
  step(&w, 100);
  EXPECT(PRESENCE_OK, presence_engine_now(&now, w.engine, &err));

  EXPECT(PRESENCE_OK, presence_engine_set_override(&dnd, w.engine, "alice", 5,
                                                   PRESENCE_OVERRIDE_DND, 0, 7, &err));
  CHECK(dnd != 0);
  /* get is exact at once; get_published follows the ticks. */
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_DND);
  {
    presence_user_presence_t* users = NULL;
    presence_bytes_t idb = bytes_of("alice");
    EXPECT(PRESENCE_OK, presence_engine_get_published(&users, w.engine, &idb, 1, NULL, 0, &err));
    CHECK(users != NULL && users[0].state == PRESENCE_STATE_ONLINE);
    presence_free(users);
    step(&w, 100);
    EXPECT(PRESENCE_OK, presence_engine_get_published(&users, w.engine, &idb, 1, NULL, 0, &err));
    CHECK(users != NULL && users[0].state == PRESENCE_STATE_DND && users[0].version > 0);
    presence_free(users);
  }
  p = get_one(&w, "alice", NULL);
  CHECK(p.has_override && p.override_state == PRESENCE_OVERRIDE_DND && p.override_until_ms == 0);

  /* Invisible, timed, over DND: others see OFFLINE, alice sees herself. */
  EXPECT(PRESENCE_OK,
         presence_engine_set_override(&inv, w.engine, "alice", 5, PRESENCE_OVERRIDE_INVISIBLE,
                                      now + 60000, 0, &err));
  step(&w, 100);
  p = get_one(&w, "alice", "bob");
  CHECK(p.state == PRESENCE_STATE_OFFLINE && !p.has_override && p.live_devices == 0);
  p = get_one(&w, "alice", "alice");
  CHECK(p.state != PRESENCE_STATE_OFFLINE && p.has_override &&
        p.override_state == PRESENCE_OVERRIDE_INVISIBLE && p.override_until_ms == now + 60000);

  EXPECT(PRESENCE_OK, presence_engine_list_overrides(&list, &n, w.engine, "alice", 5, &err));
  CHECK(n == 2 && list != NULL);
  if (n == 2 && list != NULL) {
    CHECK(list[0].id == dnd && list[0].state == PRESENCE_OVERRIDE_DND && list[0].until_ms == 0);
    CHECK(list[1].id == inv && list[1].state == PRESENCE_OVERRIDE_INVISIBLE &&
          list[1].until_ms == now + 60000 && list[1].set_at_ms >= now);
  }
  presence_free(list);

  /* Revoke the invisible one: DND shows again. */
  EXPECT(PRESENCE_OK, presence_engine_revoke_override(w.engine, "alice", 5, inv, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_revoke_override(w.engine, "alice", 5, inv, &err));
  step(&w, 100);
  CHECK(get_one(&w, "alice", "bob").state == PRESENCE_STATE_DND);

  /* Clear, and the operator's bulk revoke. */
  EXPECT(PRESENCE_OK, presence_engine_clear_overrides(&removed, w.engine, "alice", 5, &err));
  CHECK(removed == 1);
  EXPECT(PRESENCE_OK, presence_engine_set_override(&id, w.engine, "alice", 5,
                                                   PRESENCE_OVERRIDE_AWAY, 0, 0, &err));
  EXPECT(PRESENCE_OK, presence_engine_set_override(NULL, w.engine, "bob", 3,
                                                   PRESENCE_OVERRIDE_ONLINE, 0, 0, &err));
  EXPECT(PRESENCE_OK, presence_engine_revoke_overrides_set_between(&removed, w.engine, 0,
                                                                   INT64_MAX, &err));
  CHECK(removed == 2);
  list = (presence_override_t*)&n;
  EXPECT(PRESENCE_OK, presence_engine_list_overrides(&list, &n, w.engine, "alice", 5, &err));
  CHECK(n == 0 && list == NULL);
  step(&w, 100);
  CHECK(get_one(&w, "alice", NULL).state == PRESENCE_STATE_ONLINE);

  /* Bad input. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(&id, w.engine, "alice", 5, 0, 0, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(&id, w.engine, "alice", 5, 5, 0, 0, &err));
  CHECK(contains(last_msg, "override state"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(&id, w.engine, "alice", 5, 1 << 20, 0, 0, &err));
  CHECK(id == 0);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(&id, w.engine, "alice", 5, PRESENCE_OVERRIDE_DND, 1, 0,
                                      &err)); /* ends in the past */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(&id, w.engine, "", 0, PRESENCE_OVERRIDE_DND, 0, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_list_overrides(&list, NULL, w.engine,
                                                                       "alice", 5, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_list_overrides(NULL, &n, w.engine,
                                                                       "alice", 5, &err));
  free_world(&w);
}

static void test_get(void) {
  world_t w = make_world(0);
  presence_signal_t s = make_signal("alice", "laptop", 1);
  presence_bytes_t ids[5];
  presence_user_presence_t* users = NULL;
  char long_id[PRESENCE_MAX_USER_ID_BYTES + 1];

  memset(long_id, 'x', sizeof long_id);
  EXPECT(PRESENCE_OK, presence_engine_connect(NULL, w.engine, &s, &err));
  s = make_signal("bob", "phone", 1);
  s.platform = PRESENCE_PLATFORM_MOBILE;
  s.activity = PRESENCE_ACTIVITY_IDLE;
  EXPECT(PRESENCE_OK, presence_engine_connect(NULL, w.engine, &s, &err));
  step(&w, 100);

  ids[0] = bytes_of("bob");
  ids[1] = bytes_of("nobody");
  ids[2] = bytes_of("");
  ids[3].data = long_id; /* one byte too long */
  ids[3].len = sizeof long_id;
  ids[4] = bytes_of("alice");
  EXPECT(PRESENCE_OK, presence_engine_get(&users, w.engine, ids, 5, NULL, 0, &err));
  CHECK(users != NULL);
  if (users != NULL) {
    CHECK(users[0].known && users[0].state == PRESENCE_STATE_AWAY);
    CHECK(users[0].user_id_len == 3 && memcmp(users[0].user_id, "bob", 3) == 0);
    CHECK(users[0].user_id[3] == '\0'); /* NUL-terminated for convenience */
    CHECK(users[0].devices[PRESENCE_PLATFORM_MOBILE - 1] == 1 && users[0].live_devices == 1);
    CHECK(users[0].version > 0 && users[0].last_seen_ms == 1000000);
    CHECK(users[0].freshness_ms == 100);
    CHECK(!users[1].known && users[1].state == PRESENCE_STATE_OFFLINE);
    CHECK(users[1].user_id_len == 6 && strcmp(users[1].user_id, "nobody") == 0);
    CHECK(!users[2].known && users[2].user_id_len == 0);
    CHECK(!users[3].known && users[3].user_id_len == 0);
    CHECK(users[4].known && users[4].state == PRESENCE_STATE_ONLINE);
    CHECK(strcmp(users[4].user_id, "alice") == 0);
    CHECK(!users[4].has_override && users[4].override_state == 0);
  }
  presence_free(users);

  /* No ids: nothing allocated. */
  users = (presence_user_presence_t*)ids;
  EXPECT(PRESENCE_OK, presence_engine_get(&users, w.engine, NULL, 0, NULL, 0, &err));
  CHECK(users == NULL);
  /* Bad input. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_get(&users, w.engine, NULL, 2, NULL, 0, &err));
  CHECK(users == NULL && contains(last_msg, "user_ids"));
  ids[1].data = NULL;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_get(&users, w.engine, ids, 2, NULL, 0, &err));
  CHECK(contains(last_msg, "user_ids[1]"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_get(&users, w.engine, ids, 1, NULL, 3, &err));
  CHECK(contains(last_msg, "viewer_user_id"));
  /* A viewer id past the limit is bad input, as any id (and is not read). */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_get(&users, w.engine, ids, 1, long_id,
                                                            sizeof long_id, &err));
  CHECK(users == NULL && contains(last_msg, "viewer_user_id is 129 bytes"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_get_published(&users, w.engine, ids, 1, long_id, SIZE_MAX, &err));
  CHECK(users == NULL && contains(last_msg, "viewer_user_id"));
  EXPECT(PRESENCE_OK, presence_engine_get(&users, w.engine, ids, 1, long_id,
                                          PRESENCE_MAX_USER_ID_BYTES, &err));
  presence_free(users);
  users = NULL;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_get(&users, w.engine, ids, SIZE_MAX / 2, NULL, 0, &err));
  CHECK(contains(last_msg, "too large"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_get(NULL, w.engine, ids, 1, NULL, 0, &err));
  free_world(&w);
}

/* ---- Fan-out ------------------------------------------------------------------------ */

/* Polls one batch and decodes it; has = 0 when there was none. */
static decoded_t poll_one(presence_fanout_t* f, uint64_t sub, int* has) {
  char* bytes = NULL;
  size_t len = 0;
  uint8_t got = 2;
  decoded_t d;
  memset(&d, 0, sizeof d);
  *has = 0;
  if (EXPECT(PRESENCE_OK, presence_fanout_poll(&got, &bytes, &len, f, sub, &err))) {
    *has = got;
    if (got) {
      CHECK(bytes != NULL && len > 0);
      d = decode_batch(bytes, len);
      CHECK(d.ok && d.subscriber == sub);
    } else {
      CHECK(bytes == NULL && len == 0);
    }
  }
  presence_free(bytes);
  return d;
}

static void test_fanout_poll(void) {
  world_t w = make_world(0);
  presence_fanout_t* f = NULL;
  presence_fanout_options_t fo = PRESENCE_FANOUT_OPTIONS_INIT;
  presence_subscriber_options_t so = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  presence_signal_t s;
  presence_bytes_t friends[2], team[3];
  uint64_t sub = 0, sub2 = 0, h = 0;
  decoded_t d;
  int has = 0;
  uint64_t seq;

  fo.rate_per_sec = 0; /* no throttling in this test */
  EXPECT(PRESENCE_OK, presence_fanout_new(&f, w.engine, &fo, &err));
  CHECK(f != NULL);

  s = make_signal("alice", "laptop", 1);
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, w.engine, &s, &err));
  s = make_signal("carol", "desk", 1);
  EXPECT(PRESENCE_OK, presence_engine_connect(NULL, w.engine, &s, &err));
  step(&w, 100);

  so.owner_user_id = "bob";
  so.owner_user_id_len = 3;
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sub, f, &so, &err));
  CHECK(sub != 0);
  friends[0] = bytes_of("alice");
  friends[1] = bytes_of("dave");
  EXPECT(PRESENCE_OK, presence_fanout_add_users(f, sub, friends, 2, &err));

  /* Nothing before a tick. */
  d = poll_one(f, sub, &has);
  CHECK(!has);
  step(&w, 100);
  d = poll_one(f, sub, &has);
  CHECK(has && d.snapshot && d.sequence == 1);
  CHECK(state_in(&d, "alice", "") == PRESENCE_STATE_ONLINE);
  CHECK(state_in(&d, "dave", "") == 0); /* never published: not in the view at all */
  d = poll_one(f, sub, &has);
  CHECK(!has);

  /* A topic. */
  team[0] = bytes_of("alice");
  team[1] = bytes_of("carol");
  team[2] = bytes_of("erin");
  EXPECT(PRESENCE_OK, presence_fanout_add_members(f, "team-1", 6, team, 3, &err));
  EXPECT(PRESENCE_OK, presence_fanout_join(f, sub, "team-1", 6, &err));
  step(&w, 100);
  d = poll_one(f, sub, &has);
  CHECK(has && !d.snapshot && d.sequence == 2);
  CHECK(state_in(&d, "carol", "team-1") == PRESENCE_STATE_ONLINE);
  CHECK(state_in(&d, "erin", "team-1") == 0); /* never published */

  /* A change: alice goes DND; the list and the topic both carry it. */
  EXPECT(PRESENCE_OK, presence_engine_set_override(NULL, w.engine, "alice", 5,
                                                   PRESENCE_OVERRIDE_DND, 0, 0, &err));
  step(&w, 100);
  d = poll_one(f, sub, &has);
  CHECK(has && d.sequence == 3);
  CHECK(state_in(&d, "alice", "") == PRESENCE_STATE_DND);
  CHECK(state_in(&d, "alice", "team-1") == PRESENCE_STATE_DND);
  CHECK(state_in(&d, "carol", "team-1") == 0); /* unchanged: not in the diff */
  seq = d.sequence;

  /* Resume from cursor 1: batches 2 and 3 again, with the same numbers. */
  EXPECT(PRESENCE_OK, presence_fanout_resume(f, sub, 1, &err));
  d = poll_one(f, sub, &has);
  CHECK(has && d.sequence == 2);
  d = poll_one(f, sub, &has);
  CHECK(has && d.sequence == 3 && state_in(&d, "alice", "") == PRESENCE_STATE_DND);
  d = poll_one(f, sub, &has);
  CHECK(!has);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_resume(f, sub, seq + 5, &err));
  CHECK(contains(last_msg, "future"));

  /* Remove, replace, leave. */
  EXPECT(PRESENCE_OK, presence_fanout_remove_users(f, sub, friends + 1, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_replace_users(f, sub, team + 1, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_leave(f, sub, "team-1", 6, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_fanout_leave(f, sub, "team-1", 6, &err));
  step(&w, 100);
  d = poll_one(f, sub, &has);
  CHECK(has && state_in(&d, "carol", "") == PRESENCE_STATE_ONLINE);
  CHECK(state_in(&d, "alice", "") == -1 && state_in(&d, "dave", "") == -1); /* removed */
  EXPECT(PRESENCE_OK, presence_fanout_remove_members(f, "team-1", 6, team + 2, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_replace_members(f, "team-1", 6, team, 1, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_fanout_join(f, sub, "team-9", 6, &err));
  CHECK(contains(last_msg, "team-9"));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_fanout_remove_members(f, "team-9", 6, team, 1, &err));

  /* A plain subscriber (NULL options) sees the public view. */
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sub2, f, NULL, &err));
  CHECK(sub2 != 0 && sub2 != sub);
  EXPECT(PRESENCE_OK, presence_fanout_add_users(f, sub2, friends, 1, &err));
  step(&w, 100);
  d = poll_one(f, sub2, &has);
  CHECK(has && d.snapshot && state_in(&d, "alice", "") == PRESENCE_STATE_DND);

  /* Unsubscribe: the subscriber is gone. */
  EXPECT(PRESENCE_OK, presence_fanout_unsubscribe(f, sub, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_fanout_unsubscribe(f, sub, &err));
  {
    char* bytes = NULL;
    size_t len = 0;
    EXPECT(PRESENCE_ERR_NOT_FOUND, presence_fanout_poll(NULL, &bytes, &len, f, sub, &err));
    CHECK(bytes == NULL && len == 0);
    EXPECT(PRESENCE_ERR_NOT_FOUND, presence_fanout_add_users(f, sub, friends, 1, &err));
    EXPECT(PRESENCE_ERR_NOT_FOUND, presence_fanout_resume(f, sub, 0, &err));
  }

  /* Limits answer RESOURCE_EXHAUSTED. */
  {
    presence_fanout_t* small = NULL;
    uint64_t a = 0;
    fo.max_subscribers = 1;
    fo.max_list_users = 1;
    EXPECT(PRESENCE_OK, presence_fanout_new(&small, w.engine, &fo, &err));
    EXPECT(PRESENCE_OK, presence_fanout_subscribe(&a, small, NULL, &err));
    EXPECT(PRESENCE_ERR_RESOURCE_EXHAUSTED, presence_fanout_subscribe(NULL, small, NULL, &err));
    EXPECT(PRESENCE_ERR_RESOURCE_EXHAUSTED, presence_fanout_add_users(small, a, team, 2, &err));
    presence_fanout_destroy(small);
  }
  /* Fan-out options out of range. */
  {
    presence_fanout_t* bad = (presence_fanout_t*)&fo;
    fo = (presence_fanout_options_t)PRESENCE_FANOUT_OPTIONS_INIT;
    fo.max_batch = 0;
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_new(&bad, w.engine, &fo, &err));
    CHECK(bad == NULL && contains(last_msg, "max_batch"));
    fo.max_batch = 10;
    fo.version = 0;
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_new(&bad, w.engine, &fo, &err));
  }
  presence_fanout_destroy(f);
  free_world(&w);
}

/* ---- Push sinks ------------------------------------------------------------------ */

typedef struct {
  presence_fanout_t* fanout;
  presence_engine_t* engine;
  int calls;
  int freed;
  uint64_t subscriber;
  uint64_t last_sequence;
  int gap;
  int last_alice; /* alice's state in the last batch that carried her, list view */
  int tick_answer;
  int try_tick;
  int unsubscribe_self;
  int unsubscribe_answer;
  size_t bytes;
} sink_state_t;

static void on_batch(uint64_t subscriber, const char* batch, size_t len, void* payload) {
  sink_state_t* st = (sink_state_t*)payload;
  decoded_t d = decode_batch(batch, len);
  int a;
  ++st->calls;
  st->bytes += len;
  st->subscriber = subscriber;
  if (!d.ok || d.subscriber != subscriber) st->gap = 1;
  if (!d.snapshot && d.sequence != st->last_sequence + 1) st->gap = 1;
  st->last_sequence = d.sequence;
  a = state_in(&d, "alice", "");
  if (a != 0) st->last_alice = a;
  if (st->try_tick) {
    char* e = NULL;
    st->tick_answer = presence_engine_tick(NULL, st->engine, &e);
    presence_free(e);
    st->try_tick = 0;
  }
  if (st->unsubscribe_self) {
    /* The payload must outlive this call: freed after it returns. */
    st->unsubscribe_answer = presence_fanout_unsubscribe(st->fanout, subscriber, NULL);
    st->unsubscribe_self = 0;
    CHECK(st->freed == 0);
  }
}

static void on_free(void* payload) { ++((sink_state_t*)payload)->freed; }

static void test_fanout_push(void) {
  world_t w = make_world(0);
  presence_fanout_t* f = NULL;
  presence_subscriber_options_t so = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  sink_state_t a, b, c;
  uint64_t sa = 0, sb = 0, sc = 0;
  presence_bytes_t who = bytes_of("alice");
  presence_signal_t s = make_signal("alice", "laptop", 1);
  uint64_t h = 0;

  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  EXPECT(PRESENCE_OK, presence_fanout_new(&f, w.engine, NULL, &err));
  a.fanout = b.fanout = c.fanout = f;
  a.engine = b.engine = c.engine = w.engine;

  so.sink = on_batch;
  so.sink_payload = &a;
  so.sink_payload_free = on_free;
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sa, f, &so, &err));
  so.sink_payload = &b;
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sb, f, &so, &err));
  so.sink_payload = &c;
  so.sink_payload_free = NULL; /* optional */
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sc, f, &so, &err));
  EXPECT(PRESENCE_OK, presence_fanout_add_users(f, sa, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_add_users(f, sb, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_add_users(f, sc, &who, 1, &err));

  /* The snapshot comes at the first flush, on this thread. */
  step(&w, 100);
  /* alice was never published: the snapshot says nothing of her. */
  CHECK(a.calls == 1 && a.subscriber == sa && a.last_alice == 0);
  CHECK(b.calls == 1 && c.calls == 1 && !a.gap);

  /* Changes are pushed; a tick from inside the sink is refused. */
  a.try_tick = 1;
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, w.engine, &s, &err));
  step(&w, 1000);
  CHECK(a.calls == 2 && a.last_alice == PRESENCE_STATE_ONLINE && a.last_sequence == 2);
  CHECK(a.tick_answer == PRESENCE_ERR_FAILED_PRECONDITION);
  CHECK(b.calls == 2 && b.last_alice == PRESENCE_STATE_ONLINE);

  /* Poll is for pull subscribers. */
  {
    char* bytes = NULL;
    size_t len = 0;
    EXPECT(PRESENCE_ERR_FAILED_PRECONDITION,
           presence_fanout_poll(NULL, &bytes, &len, f, sa, &err));
    CHECK(contains(last_msg, "sink"));
  }

  /* Resume pushes on the calling thread, before it returns. */
  a.last_sequence = 1; /* the client's cursor */
  EXPECT(PRESENCE_OK, presence_fanout_resume(f, sa, 1, &err));
  CHECK(a.calls == 3 && a.last_sequence == 2);

  /* b unsubscribes itself from inside its sink: freed after the call. */
  b.unsubscribe_self = 1;
  EXPECT(PRESENCE_OK, presence_engine_disconnect(w.engine, h, PRESENCE_DISCONNECT_CLEAN, &err));
  step(&w, 1000);
  CHECK(b.calls == 3 && b.unsubscribe_answer == PRESENCE_OK && b.freed == 1);
  CHECK(a.calls == 4 && a.last_alice == PRESENCE_STATE_OFFLINE && a.freed == 0);

  /* a unsubscribes from outside: freed once, no more calls. */
  EXPECT(PRESENCE_OK, presence_fanout_unsubscribe(f, sa, &err));
  CHECK(a.freed == 1);
  s.session_id = 2;
  EXPECT(PRESENCE_OK, presence_engine_connect(NULL, w.engine, &s, &err));
  step(&w, 1000);
  CHECK(a.calls == 4 && b.calls == 3 && c.calls == 4);
  CHECK(!a.gap && !b.gap && !c.gap);
  CHECK(a.bytes > 0);

  /* A subscriber left open when the fan-out goes: its payload is freed then. */
  so.sink_payload = &b;
  so.sink_payload_free = on_free;
  b.freed = 0;
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(NULL, f, &so, &err));
  presence_fanout_destroy(f);
  CHECK(b.freed == 1 && a.freed == 1 && c.freed == 0);
  free_world(&w);
}

/* ---- A sink that calls back into the library (issue 21) ----------------------------
 *
 * c.h lets a sink call any function of the engine and the fan-out except
 * presence_engine_tick and presence_fanout_destroy. This one calls each of
 * them once, from inside its first batch, and ends by unsubscribing
 * itself. The tick runs on its own thread: a tick that does not return
 * within 20 s deadlocked, and the test ends there. */

typedef struct {
  presence_engine_t* engine;
  presence_fanout_t* fanout;
  int calls;
} reentry_t;

static void reentrant_sink(uint64_t subscriber, const char* batch, size_t len, void* payload) {
  reentry_t* r = (reentry_t*)payload;
  presence_signal_t s = make_signal("carol", "phone", 1);
  presence_bytes_t who = bytes_of("carol");
  presence_batch_result_t br;
  presence_user_presence_t* users = NULL;
  presence_override_t* overrides = NULL;
  presence_transition_t* transitions = NULL;
  presence_state_durations_t durations;
  size_t count = 0, n = 0;
  uint64_t h = 0, o = 0, pull = 0;
  int64_t t = 0;
  char* text = NULL;
  uint8_t has = 0;
  (void)batch;
  (void)len;
  if (r->calls++ > 0) return; /* the resume below delivers once more */
  EXPECT(PRESENCE_OK, presence_engine_signal(r->engine, &s, &err));
  EXPECT(PRESENCE_OK, presence_engine_signal_batch(&br, r->engine, &s, 1, &err));
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, r->engine, &s, &err));
  EXPECT(PRESENCE_OK,
          presence_engine_beat(r->engine, h, PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP, &err));
  EXPECT(PRESENCE_OK,
          presence_engine_beat_many(&br, r->engine, &h, 1, PRESENCE_ACTIVITY_ACTIVE,
                                    PRESENCE_SOURCE_APP, &err));
  EXPECT(PRESENCE_OK,
          presence_engine_set_override(&o, r->engine, "carol", 5, PRESENCE_OVERRIDE_DND, 0, 0, &err));
  EXPECT(PRESENCE_OK,
          presence_engine_list_overrides(&overrides, &count, r->engine, "carol", 5, &err));
  presence_free(overrides);
  EXPECT(PRESENCE_OK, presence_engine_revoke_override(r->engine, "carol", 5, o, &err));
  EXPECT(PRESENCE_OK, presence_engine_clear_overrides(&n, r->engine, "carol", 5, &err));
  EXPECT(PRESENCE_OK,
          presence_engine_revoke_overrides_set_between(&n, r->engine, 0, 1, &err));
  EXPECT(PRESENCE_OK, presence_engine_get(&users, r->engine, &who, 1, NULL, 0, &err));
  presence_free(users);
  users = NULL;
  EXPECT(PRESENCE_OK,
          presence_engine_get_published(&users, r->engine, &who, 1, NULL, 0, &err));
  presence_free(users);
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION, /* no history store */
          presence_engine_history(&transitions, &count, r->engine, "carol", 5, 0, 1, &err));
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION,
          presence_engine_time_in_states(&durations, r->engine, "carol", 5, 0, 1, &err));
  EXPECT(PRESENCE_OK, presence_engine_last_seen(&t, r->engine, "carol", 5, &err));
  EXPECT(PRESENCE_OK,
          presence_engine_disconnect(r->engine, h, PRESENCE_DISCONNECT_CLEAN, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND,
          presence_engine_drain_gateway(&n, r->engine, "gw", 2, 10, &err));
  EXPECT(PRESENCE_OK, presence_engine_erase(r->engine, "carol", 5, &err));
  EXPECT(PRESENCE_OK, presence_engine_now(&t, r->engine, &err));
  EXPECT(PRESENCE_OK, presence_engine_render_metrics(&text, NULL, r->engine, &err));
  presence_free(text);
  text = NULL;
  EXPECT(PRESENCE_OK, presence_engine_rebuild(r->engine, &err));
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&pull, r->fanout, NULL, &err));
  EXPECT(PRESENCE_OK, presence_fanout_add_users(r->fanout, pull, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_remove_users(r->fanout, pull, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_replace_users(r->fanout, pull, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_add_members(r->fanout, "team", 4, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_replace_members(r->fanout, "team", 4, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_join(r->fanout, pull, "team", 4, &err));
  EXPECT(PRESENCE_OK, presence_fanout_leave(r->fanout, pull, "team", 4, &err));
  EXPECT(PRESENCE_OK, presence_fanout_remove_members(r->fanout, "team", 4, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_fanout_poll(&has, &text, &n, r->fanout, pull, &err));
  presence_free(text);
  text = NULL;
  EXPECT(PRESENCE_OK, presence_fanout_unsubscribe(r->fanout, pull, &err));
  EXPECT(PRESENCE_OK, presence_fanout_resume(r->fanout, subscriber, 0, &err));
  EXPECT(PRESENCE_OK, presence_fanout_render_metrics(&text, NULL, r->fanout, &err));
  presence_free(text);
  EXPECT(PRESENCE_OK, presence_fanout_unsubscribe(r->fanout, subscriber, &err));
}

typedef struct {
  presence_engine_t* engine;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
} tick_once_t;

static void* tick_thread(void* arg) {
  tick_once_t* t = (tick_once_t*)arg;
  presence_engine_tick(NULL, t->engine, NULL);
  pthread_mutex_lock(&t->mu);
  t->done = 1;
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

static void test_sink_reentry(void) {
  world_t w = make_world(0);
  presence_fanout_t* f = NULL;
  presence_subscriber_options_t so = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  reentry_t r;
  tick_once_t t;
  pthread_t thread;
  struct timespec deadline;
  int timed_out = 0;

  memset(&r, 0, sizeof r);
  EXPECT(PRESENCE_OK, presence_fanout_new(&f, w.engine, NULL, &err));
  r.engine = w.engine;
  r.fanout = f;
  so.sink = reentrant_sink;
  so.sink_payload = &r;
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(NULL, f, &so, &err));

  t.engine = w.engine;
  t.done = 0;
  pthread_mutex_init(&t.mu, NULL);
  pthread_cond_init(&t.cv, NULL);
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 20;
  CHECK(pthread_create(&thread, NULL, tick_thread, &t) == 0);
  pthread_mutex_lock(&t.mu);
  while (!t.done && !timed_out) {
    timed_out = pthread_cond_timedwait(&t.cv, &t.mu, &deadline) != 0;
  }
  pthread_mutex_unlock(&t.mu);
  if (!t.done) {
    fprintf(stderr, "c_api_test: a tick whose sink calls back into the library deadlocked\n");
    _exit(1);
  }
  pthread_join(thread, NULL);
  CHECK(r.calls == 2);
  pthread_cond_destroy(&t.cv);
  pthread_mutex_destroy(&t.mu);
  presence_fanout_destroy(f);
  free_world(&w);
}

/* Probes (docs/design.md rule 9) through a C callback: what it is told, an
 * answer from inside the callback, an answer given later, and what the
 * engine answers to late and unknown ids. */
typedef struct {
  presence_engine_t* engine;
  int answer;  /* answer from inside the callback */
  int calls;
  uint64_t last_id;
  int64_t session;
  int32_t source, attempt;
  char user[16], device[16], gateway[16];
  int answered_ok;
} probe_log_t;

static void copy_bytes(char* to, size_t cap, const char* from, size_t len) {
  if (len >= cap) len = cap - 1;
  memcpy(to, from, len);
  to[len] = '\0';
}

static void record_probe(const presence_probe_t* p, void* payload) {
  probe_log_t* log = (probe_log_t*)payload;
  ++log->calls;
  log->last_id = p->probe_id;
  log->session = (int64_t)p->session_id;
  log->source = p->source;
  log->attempt = p->attempt;
  copy_bytes(log->user, sizeof log->user, p->user_id, p->user_id_len);
  copy_bytes(log->device, sizeof log->device, p->device_id, p->device_id_len);
  copy_bytes(log->gateway, sizeof log->gateway, p->gateway, p->gateway_len);
  if (log->answer) {
    log->answered_ok += presence_engine_answer_probe(log->engine, p->probe_id, NULL) == PRESENCE_OK;
    /* A tick from inside the callback is refused. */
    CHECK(presence_engine_tick(NULL, log->engine, NULL) == PRESENCE_ERR_FAILED_PRECONDITION);
  }
}

static void test_probes(void) {
  presence_clock_t* c = NULL;
  presence_engine_options_t o = PRESENCE_ENGINE_OPTIONS_INIT;
  probe_log_t log;
  presence_signal_t s = make_signal("alice", "laptop", 5);
  world_t w;
  char* text = NULL;
  int i;

  memset(&log, 0, sizeof log);
  EXPECT(PRESENCE_OK, presence_clock_manual_new(&c, 1000000, &err));
  o.clock = c;
  o.min_dwell_ms = 0;
  o.prober = record_probe;
  o.prober_payload = &log;
  EXPECT(PRESENCE_OK, presence_engine_new(&log.engine, &o, &err));
  w.clock = c;
  w.engine = log.engine;
  s.gateway = "gw-7";
  s.gateway_len = 4;
  EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
  /* Silent: probed at 2 s, with what the host needs to find the device. */
  for (i = 0; i < 19; ++i) step(&w, 100);
  CHECK(log.calls == 0);
  step(&w, 100);
  CHECK(log.calls == 1 && log.attempt == 1 && log.session == 5);
  CHECK(strcmp(log.user, "alice") == 0 && strcmp(log.device, "laptop") == 0);
  CHECK(strcmp(log.gateway, "gw-7") == 0 && log.source == PRESENCE_SOURCE_APP);
  /* Answered after the callback returned. */
  EXPECT(PRESENCE_OK, presence_engine_answer_probe(w.engine, log.last_id, &err));
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION,
         presence_engine_answer_probe(w.engine, log.last_id, &err));  /* once only: late */
  /* From now on answered from inside the callback: online for a minute,
   * with no heartbeat at all. */
  log.answer = 1;
  for (i = 0; i < 600; ++i) step(&w, 100);
  CHECK(get_one(&w, "alice", "bob").state == PRESENCE_STATE_ONLINE);
  CHECK(log.answered_ok >= 25);
  /* Unanswered: offline at 4 s of silence. */
  log.answer = 0;
  for (i = 0; i < 40; ++i) step(&w, 100);
  CHECK(get_one(&w, "alice", "bob").state == PRESENCE_STATE_OFFLINE);
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_answer_probe(w.engine, 0, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_answer_probe(w.engine, ~(uint64_t)0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_answer_probe(NULL, 1, &err));
  EXPECT(PRESENCE_OK, presence_engine_render_metrics(&text, NULL, w.engine, &err));
  CHECK(contains(text, "presence_probes_given_up_total 1"));
  CHECK(contains(text, "presence_probes_late_total 1"));
  presence_free(text);
  free_world(&w);

  /* Out-of-range probe options are refused with a message naming them. */
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.prober = record_probe;
  o.max_probes = 0;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(&w.engine, &o, &err));
  CHECK(contains(last_msg, "max_probes"));
}

static void test_metrics(void) {
  world_t w = make_world(0);
  presence_fanout_t* f = NULL;
  char* text = NULL;
  size_t len = 0;
  presence_signal_t s = make_signal("alice", "laptop", 1);

  EXPECT(PRESENCE_OK, presence_fanout_new(&f, w.engine, NULL, &err));
  EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
  step(&w, 100);
  EXPECT(PRESENCE_OK, presence_engine_render_metrics(&text, &len, w.engine, &err));
  CHECK(text != NULL && len == strlen(text));
  CHECK(contains(text, "# TYPE presence_signals_accepted_total counter"));
  CHECK(contains(text, "presence_signals_accepted_total{source=\"app\"} 1"));
  CHECK(contains(text, "presence_live_devices 1"));
  presence_free(text);
  text = NULL;
  EXPECT(PRESENCE_OK, presence_fanout_render_metrics(&text, NULL, f, &err));
  CHECK(contains(text, "presence_fanout_batches_total"));
  CHECK(contains(text, "presence_fanout_subscribers 0"));
  presence_free(text);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_render_metrics(NULL, &len, w.engine, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_render_metrics(NULL, &len, f, &err));
  presence_fanout_destroy(f);
  free_world(&w);
}

/* Handles may be destroyed in any order: a fan-out keeps its engine, an
 * engine its clock. */
static void test_lifetimes(void) {
  world_t w = make_world(0);
  presence_fanout_t* f = NULL;
  uint64_t sub = 0;
  presence_bytes_t who = bytes_of("alice");
  presence_signal_t s = make_signal("alice", "laptop", 1);
  decoded_t d;
  int has = 0;

  EXPECT(PRESENCE_OK, presence_fanout_new(&f, w.engine, NULL, &err));
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sub, f, NULL, &err));
  EXPECT(PRESENCE_OK, presence_fanout_add_users(f, sub, &who, 1, &err));
  EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
  step(&w, 100);
  presence_clock_destroy(w.clock); /* the engine still reads it */
  presence_engine_destroy(w.engine); /* the fan-out still holds it */
  d = poll_one(f, sub, &has);
  CHECK(has && d.snapshot && state_in(&d, "alice", "") == PRESENCE_STATE_ONLINE);
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(NULL, f, NULL, &err));
  presence_fanout_destroy(f); /* frees the engine, then the clock */
}

/* ---- Threads ----------------------------------------------------------------------
 * A ticking thread delivers to push subscribers while the main thread beats
 * and unsubscribes them one by one: a payload is never freed while its sink
 * runs, and no sink runs after its payload was freed. (Run it under
 * AddressSanitizer to see more.) */

#define THREAD_SUBS 8
#define THREAD_DEVICES 16

typedef struct {
  pthread_mutex_t mu;
  int in_call;
  int calls;
  int freed;
  int violations;
} guarded_t;

static void guarded_sink(uint64_t subscriber, const char* batch, size_t len, void* payload) {
  guarded_t* g = (guarded_t*)payload;
  (void)subscriber;
  (void)batch;
  (void)len;
  pthread_mutex_lock(&g->mu);
  if (g->freed) ++g->violations;
  ++g->in_call;
  ++g->calls;
  pthread_mutex_unlock(&g->mu);
  pthread_mutex_lock(&g->mu);
  --g->in_call;
  pthread_mutex_unlock(&g->mu);
}

static void guarded_free(void* payload) {
  guarded_t* g = (guarded_t*)payload;
  pthread_mutex_lock(&g->mu);
  if (g->in_call != 0 || g->freed) ++g->violations;
  ++g->freed;
  pthread_mutex_unlock(&g->mu);
}

/* The ticker ticks once per round of the main thread, at the same time as
 * the main thread's next round: in lockstep, so that a slow machine cannot
 * let it run simulated minutes ahead of the heartbeats. */
typedef struct {
  world_t* w;
  pthread_mutex_t mu; /* guards the four below */
  pthread_cond_t cv;
  int stop;
  int allowed; /* ticks the main thread allowed so far */
  int ticks;   /* ticks done */
  int failures;
} ticker_t;

static void* ticker_main(void* arg) {
  ticker_t* t = (ticker_t*)arg;
  for (;;) {
    int failures = 0;
    pthread_mutex_lock(&t->mu);
    while (!t->stop && t->ticks >= t->allowed) pthread_cond_wait(&t->cv, &t->mu);
    if (t->stop) {
      pthread_mutex_unlock(&t->mu);
      return NULL;
    }
    pthread_mutex_unlock(&t->mu);
    if (presence_clock_advance(t->w->clock, 100, NULL) != PRESENCE_OK) ++failures;
    if (presence_engine_tick(NULL, t->w->engine, NULL) != PRESENCE_OK) ++failures;
    pthread_mutex_lock(&t->mu);
    t->failures += failures;
    ++t->ticks;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
  }
}

/* Waits for the tick allowed before, then allows one more (stop: none). */
static void next_tick(ticker_t* t, int stop) {
  pthread_mutex_lock(&t->mu);
  while (t->ticks < t->allowed) pthread_cond_wait(&t->cv, &t->mu);
  if (stop) {
    t->stop = 1;
  } else {
    ++t->allowed;
  }
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

static void test_threads(void) {
  world_t w = make_world(0);
  presence_fanout_t* f = NULL;
  presence_fanout_options_t fo = PRESENCE_FANOUT_OPTIONS_INIT;
  presence_subscriber_options_t so = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  guarded_t g[THREAD_SUBS];
  uint64_t subs[THREAD_SUBS];
  uint64_t handles[THREAD_DEVICES];
  presence_bytes_t users[THREAD_DEVICES];
  char names[THREAD_DEVICES][8];
  ticker_t ticker;
  pthread_t thread;
  int i, round, beat_failures = 0, violations = 0, freed = 0;

  fo.rate_per_sec = 0;
  fo.flush_interval_ms = 0;
  EXPECT(PRESENCE_OK, presence_fanout_new(&f, w.engine, &fo, &err));
  for (i = 0; i < THREAD_DEVICES; ++i) {
    presence_signal_t s;
    snprintf(names[i], sizeof names[i], "u%d", i);
    s = make_signal(names[i], "pc", 1);
    EXPECT(PRESENCE_OK, presence_engine_connect(&handles[i], w.engine, &s, &err));
    users[i] = bytes_of(names[i]);
  }
  for (i = 0; i < THREAD_SUBS; ++i) {
    memset(&g[i], 0, sizeof g[i]);
    pthread_mutex_init(&g[i].mu, NULL);
    so.sink = guarded_sink;
    so.sink_payload = &g[i];
    so.sink_payload_free = guarded_free;
    EXPECT(PRESENCE_OK, presence_fanout_subscribe(&subs[i], f, &so, &err));
    EXPECT(PRESENCE_OK, presence_fanout_add_users(f, subs[i], users, THREAD_DEVICES, &err));
  }
  memset(&ticker, 0, sizeof ticker);
  ticker.w = &w;
  pthread_mutex_init(&ticker.mu, NULL);
  pthread_cond_init(&ticker.cv, NULL);
  CHECK(pthread_create(&thread, NULL, ticker_main, &ticker) == 0);
  /* Flip every device between ACTIVE and IDLE, so that each tick publishes,
   * and close a subscriber every 50 rounds. */
  for (round = 0; round < 50 * THREAD_SUBS; ++round) {
    for (i = 0; i < THREAD_DEVICES; ++i) {
      if (presence_engine_beat(w.engine, handles[i],
                               (round & 1) ? PRESENCE_ACTIVITY_IDLE : PRESENCE_ACTIVITY_ACTIVE,
                               PRESENCE_SOURCE_APP, NULL) != PRESENCE_OK) {
        ++beat_failures;
      }
    }
    if (round % 50 == 49) {
      EXPECT(PRESENCE_OK, presence_fanout_unsubscribe(f, subs[round / 50], &err));
    }
    next_tick(&ticker, 0);
  }
  next_tick(&ticker, 1);
  CHECK(pthread_join(thread, NULL) == 0);
  pthread_cond_destroy(&ticker.cv);
  pthread_mutex_destroy(&ticker.mu);
  CHECK(ticker.failures == 0 && ticker.ticks > 0);
  CHECK(beat_failures == 0);
  for (i = 0; i < THREAD_SUBS; ++i) {
    violations += g[i].violations;
    freed += g[i].freed;
    CHECK(g[i].calls > 0);
    pthread_mutex_destroy(&g[i].mu);
  }
  CHECK(violations == 0);
  CHECK(freed == THREAD_SUBS);
  presence_fanout_destroy(f);
  free_world(&w);
}

/* NULL handles and pointers, lengths out of range, invalid enum values,
 * destroy of NULL: a clear status each, never a crash. */
static void test_bad_input(void) {
  world_t w = make_world(0);
  presence_fanout_t* f = NULL;
  presence_signal_t s = make_signal("alice", "laptop", 1);
  presence_bytes_t ids[2];
  char big[300];
  uint64_t h = 0, sub = 0, live = 0;
  size_t n = 0;
  int64_t now = 0;
  char* text = NULL;
  uint8_t has = 0;
  presence_user_presence_t* users = NULL;
  presence_override_t* list = NULL;
  presence_subscriber_options_t so = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  presence_batch_result_t r;

  memset(big, 'b', sizeof big);
  ids[0] = bytes_of("alice");
  ids[1] = bytes_of("bob");
  EXPECT(PRESENCE_OK, presence_fanout_new(&f, w.engine, NULL, &err));
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sub, f, NULL, &err));
  EXPECT(PRESENCE_OK, presence_engine_connect(&live, w.engine, &s, &err));

  /* Destroy NULL: no-ops. */
  presence_clock_destroy(NULL);
  presence_engine_destroy(NULL);
  presence_fanout_destroy(NULL);

  /* NULL handles: every call. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_clock_advance(NULL, 1, &err));
  CHECK(strcmp(last_msg, "clock is NULL") == 0);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_clock_set(NULL, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_clock_now(&now, NULL, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(NULL, &s, &err));
  CHECK(strcmp(last_msg, "engine is NULL") == 0);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal_batch(&r, NULL, &s, 1, &err));
  CHECK(r.applied == 0 && r.rejected == 0);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_disconnect_device(NULL, "a", 1, "b", 1, 0, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_connect(&h, NULL, &s, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_beat(NULL, 1, 1, 2, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_disconnect(NULL, 1, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(NULL, NULL, "a", 1, 1, 0, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_revoke_override(NULL, "a", 1, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_clear_overrides(&n, NULL, "a", 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_revoke_overrides_set_between(&n, NULL, 0, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_list_overrides(&list, &n, NULL, "a", 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_get(&users, NULL, ids, 1, NULL, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_get_published(&users, NULL, ids, 1, NULL, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_tick(&n, NULL, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_now(&now, NULL, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_render_metrics(&text, &n, NULL, &err));
  {
    presence_transition_t* t = (presence_transition_t*)&r;
    presence_state_durations_t d;
    n = 7;
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_history(&t, &n, NULL, "a", 1, 0, 1, &err));
    CHECK(t == NULL && n == 0 && strcmp(last_msg, "engine is NULL") == 0);
    d.online_ms = 5;
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_time_in_states(&d, NULL, "a", 1, 0, 1, &err));
    CHECK(d.online_ms == 0);
    now = 5;
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_last_seen(&now, NULL, "a", 1, &err));
    CHECK(now == 0);
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_erase(NULL, "a", 1, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_drain_gateway(&n, NULL, "g", 1, 10, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_rebuild(NULL, &err));
    CHECK(strcmp(last_msg, "engine is NULL") == 0);
    /* NULL out-parameters where a buffer comes back. */
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_history(NULL, &n, w.engine, "a", 1, 0, 1, &err));
    CHECK(contains(last_msg, "out_transitions"));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_history(&t, NULL, w.engine, "a", 1, 0, 1, &err));
    CHECK(t == NULL && contains(last_msg, "out_count"));
    /* NULL ids with a length, ids too long or empty, a window backwards,
     * a drain of nothing. */
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_history(&t, &n, w.engine, NULL, 3, 0, 1, &err));
    CHECK(contains(last_msg, "user_id is NULL"));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_time_in_states(&d, w.engine, NULL, 3, 0, 1, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_last_seen(&now, w.engine, big, SIZE_MAX, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_last_seen(&now, w.engine, big, PRESENCE_MAX_USER_ID_BYTES + 1, &err));
    CHECK(contains(last_msg, "129 bytes"));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_erase(w.engine, "", 0, &err));
    CHECK(contains(last_msg, "user_id is empty"));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_erase(w.engine, big, PRESENCE_MAX_USER_ID_BYTES + 1, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_history(&t, &n, w.engine, big, SIZE_MAX, 0, 1, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_drain_gateway(&n, w.engine, NULL, 2, 10, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_drain_gateway(&n, w.engine, big, PRESENCE_MAX_GATEWAY_BYTES + 1, 10,
                                         &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_drain_gateway(&n, w.engine, "", 0, 10, &err));
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
           presence_engine_drain_gateway(&n, w.engine, "g", 1, 0, &err));
    CHECK(contains(last_msg, "max_devices"));
  }
  {
    presence_fanout_t* none = f;
    EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_new(&none, NULL, NULL, &err));
    CHECK(none == NULL);
  }
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_subscribe(&sub, NULL, NULL, &err));
  CHECK(sub == 0);
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sub, f, NULL, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_unsubscribe(NULL, sub, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_add_users(NULL, sub, ids, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_remove_users(NULL, sub, ids, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_replace_users(NULL, sub, ids, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_join(NULL, sub, "t", 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_leave(NULL, sub, "t", 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_add_members(NULL, "t", 1, ids, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_fanout_remove_members(NULL, "t", 1, ids, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_fanout_replace_members(NULL, "t", 1, ids, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_poll(&has, &text, &n, NULL, sub, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_resume(NULL, sub, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_render_metrics(&text, &n, NULL, &err));
  CHECK(text == NULL);

  /* NULL pointers other than handles. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_clock_manual_new(NULL, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_new(NULL, NULL, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_new(NULL, w.engine, NULL, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, NULL, &err));
  CHECK(strcmp(last_msg, "signal is NULL") == 0);
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_connect(&h, w.engine, NULL, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_signal_batch(&r, w.engine, NULL, 3, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_disconnect_device(w.engine, NULL, 5, "pc", 2, 0, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(NULL, w.engine, NULL, 5, 1, 0, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_revoke_override(w.engine, NULL, 1, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_clear_overrides(&n, w.engine, NULL, 2, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_list_overrides(&list, &n, w.engine, NULL, 2, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_add_users(f, sub, NULL, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_join(f, sub, NULL, 4, &err));
  CHECK(contains(last_msg, "topic is NULL"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_add_members(f, NULL, 1, ids, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_add_members(f, "t", 1, NULL, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_poll(&has, NULL, &n, f, sub, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_poll(&has, &text, NULL, f, sub, &err));
  so.owner_user_id_len = 3; /* with a NULL pointer */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_subscribe(&sub, f, &so, &err));
  CHECK(contains(last_msg, "owner_user_id"));
  so.owner_user_id_len = 0;
  so.version = 0;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_subscribe(&sub, f, &so, &err));
  so.version = PRESENCE_SUBSCRIBER_OPTIONS_VERSION;
  EXPECT(PRESENCE_OK, presence_fanout_subscribe(&sub, f, &so, &err));

  /* Lengths out of range: empty, and one past each limit. */
  s = make_signal("alice", "laptop", 1);
  s.user_id_len = 0;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, &s, &err));
  CHECK(contains(last_msg, "user_id is empty"));
  s = make_signal("alice", "laptop", 1);
  s.user_id = big;
  s.user_id_len = PRESENCE_MAX_USER_ID_BYTES + 1;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, &s, &err));
  CHECK(contains(last_msg, "129 bytes"));
  s.user_id_len = SIZE_MAX; /* never read: the length alone is wrong */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_connect(&h, w.engine, &s, &err));
  s = make_signal("alice", "laptop", 1);
  s.device_id = big;
  s.device_id_len = PRESENCE_MAX_DEVICE_ID_BYTES + 1;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, &s, &err));
  CHECK(contains(last_msg, "device_id"));
  s = make_signal("alice", "laptop", 1);
  s.gateway = big;
  s.gateway_len = PRESENCE_MAX_GATEWAY_BYTES + 1;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, &s, &err));
  CHECK(contains(last_msg, "gateway"));
  s.gateway = NULL;
  s.gateway_len = 0; /* no gateway: fine */
  EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_set_override(NULL, w.engine, big, SIZE_MAX, 1, 0, 0, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_disconnect_device(w.engine, "alice", 5, big, SIZE_MAX, 0, 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_join(f, sub, big, SIZE_MAX, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_fanout_join(f, sub, big, PRESENCE_MAX_TOPIC_BYTES + 1, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_join(f, sub, "", 0, &err));
  CHECK(contains(last_msg, "topic is empty"));
  ids[1].data = big;
  ids[1].len = SIZE_MAX;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_add_users(f, sub, ids, 2, &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_add_members(f, "t", 1, ids, 2, &err));
  ids[1].len = 0;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_replace_users(f, sub, ids, 2, &err));
  so.owner_user_id = big;
  so.owner_user_id_len = SIZE_MAX;
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_fanout_subscribe(&sub, f, &so, &err));
  CHECK(contains(last_msg, "owner_user_id"));
  {
    /* Get does not read an id whose length is past the limit. */
    presence_bytes_t one;
    one.data = big;
    one.len = SIZE_MAX;
    EXPECT(PRESENCE_OK, presence_engine_get(&users, w.engine, &one, 1, NULL, 0, &err));
    CHECK(users != NULL && !users[0].known && users[0].user_id_len == 0);
    presence_free(users);
  }

  /* Invalid enum values: zero, past the end, negative, past a byte. */
  {
    const int bad[] = {0, 6, -1, 256, 1000, INT_MAX, INT_MIN};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
      s = make_signal("alice", "laptop", 1);
      s.platform = bad[i];
      EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, &s, &err));
      CHECK(contains(last_msg, "platform"));
      s = make_signal("alice", "laptop", 1);
      s.source = bad[i];
      EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_signal(w.engine, &s, &err));
      s = make_signal("alice", "laptop", 1);
      s.activity = bad[i];
      EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_connect(&h, w.engine, &s, &err));
      EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
             presence_engine_set_override(NULL, w.engine, "alice", 5, bad[i], 0, 0, &err));
      EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_disconnect_device(
                                                w.engine, "alice", 5, "laptop", 6, 0, bad[i],
                                                &err));
      EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_beat(w.engine, live, bad[i], 2, &err));
      EXPECT(PRESENCE_ERR_INVALID_ARGUMENT, presence_engine_beat(w.engine, live, 1, bad[i], &err));
    }
  }
  /* Nothing above changed anything: alice has one live device and no
   * override. */
  step(&w, 100);
  {
    presence_user_presence_t p = get_one(&w, "alice", NULL);
    CHECK(p.state == PRESENCE_STATE_ONLINE && p.live_devices == 1 && !p.has_override);
  }
  presence_fanout_destroy(f);
  free_world(&w);
}

/* ---- Limits (engine options, version 2) ------------------------------------------- */

static void test_limits(void) {
  presence_clock_t* c = NULL;
  presence_engine_t* e = NULL;
  presence_engine_options_t o = PRESENCE_ENGINE_OPTIONS_INIT;
  presence_signal_t s = make_signal("alice", "laptop", 1);
  uint64_t h = 0;
  int i;

  /* Flood limit: 3 signals per device per second of the engine's clock. */
  EXPECT(PRESENCE_OK, presence_clock_manual_new(&c, 1000000, &err));
  o.clock = c;
  o.max_signals_per_device_per_sec = 3;
  EXPECT(PRESENCE_OK, presence_engine_new(&e, &o, &err));
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, e, &s, &err));
  for (i = 0; i < 2; ++i) {
    EXPECT(PRESENCE_OK, presence_engine_beat(e, h, PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP,
                                             &err));
  }
  EXPECT(PRESENCE_ERR_RESOURCE_EXHAUSTED,
         presence_engine_beat(e, h, PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP, &err));
  EXPECT(PRESENCE_ERR_RESOURCE_EXHAUSTED, presence_engine_signal(e, &s, &err));
  EXPECT(PRESENCE_OK, presence_clock_advance(c, 1000, &err)); /* the next second */
  EXPECT(PRESENCE_OK,
         presence_engine_beat(e, h, PRESENCE_ACTIVITY_ACTIVE, PRESENCE_SOURCE_APP, &err));
  presence_engine_destroy(e);

  /* Memory budget: room for one user with one device (96 + 96 bytes). */
  o = (presence_engine_options_t)PRESENCE_ENGINE_OPTIONS_INIT;
  o.clock = c;
  o.memory_budget_bytes = 192;
  EXPECT(PRESENCE_OK, presence_engine_new(&e, &o, &err));
  EXPECT(PRESENCE_OK, presence_engine_signal(e, &s, &err));
  s = make_signal("bob", "phone", 1);
  EXPECT(PRESENCE_ERR_RESOURCE_EXHAUSTED, presence_engine_signal(e, &s, &err));
  CHECK(contains(last_msg, "memory budget"));
  s = make_signal("alice", "laptop", 1); /* what is held keeps working */
  EXPECT(PRESENCE_OK, presence_engine_signal(e, &s, &err));
  presence_engine_destroy(e);
  presence_clock_destroy(c);
}

/* ---- The file store (engine options, version 2) ------------------------------------ */

static int remove_entry(const char* path, const struct stat* sb, int flag, struct FTW* ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* A fresh folder under /tmp, removed with remove_tree. */
static void make_temp_dir(char* out, size_t size) {
  snprintf(out, size, "/tmp/presence_c_api_XXXXXX");
  CHECK(mkdtemp(out) != NULL);
}

static void remove_tree(const char* dir) {
  CHECK(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

/* An engine with no dwell on `clock`, keeping its state in `dir`; the
 * status of presence_engine_new. */
static int new_file_engine(presence_engine_t** e, presence_clock_t* clock, const char* dir) {
  presence_engine_options_t o = PRESENCE_ENGINE_OPTIONS_INIT;
  o.clock = clock;
  o.min_dwell_ms = 0;
  o.store = PRESENCE_STORE_FILE;
  o.file_dir = dir;
  o.file_dir_len = strlen(dir);
  return presence_engine_new(e, &o, &err);
}

/* A world on a manual clock at 1000000 whose engine keeps its state in a new
 * temporary folder, written to `dir`. */
static world_t make_file_world(char* dir, size_t size) {
  world_t w;
  make_temp_dir(dir, size);
  EXPECT(PRESENCE_OK, presence_clock_manual_new(&w.clock, 1000000, &err));
  EXPECT(PRESENCE_OK, new_file_engine(&w.engine, w.clock, dir));
  return w;
}

static void test_file_store(void) {
  char dir[64], path[200];
  presence_clock_t* c = NULL;
  presence_engine_t* e = NULL;
  presence_engine_t* other = NULL;
  presence_signal_t s = make_signal("alice", "laptop", 1);
  world_t w;
  char* text = NULL;
  FILE* f;

  make_temp_dir(dir, sizeof dir);
  EXPECT(PRESENCE_OK, presence_clock_manual_new(&c, 1000000, &err));
  w.clock = c;

  /* A durable round trip: signals, a tick (which writes them), destroy; a
   * new engine on the same folder sees the user. */
  EXPECT(PRESENCE_OK, new_file_engine(&e, c, dir));
  EXPECT(PRESENCE_OK, presence_engine_connect(NULL, e, &s, &err));
  s = make_signal("bob", "phone", 1);
  s.platform = PRESENCE_PLATFORM_MOBILE;
  EXPECT(PRESENCE_OK, presence_engine_signal(e, &s, &err));
  w.engine = e;
  CHECK(step(&w, 100) == 2);
  /* The folder is held: a second engine on it gets a clear error. */
  other = e;
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION, new_file_engine(&other, c, dir));
  CHECK(other == NULL && contains(last_msg, "cannot open the file store in") &&
        contains(last_msg, dir) && contains(last_msg, "locked"));
  EXPECT(PRESENCE_OK, presence_engine_render_metrics(&text, NULL, e, &err));
  CHECK(contains(text, "presence_live_devices 2") && contains(text, "presence_file_store_"));
  presence_free(text);
  presence_engine_destroy(e);

  EXPECT(PRESENCE_OK, presence_clock_advance(c, 100, &err));
  EXPECT(PRESENCE_OK, new_file_engine(&e, c, dir));
  w.engine = e;
  {
    presence_user_presence_t a = get_one(&w, "alice", NULL);
    presence_user_presence_t b = get_one(&w, "bob", NULL);
    CHECK(a.known && a.state == PRESENCE_STATE_ONLINE && a.last_seen_ms == 1000000);
    CHECK(b.known && b.devices[PRESENCE_PLATFORM_MOBILE - 1] == 1);
  }
  {
    presence_transition_t* t = NULL;
    size_t n = 0;
    EXPECT(PRESENCE_OK, presence_engine_history_as(&t, &n, e, "alice", 5, 0, INT64_MAX, "alice",
                                                   5, &err));
    CHECK(n == 1 && t != NULL && t[0].state == PRESENCE_STATE_ONLINE &&
          t[0].cause == PRESENCE_CAUSE_SIGNAL);
    presence_free(t);
  }
  presence_engine_destroy(e);

  /* A folder path that is a file: a clear status naming it. */
  snprintf(path, sizeof path, "%s/a-file", dir);
  f = fopen(path, "w");
  CHECK(f != NULL);
  if (f != NULL) fclose(f);
  e = (presence_engine_t*)&s;
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION, new_file_engine(&e, c, path));
  CHECK(e == NULL && contains(last_msg, path) && contains(last_msg, "not a directory"));
  /* A folder that cannot be created or read (permissions do not stop root). */
  if (geteuid() != 0) {
    char locked[160];
    snprintf(locked, sizeof locked, "%s/closed", dir);
    CHECK(mkdir(locked, 0) == 0);
    snprintf(path, sizeof path, "%s/inside", locked);
    EXPECT(PRESENCE_ERR_PERMISSION_DENIED, new_file_engine(&e, c, path));
    CHECK(e == NULL && contains(last_msg, path));
    CHECK(chmod(locked, 0700) == 0);
  }
  presence_clock_destroy(c);
  remove_tree(dir);
}

/* ---- History and operations ------------------------------------------------------- */

static void test_history(void) {
  char dir[64];
  world_t w;
  world_t mem = make_world(0);
  presence_signal_t s = make_signal("alice", "laptop", 1);
  presence_transition_t* t = NULL;
  presence_state_durations_t d;
  size_t n = 0;
  int64_t last = 0;
  uint64_t h = 0;

  w = make_file_world(dir, sizeof dir);

  /* alice: online at 1000100 (published), away at 1002100, offline at
   * 1004100 (clean disconnect). */
  s.trace_id = 77;
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, w.engine, &s, &err));
  step(&w, 100);
  step(&w, 1900);
  EXPECT(PRESENCE_OK, presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_IDLE,
                                           PRESENCE_SOURCE_APP, &err));
  step(&w, 100);
  step(&w, 1900);
  EXPECT(PRESENCE_OK, presence_engine_disconnect(w.engine, h, PRESENCE_DISCONNECT_CLEAN, &err));
  step(&w, 100);
  step(&w, 1000); /* now 1005100 */

  /* Her own audit trail: every field. */
  EXPECT(PRESENCE_OK, presence_engine_history_as(&t, &n, w.engine, "alice", 5, 0, INT64_MAX,
                                                 "alice", 5, &err));
  CHECK(n == 3 && t != NULL);
  if (n == 3 && t != NULL) {
    CHECK(t[0].previous == PRESENCE_STATE_OFFLINE && t[0].state == PRESENCE_STATE_ONLINE);
    CHECK(t[0].self_state == PRESENCE_STATE_ONLINE && t[0].cause == PRESENCE_CAUSE_SIGNAL);
    CHECK(t[0].at_ms == 1000100 && t[0].trace_id == 77 && t[0].version > 0);
    CHECK(t[0].last_seen_ms == 1000000);
    CHECK(t[1].state == PRESENCE_STATE_AWAY && t[1].at_ms == 1002100);
    CHECK(t[2].state == PRESENCE_STATE_OFFLINE && t[2].cause == PRESENCE_CAUSE_DISCONNECT);
    CHECK(t[0].version < t[1].version && t[1].version < t[2].version);
  }
  presence_free(t);
  /* Anyone else (no viewer, or another user): the public view, without
   * causes or trace ids. */
  EXPECT(PRESENCE_OK,
         presence_engine_history(&t, &n, w.engine, "alice", 5, 0, INT64_MAX, &err));
  CHECK(n == 3 && t != NULL);
  if (n == 3 && t != NULL) {
    CHECK(t[0].state == PRESENCE_STATE_ONLINE && t[0].self_state == PRESENCE_STATE_ONLINE);
    CHECK(t[0].cause == PRESENCE_CAUSE_WITHHELD && t[0].trace_id == 0);
    CHECK(t[2].state == PRESENCE_STATE_OFFLINE && t[2].cause == PRESENCE_CAUSE_WITHHELD);
  }
  presence_free(t);
  EXPECT(PRESENCE_OK, presence_engine_history_as(&t, &n, w.engine, "alice", 5, 0, INT64_MAX,
                                                 "bob", 3, &err));
  CHECK(n == 3 && t != NULL && t[1].cause == PRESENCE_CAUSE_WITHHELD);
  presence_free(t);
  /* A window that holds only the middle one; one that holds none. */
  EXPECT(PRESENCE_OK,
         presence_engine_history(&t, &n, w.engine, "alice", 5, 1001000, 1003000, &err));
  CHECK(n == 1 && t != NULL && t[0].state == PRESENCE_STATE_AWAY);
  presence_free(t);
  t = (presence_transition_t*)&d;
  EXPECT(PRESENCE_OK, presence_engine_history(&t, &n, w.engine, "nobody", 6, 0, 1, &err));
  CHECK(n == 0 && t == NULL);

  /* Time in states over [1000000, now + 1000]: the future is not counted. */
  EXPECT(PRESENCE_OK, presence_engine_time_in_states(&d, w.engine, "alice", 5, 1000000,
                                                     1006100, &err));
  CHECK(d.offline_ms == 100 + 1000 && d.online_ms == 2000 && d.away_ms == 2000 && d.dnd_ms == 0);
  EXPECT(PRESENCE_OK,
         presence_engine_time_in_states(NULL, w.engine, "alice", 5, 1000000, 1000001, &err));

  /* A window backwards. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_time_in_states(&d, w.engine, "alice", 5, 10, 1, &err));
  CHECK(contains(last_msg, "from_ms is after to_ms"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_history(&t, &n, w.engine, "alice", 5, 10, 1, &err));

  /* Last seen: the engine's while it holds alice (her idle beat). */
  EXPECT(PRESENCE_OK, presence_engine_last_seen(&last, w.engine, "alice", 5, &err));
  CHECK(last == 1002000);
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_last_seen(&last, w.engine, "nobody", 6, &err));
  CHECK(last == 0);

  /* Drain: the devices that named the gateway disconnect, in bounded calls. */
  {
    const char* users[3] = {"g1", "g2", "g3"};
    int i;
    for (i = 0; i < 3; ++i) {
      s = make_signal(users[i], "pc", 1);
      s.gateway = "gw-a";
      s.gateway_len = 4;
      EXPECT(PRESENCE_OK, presence_engine_signal(w.engine, &s, &err));
    }
    step(&w, 100);
    EXPECT(PRESENCE_OK, presence_engine_drain_gateway(&n, w.engine, "gw-a", 4, 2, &err));
    CHECK(n == 2);
    EXPECT(PRESENCE_OK, presence_engine_drain_gateway(&n, w.engine, "gw-a", 4, 2, &err));
    CHECK(n == 1);
    EXPECT(PRESENCE_OK, presence_engine_drain_gateway(NULL, w.engine, "gw-a", 4, 2, &err));
    step(&w, 100);
    CHECK(get_one(&w, "g1", NULL).state == PRESENCE_STATE_OFFLINE);
    CHECK(get_one(&w, "g3", NULL).live_devices == 0);
    n = 9;
    EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_drain_gateway(&n, w.engine, "gw-b", 4, 2, &err));
    CHECK(n == 0 && contains(last_msg, "gateway"));
  }

  /* Rebuild: what was written comes back. */
  s = make_signal("carol", "pc", 1);
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, w.engine, &s, &err));
  step(&w, 100);
  EXPECT(PRESENCE_OK, presence_engine_rebuild(w.engine, &err));
  CHECK(get_one(&w, "carol", NULL).state == PRESENCE_STATE_ONLINE);
  s.session_id = 2; /* a handle of the rebuilt engine */
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, w.engine, &s, &err));

  /* Erase: carol is forgotten by the engine, its store and its history. */
  EXPECT(PRESENCE_OK, presence_engine_erase(w.engine, "carol", 5, &err));
  CHECK(!get_one(&w, "carol", NULL).known);
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_beat(w.engine, h, PRESENCE_ACTIVITY_ACTIVE,
                                                      PRESENCE_SOURCE_APP, &err));
  EXPECT(PRESENCE_ERR_NOT_FOUND, presence_engine_last_seen(&last, w.engine, "carol", 5, &err));
  EXPECT(PRESENCE_OK, presence_engine_history(&t, &n, w.engine, "carol", 5, 0, INT64_MAX, &err));
  CHECK(n == 0 && t == NULL);
  EXPECT(PRESENCE_OK, presence_engine_erase(w.engine, "nobody", 6, &err)); /* nothing to do */
  step(&w, 100);
  EXPECT(PRESENCE_OK, presence_engine_rebuild(w.engine, &err));
  CHECK(!get_one(&w, "carol", NULL).known); /* never comes back */
  free_world(&w);

  /* An engine without a history store: history queries say so; the rest
   * works from the engine alone. */
  s = make_signal("alice", "laptop", 1);
  EXPECT(PRESENCE_OK, presence_engine_signal(mem.engine, &s, &err));
  step(&mem, 100);
  t = (presence_transition_t*)&d;
  n = 5;
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION,
         presence_engine_history(&t, &n, mem.engine, "alice", 5, 0, INT64_MAX, &err));
  CHECK(t == NULL && n == 0 && contains(last_msg, "no history store"));
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION,
         presence_engine_time_in_states(&d, mem.engine, "alice", 5, 0, 1, &err));
  CHECK(d.online_ms == 0 && d.offline_ms == 0);
  EXPECT(PRESENCE_OK, presence_engine_last_seen(&last, mem.engine, "alice", 5, &err));
  CHECK(last == 1000000);
  EXPECT(PRESENCE_OK, presence_engine_rebuild(mem.engine, &err)); /* nothing to load */
  CHECK(!get_one(&mem, "alice", NULL).known);
  EXPECT(PRESENCE_OK, presence_engine_erase(mem.engine, "alice", 5, &err));
  free_world(&mem);
  remove_tree(dir);
}

/* The per-device audit (docs/design.md section 4): what happened to each
 * device, read by its user only. */
static void test_device_history(void) {
  char dir[64];
  world_t w;
  world_t mem = make_world(0);
  presence_signal_t s = make_signal("alice", "laptop", 1);
  presence_device_transition_t* t = NULL;
  presence_device_transition_t dummy;
  size_t n = 0;
  uint64_t h = 0;
  const char* viewers[2] = {NULL, "bob"};
  int i;

  w = make_file_world(dir, sizeof dir);
  /* Connects at 1000000, disconnects abruptly at 1000100 (the grace
   * begins), and its grace of 1500 ms ends without a reconnect. */
  EXPECT(PRESENCE_OK, presence_engine_connect(&h, w.engine, &s, &err));
  step(&w, 100);
  EXPECT(PRESENCE_OK, presence_engine_disconnect(w.engine, h, PRESENCE_DISCONNECT_ABRUPT, &err));
  step(&w, 100);
  step(&w, 1500);

  EXPECT(PRESENCE_OK, presence_engine_device_history(&t, &n, w.engine, "alice", 5, "laptop", 6, 0,
                                                     INT64_MAX, "alice", 5, &err));
  CHECK(n == 3 && t != NULL);
  if (n == 3 && t != NULL) {
    CHECK(t[0].event == PRESENCE_DEVICE_CONNECT && t[0].at_ms == 1000000);
    CHECK(t[0].session_id == 1 && t[0].platform == PRESENCE_PLATFORM_WEB);
    CHECK(t[1].event == PRESENCE_DEVICE_GRACE && t[1].at_ms == 1000100);
    CHECK(t[2].event == PRESENCE_DEVICE_DEAD_AFTER_GRACE && t[2].at_ms == 1001700);
  }
  presence_free(t);
  /* A window holds its part; an unknown device has none. */
  EXPECT(PRESENCE_OK, presence_engine_device_history(&t, &n, w.engine, "alice", 5, "laptop", 6,
                                                     1000001, 1000100, "alice", 5, &err));
  CHECK(n == 1 && t != NULL && t[0].event == PRESENCE_DEVICE_GRACE);
  presence_free(t);
  t = &dummy;
  EXPECT(PRESENCE_OK, presence_engine_device_history(&t, &n, w.engine, "alice", 5, "phone", 5, 0,
                                                     INT64_MAX, "alice", 5, &err));
  CHECK(n == 0 && t == NULL);

  /* Anyone else, or no viewer, is refused alike, whether or not the user
   * exists. */
  for (i = 0; i < 2; ++i) {
    const size_t len = viewers[i] == NULL ? 0 : strlen(viewers[i]);
    t = &dummy;
    n = 7;
    EXPECT(PRESENCE_ERR_PERMISSION_DENIED,
           presence_engine_device_history(&t, &n, w.engine, "alice", 5, "laptop", 6, 0, INT64_MAX,
                                          viewers[i], len, &err));
    CHECK(t == NULL && n == 0 && contains(last_msg, "only its user's own"));
    EXPECT(PRESENCE_ERR_PERMISSION_DENIED,
           presence_engine_device_history(&t, &n, w.engine, "nobody", 6, "laptop", 6, 0,
                                          INT64_MAX, viewers[i], len, &err));
  }

  /* Bad input: NULL out-parameters, NULL or empty ids, a window backwards. */
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_device_history(NULL, &n, w.engine, "alice", 5, "laptop", 6, 0, 1,
                                        "alice", 5, &err));
  CHECK(contains(last_msg, "out_transitions"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_device_history(&t, NULL, w.engine, "alice", 5, "laptop", 6, 0, 1,
                                        "alice", 5, &err));
  CHECK(contains(last_msg, "out_count"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_device_history(&t, &n, NULL, "alice", 5, "laptop", 6, 0, 1, "alice", 5,
                                        &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_device_history(&t, &n, w.engine, "alice", 5, NULL, 6, 0, 1, "alice", 5,
                                        &err));
  CHECK(contains(last_msg, "device_id is NULL"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_device_history(&t, &n, w.engine, "alice", 5, "", 0, 0, 1, "alice", 5,
                                        &err));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_device_history(&t, &n, w.engine, "alice", 5, "laptop", 6, 10, 1,
                                        "alice", 5, &err));
  CHECK(contains(last_msg, "from_ms is after to_ms"));
  EXPECT(PRESENCE_ERR_INVALID_ARGUMENT,
         presence_engine_device_history(&t, &n, w.engine, "alice", 5, "laptop", 6, 0, 1, NULL, 5,
                                        &err));

  /* Erase: her devices' audit is gone with her. */
  EXPECT(PRESENCE_OK, presence_engine_erase(w.engine, "alice", 5, &err));
  EXPECT(PRESENCE_OK, presence_engine_device_history(&t, &n, w.engine, "alice", 5, "laptop", 6, 0,
                                                     INT64_MAX, "alice", 5, &err));
  CHECK(n == 0 && t == NULL);
  free_world(&w);

  /* Without a history store it says so. */
  EXPECT(PRESENCE_ERR_FAILED_PRECONDITION,
         presence_engine_device_history(&t, &n, mem.engine, "alice", 5, "laptop", 6, 0, 1,
                                        "alice", 5, &err));
  CHECK(contains(last_msg, "no history store"));
  free_world(&mem);
  remove_tree(dir);
}

int main(void) {
  test_version();
  test_options();
  test_clock();
  test_engine_lifecycle();
  test_signals();
  test_handles();
  test_beat_many();
  test_overrides();
  test_get();
  test_fanout_poll();
  test_fanout_push();
  test_sink_reentry();
  test_probes();
  test_metrics();
  test_lifetimes();
  test_threads();
  test_limits();
  test_file_store();
  test_history();
  test_device_history();
  test_bad_input();
  printf("c_api_test: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
