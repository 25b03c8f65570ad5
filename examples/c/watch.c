/* examples/c/watch.c: the C ABI (presence/c.h) in one small program.
 *
 * Four users connect their devices, one sets Do Not Disturb, one's phone
 * drops off the network, and a watcher subscribed to all four prints every
 * batch of diffs it receives. The batches arrive through a push sink, as
 * encoded presence.v1.DiffBatch messages; a few lines of hand-written
 * protobuf reading (read_varint, read_field) decode them, since a C host
 * usually forwards the bytes to its clients untouched. At the end,
 * presence_engine_get answers for everyone.
 *
 * The engine runs on a manual clock, advanced by the loop below in steps of
 * 100 ms, so the program runs in an instant and prints the same every time.
 * A real host uses the system clock (no clock in the options), calls
 * presence_engine_tick from a 100 ms timer, and presence_engine_beat from
 * each socket's heartbeat.
 *
 * Build: part of the examples (build/examples/c_watch); by hand, against an
 * installed presence:
 *   cc -std=c99 watch.c $(pkg-config --cflags --libs presence) -o watch */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "presence/c.h"

static const char* state_name(int s) {
  switch (s) {
    case PRESENCE_STATE_OFFLINE: return "offline";
    case PRESENCE_STATE_AWAY: return "away";
    case PRESENCE_STATE_ONLINE: return "online";
    case PRESENCE_STATE_DND: return "dnd";
    default: return "?";
  }
}

/* Exits with the library's message when a call fails. */
static void check(int rc, char* err, const char* what) {
  if (rc == PRESENCE_OK) return;
  fprintf(stderr, "watch: %s: %s (%s)\n", what, err ? err : "", presence_status_name(rc));
  presence_free(err);
  exit(1);
}

/* ---- Just enough protobuf to read a DiffBatch ---------------------------------- */

typedef struct {
  const unsigned char* p;
  const unsigned char* end;
} reader_t;

static int read_varint(reader_t* r, uint64_t* v) {
  int shift;
  *v = 0;
  for (shift = 0; r->p < r->end && shift < 64; shift += 7) {
    unsigned char b = *r->p++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return 1;
  }
  return 0;
}

/* One field: its number, and a varint value or a byte range. */
typedef struct {
  uint32_t number;
  uint64_t value;
  const unsigned char* bytes; /* NULL for a varint */
  size_t len;
} field_t;

static int read_field(reader_t* r, field_t* f) {
  uint64_t key;
  memset(f, 0, sizeof *f);
  if (!read_varint(r, &key)) return 0;
  f->number = (uint32_t)(key >> 3);
  switch (key & 7) {
    case 0: return read_varint(r, &f->value);
    case 2:
      if (!read_varint(r, &f->value) || f->value > (uint64_t)(r->end - r->p)) return 0;
      f->bytes = r->p;
      f->len = (size_t)f->value;
      r->p += f->len;
      return 1;
    case 1: if (r->end - r->p < 8) return 0; r->p += 8; return 1;
    case 5: if (r->end - r->p < 4) return 0; r->p += 4; return 1;
    default: return 0;
  }
}

/* Prints one presence.v1.UserState. */
static void print_user(const unsigned char* data, size_t len, const char* where) {
  static const char* platforms[] = {"", "web", "desktop", "mobile", "console", "other"};
  reader_t r = {data, data + len}, dr;
  field_t f, d;
  char devices[128] = "";
  const unsigned char* id = NULL;
  size_t id_len = 0;
  int state = 0, removed = 0;
  while (r.p < r.end && read_field(&r, &f)) {
    if (f.number == 1 && f.bytes) { id = f.bytes; id_len = f.len; }
    if (f.number == 2 && !f.bytes) state = (int)f.value;
    if (f.number == 6 && !f.bytes) removed = (int)f.value;
    if (f.number == 5 && f.bytes) { /* DeviceSummary: one count per platform */
      dr.p = f.bytes;
      dr.end = f.bytes + f.len;
      while (dr.p < dr.end && read_field(&dr, &d)) {
        if (!d.bytes && d.number >= 1 && d.number <= 5 && d.value > 0) {
          size_t at = strlen(devices);
          snprintf(devices + at, sizeof devices - at, "%s%s %u", at ? ", " : "",
                   platforms[d.number], (unsigned)d.value);
        }
      }
    }
  }
  if (removed) {
    printf("          %-6.*s (removed)%s\n", (int)id_len, (const char*)id, where);
  } else {
    printf("          %-6.*s %-8s %s%s\n", (int)id_len, (const char*)id, state_name(state),
           devices[0] ? devices : "-", where);
  }
}

/* ---- The watcher ------------------------------------------------------------------------- */

typedef struct {
  presence_clock_t* clock;
  int64_t start_ms;
  int batches;
  size_t bytes;
} watcher_t;

/* The push sink: runs on the thread that calls presence_engine_tick, and
 * the bytes are valid only during the call. */
static void on_batch(uint64_t subscriber, const char* batch, size_t len, void* payload) {
  watcher_t* w = (watcher_t*)payload;
  reader_t r = {(const unsigned char*)batch, (const unsigned char*)batch + len};
  field_t f;
  uint64_t sequence = 0;
  int snapshot = 0;
  int64_t now = 0;
  presence_clock_now(&now, w->clock, NULL);
  ++w->batches;
  w->bytes += len;
  /* The header first (subscriber, sequence, snapshot), then the entries. */
  while (r.p < r.end && read_field(&r, &f)) {
    if (f.number == 2 && !f.bytes) sequence = f.value;
    if (f.number == 3 && !f.bytes) snapshot = (int)f.value;
  }
  printf("[%5.1fs] subscriber %llu: batch #%llu%s, %zu bytes\n", (double)(now - w->start_ms) / 1000.0,
         (unsigned long long)subscriber, (unsigned long long)sequence,
         snapshot ? " (snapshot)" : "", len);
  r.p = (const unsigned char*)batch;
  while (r.p < r.end && read_field(&r, &f)) {
    if (f.number == 4 && f.bytes) print_user(f.bytes, f.len, "");
  }
}

/* ---- The scene --------------------------------------------------------------------------- */

typedef struct {
  const char* user;
  const char* device;
  int platform;
  uint64_t handle;
} device_t;

int main(void) {
  presence_clock_t* clock = NULL;
  presence_engine_t* engine = NULL;
  presence_fanout_t* fanout = NULL;
  presence_engine_options_t options = PRESENCE_ENGINE_OPTIONS_INIT;
  presence_subscriber_options_t sub_options = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  watcher_t watcher = {NULL, 0, 0, 0};
  device_t devices[] = {
      {"alice", "laptop", PRESENCE_PLATFORM_DESKTOP, 0},
      {"bob", "phone", PRESENCE_PLATFORM_MOBILE, 0},
      {"carol", "browser", PRESENCE_PLATFORM_WEB, 0},
      {"dave", "console", PRESENCE_PLATFORM_CONSOLE, 0},
  };
  const size_t n = sizeof devices / sizeof devices[0];
  presence_bytes_t everyone[4];
  presence_user_presence_t* users = NULL;
  uint64_t subscriber = 0;
  char* err = NULL;
  size_t i;
  int tick;

  printf("presence %s (header %s), C ABI\n", presence_version_string(), PRESENCE_VERSION_STRING);
  if (presence_version_number() / 10000 != PRESENCE_VERSION_MAJOR) {
    fprintf(stderr, "watch: library and header majors differ\n");
    return 1;
  }

  check(presence_clock_manual_new(&clock, 1700000000000LL, &err), err, "clock");
  options.clock = clock;
  check(presence_engine_new(&engine, &options, &err), err, "engine");
  check(presence_fanout_new(&fanout, engine, NULL, &err), err, "fan-out");

  /* The watcher: a push subscriber that watches all four users. */
  watcher.clock = clock;
  watcher.start_ms = 1700000000000LL;
  sub_options.sink = on_batch;
  sub_options.sink_payload = &watcher;
  check(presence_fanout_subscribe(&subscriber, fanout, &sub_options, &err), err, "subscribe");
  for (i = 0; i < n; ++i) {
    everyone[i].data = devices[i].user;
    everyone[i].len = strlen(devices[i].user);
  }
  check(presence_fanout_add_users(fanout, subscriber, everyone, n, &err), err, "add users");

  /* Ten simulated seconds, a tick every 100 ms. */
  for (tick = 0; tick <= 100; ++tick) {
    const int64_t t = tick * 100;
    if (t == 0) { /* alice, bob and carol connect; dave stays away for now */
      for (i = 0; i < 3; ++i) {
        presence_signal_t s = PRESENCE_SIGNAL_INIT;
        s.user_id = devices[i].user;
        s.user_id_len = strlen(devices[i].user);
        s.device_id = devices[i].device;
        s.device_id_len = strlen(devices[i].device);
        s.session_id = 1;
        s.platform = devices[i].platform;
        check(presence_engine_connect(&devices[i].handle, engine, &s, &err), err, "connect");
      }
    }
    if (t == 2000) {
      printf("[%5.1fs] carol sets Do Not Disturb for an hour\n", t / 1000.0);
      check(presence_engine_set_override(NULL, engine, "carol", 5, PRESENCE_OVERRIDE_DND,
                                         1700000000000LL + t + 3600 * 1000, 0, &err),
            err, "set override");
    }
    if (t == 3000) {
      presence_signal_t s = PRESENCE_SIGNAL_INIT;
      printf("[%5.1fs] dave turns his console on\n", t / 1000.0);
      s.user_id = "dave";
      s.user_id_len = 4;
      s.device_id = "console";
      s.device_id_len = 7;
      s.session_id = 1;
      s.platform = PRESENCE_PLATFORM_CONSOLE;
      check(presence_engine_connect(&devices[3].handle, engine, &s, &err), err, "connect");
    }
    if (t == 4000) {
      printf("[%5.1fs] bob's phone drops off the network (abrupt disconnect)\n", t / 1000.0);
      check(presence_engine_disconnect(engine, devices[1].handle, PRESENCE_DISCONNECT_ABRUPT,
                                       &err),
            err, "disconnect");
      devices[1].handle = 0;
    }
    if (t == 6000) {
      printf("[%5.1fs] alice walks away from her laptop (idle)\n", t / 1000.0);
    }
    /* Every device still connected beats once a second (alice: idle from 6 s). */
    if (t % 1000 == 500) {
      for (i = 0; i < n; ++i) {
        if (devices[i].handle == 0) continue;
        check(presence_engine_beat(engine, devices[i].handle,
                                   (i == 0 && t > 6000) ? PRESENCE_ACTIVITY_IDLE
                                                        : PRESENCE_ACTIVITY_ACTIVE,
                                   PRESENCE_SOURCE_APP, &err),
              err, "beat");
      }
    }
    check(presence_engine_tick(NULL, engine, &err), err, "tick");
    check(presence_clock_advance(clock, 100, &err), err, "advance");
  }

  /* What everyone looks like now, to an anonymous viewer. */
  check(presence_engine_get(&users, engine, everyone, n, NULL, 0, &err), err, "get");
  printf("\nnow:\n");
  for (i = 0; i < n; ++i) {
    printf("  %-6.*s %-8s live devices %u, last seen %.1f s ago%s\n", (int)users[i].user_id_len,
           users[i].user_id, state_name(users[i].state), users[i].live_devices,
           users[i].freshness_ms / 1000.0, users[i].has_override ? ", override set" : "");
  }
  presence_free(users);
  printf("\nthe watcher received %d batches, %zu bytes\n", watcher.batches, watcher.bytes);

  presence_fanout_destroy(fanout);
  presence_engine_destroy(engine);
  presence_clock_destroy(clock);
  return watcher.batches >= 4 ? 0 : 1;
}
