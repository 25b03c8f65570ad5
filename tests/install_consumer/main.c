/* Uses an installed presence through its C ABI (presence/c.h, linked as
 * libpresence.so), the way a C host or a binding would: creates an engine on
 * a manual clock, connects a device, ticks, and checks that the user is
 * ONLINE. Exit code 0 on success. */
#include <stdio.h>
#include <string.h>

#include "presence/c.h"

static int fail(const char* what, char* err) {
  fprintf(stderr, "consumer_c: %s%s%s\n", what, err ? ": " : "", err ? err : "");
  presence_free(err);
  return 1;
}

int main(void) {
  presence_clock_t* clock = NULL;
  presence_engine_t* engine = NULL;
  presence_engine_options_t options = PRESENCE_ENGINE_OPTIONS_INIT;
  presence_signal_t s = PRESENCE_SIGNAL_INIT;
  presence_bytes_t alice = {"alice", 5};
  presence_user_presence_t* got = NULL;
  uint64_t handle = 0;
  size_t published = 0;
  char* err = NULL;
  int online;

  if (strcmp(presence_version_string(), PRESENCE_VERSION_STRING) != 0 ||
      presence_version_number() != PRESENCE_VERSION_NUMBER) {
    return fail("headers and library disagree on the version", NULL);
  }
  if (presence_clock_manual_new(&clock, 1000000, &err) != PRESENCE_OK) return fail("clock", err);
  options.clock = clock;
  if (presence_engine_new(&engine, &options, &err) != PRESENCE_OK) return fail("engine", err);
  s.user_id = "alice";
  s.user_id_len = 5;
  s.device_id = "laptop";
  s.device_id_len = 6;
  s.session_id = 1;
  s.platform = PRESENCE_PLATFORM_DESKTOP;
  if (presence_engine_connect(&handle, engine, &s, &err) != PRESENCE_OK) {
    return fail("connect", err);
  }
  presence_clock_advance(clock, 100, NULL);
  if (presence_engine_tick(&published, engine, &err) != PRESENCE_OK) return fail("tick", err);
  if (presence_engine_get(&got, engine, &alice, 1, NULL, 0, &err) != PRESENCE_OK) {
    return fail("get", err);
  }
  online = got[0].state == PRESENCE_STATE_ONLINE;
  presence_free(got);
  presence_engine_destroy(engine);
  presence_clock_destroy(clock);
  if (!online) return fail("alice is not ONLINE", NULL);
  if (published != 1) return fail("expected one published change", NULL);
  printf("consumer_c: presence %s (C ABI), alice is online\n", presence_version_string());
  return 0;
}
