// Fuzz target: the C ABI (include/presence/c.h), driven by a byte stream
// that encodes calls. Arguments come from the stream too, so null handles
// and pointers, lengths out of range, ids of any bytes, invalid enum values
// and destroys in any order all occur. Every call must answer a status (and
// free what it hands back with presence_free), never crash.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "presence/c.h"

namespace {

class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ >= end_; }
  uint8_t U8() { return p_ < end_ ? *p_++ : 0; }
  int64_t I64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | U8();
    return static_cast<int64_t>(v);
  }
  // A short known id most of the time; else raw bytes of any length.
  std::string Id() {
    const uint8_t b = U8();
    if (b < 220) return "id" + std::to_string(b % 5);
    std::string raw;
    const size_t n = U8() % 140;
    for (size_t i = 0; i < n && !empty(); ++i) raw.push_back(static_cast<char>(U8()));
    return raw;
  }
  // A length that is usually right, sometimes wildly off (with a NULL data
  // pointer only: the ABI must never read past what it is given).
  bool Null() { return U8() < 8; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// Calls that return an error message free it, as a caller must.
char* g_err = nullptr;
char** Err() {
  presence_free(g_err);
  g_err = nullptr;
  return &g_err;
}

void Sink(uint64_t, const char* batch, size_t len, void* payload) {
  // The batch must be readable during the call.
  volatile char sum = 0;
  for (size_t i = 0; i < len; ++i) sum ^= batch[i];
  ++*static_cast<int*>(payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  presence_clock_t* clock = nullptr;
  presence_clock_manual_new(&clock, 1'000'000, Err());
  presence_engine_options_t eo = PRESENCE_ENGINE_OPTIONS_INIT;
  eo.clock = clock;
  eo.shards = 2;
  if (in.U8() < 30) eo.min_dwell_ms = -static_cast<int64_t>(in.U8());  // invalid options too
  presence_engine_t* engine = nullptr;
  presence_engine_new(&engine, in.U8() < 5 ? nullptr : &eo, Err());
  presence_fanout_t* fanout = nullptr;
  presence_fanout_new(&fanout, engine, nullptr, Err());
  std::vector<uint64_t> handles, subs;
  int sink_calls = 0;

  while (!in.empty()) {
    const std::string user = in.Id(), device = in.Id();
    presence_signal_t s = PRESENCE_SIGNAL_INIT;
    s.user_id = in.Null() ? nullptr : user.data();
    s.user_id_len = user.size();
    s.device_id = device.data();
    s.device_id_len = device.size();
    s.session_id = in.U8() % 4;
    s.platform = in.U8() % 7;
    s.source = in.U8() % 5;
    s.activity = in.U8() % 4;
    presence_bytes_t ids[2] = {{user.data(), user.size()}, {device.data(), device.size()}};
    switch (in.U8() % 19) {
      case 0: {
        uint64_t h = 0;
        if (presence_engine_connect(&h, engine, in.Null() ? nullptr : &s, Err()) == PRESENCE_OK) {
          handles.push_back(h);
        }
        break;
      }
      case 1:
        presence_engine_signal(engine, &s, Err());
        break;
      case 2: {
        presence_batch_result_t r;
        presence_signal_t batch[3] = {s, s, s};
        batch[1].session_id += 1;
        presence_engine_signal_batch(in.Null() ? nullptr : &r, engine, in.Null() ? nullptr : batch,
                                     in.U8() % 4, Err());
        break;
      }
      case 3: {
        // One beat, then sometimes a batch of up to 4 known or random handles.
        auto handle = [&] {
          return handles.empty() || in.U8() < 20 ? static_cast<uint64_t>(in.I64())
                                                 : handles[in.U8() % handles.size()];
        };
        presence_engine_beat(engine, handle(), in.U8() % 4, in.U8() % 5, Err());
        if (in.U8() < 64) {
          uint64_t batch[4];
          for (uint64_t& h : batch) h = handle();
          presence_batch_result_t r;
          presence_engine_beat_many(in.Null() ? nullptr : &r, engine, in.Null() ? nullptr : batch,
                                    in.U8() % 5, in.U8() % 4, in.U8() % 5, Err());
        }
        break;
      }
      case 4:
        if (!handles.empty()) presence_engine_disconnect(engine, handles[in.U8() % handles.size()], in.U8() % 4, Err());
        break;
      case 5:
        presence_engine_disconnect_device(engine, user.data(), user.size(), device.data(), device.size(),
                                          in.U8() % 3, in.U8() % 4, Err());
        break;
      case 6: {
        uint64_t id;
        presence_engine_set_override(in.Null() ? nullptr : &id, engine, user.data(), user.size(),
                                     in.U8() % 6, in.U8() < 100 ? 1'000'000 + in.U8() * 1000 : 0,
                                     0, Err());
        break;
      }
      case 7: {
        size_t removed;
        presence_engine_revoke_override(engine, user.data(), user.size(), in.U8(), Err());
        presence_engine_clear_overrides(&removed, engine, user.data(), user.size(), Err());
        presence_engine_revoke_overrides_set_between(&removed, engine, in.I64(), in.I64(), Err());
        break;
      }
      case 8: {
        presence_override_t* list = nullptr;
        size_t n = 0;
        presence_engine_list_overrides(&list, &n, engine, user.data(), user.size(), Err());
        presence_free(list);
        break;
      }
      case 9: {
        presence_user_presence_t* users = nullptr;
        presence_engine_get(in.Null() ? nullptr : &users, engine, in.Null() ? nullptr : ids,
                            in.U8() % 3, device.data(), device.size(), Err());
        presence_free(users);
        users = nullptr;
        presence_engine_get_published(&users, engine, ids, 2, nullptr, 0, Err());
        presence_free(users);
        break;
      }
      case 10:
        presence_clock_advance(clock, in.U8() * (in.U8() < 30 ? 1000 : 10), Err());
        presence_engine_tick(nullptr, engine, Err());
        break;
      case 11: {
        presence_subscriber_options_t so = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
        so.owner_user_id = user.data();
        so.owner_user_id_len = in.U8() < 128 ? user.size() : 0;
        if (in.U8() < 60) {
          so.sink = Sink;
          so.sink_payload = &sink_calls;
        }
        uint64_t sub = 0;
        if (presence_fanout_subscribe(&sub, fanout, in.Null() ? nullptr : &so, Err()) == PRESENCE_OK) {
          subs.push_back(sub);
        }
        break;
      }
      case 12:
        if (!subs.empty()) presence_fanout_add_users(fanout, subs[in.U8() % subs.size()], ids, in.U8() % 3, Err());
        break;
      case 13: {
        const std::string topic = in.Id();
        presence_fanout_add_members(fanout, topic.data(), topic.size(), ids, 2, Err());
        if (!subs.empty()) presence_fanout_join(fanout, subs[in.U8() % subs.size()], topic.data(), topic.size(), Err());
        break;
      }
      case 14:
        if (!subs.empty()) {
          uint8_t has = 0;
          char* batch = nullptr;
          size_t len = 0;
          presence_fanout_poll(&has, &batch, &len, fanout, subs[in.U8() % subs.size()], Err());
          presence_free(batch);
          presence_fanout_resume(fanout, subs[in.U8() % subs.size()], in.U8(), Err());
        }
        break;
      case 15: {
        const std::string topic = in.Id();
        if (!subs.empty()) {
          presence_fanout_remove_users(fanout, subs[in.U8() % subs.size()], ids, 1, Err());
          presence_fanout_leave(fanout, subs[in.U8() % subs.size()], topic.data(), topic.size(), Err());
          presence_fanout_unsubscribe(fanout, subs[in.U8() % subs.size()], Err());
        }
        presence_fanout_remove_members(fanout, topic.data(), topic.size(), ids, 2, Err());
        presence_fanout_replace_members(fanout, topic.data(), topic.size(), ids, in.U8() % 3, Err());
        break;
      }
      case 16: {
        char* text = nullptr;
        presence_engine_render_metrics(&text, nullptr, engine, Err());
        presence_free(text);
        text = nullptr;
        presence_fanout_render_metrics(&text, nullptr, fanout, Err());
        presence_free(text);
        break;
      }
      case 17: {
        // History and operator calls (a memory engine: no history store).
        presence_transition_t* transitions = nullptr;
        size_t n = 0;
        presence_engine_history(in.Null() ? nullptr : &transitions, &n, engine,
                                in.Null() ? nullptr : user.data(), user.size(), in.I64(), in.I64(),
                                Err());
        presence_free(transitions);
        presence_state_durations_t d;
        presence_engine_time_in_states(&d, engine, user.data(), user.size(), in.I64(), in.I64(),
                                       Err());
        int64_t last = 0;
        presence_engine_last_seen(&last, engine, user.data(), user.size(), Err());
        presence_engine_drain_gateway(&n, engine, device.data(), device.size(), in.U8() % 3, Err());
        if (in.U8() < 40) presence_engine_erase(engine, user.data(), user.size(), Err());
        if (in.U8() < 10) presence_engine_rebuild(engine, Err());  // handles then answer NOT_FOUND
        break;
      }
      default:
        // Handles destroyed in any order: the others must keep working or
        // answer a status.
        if (in.U8() < 40) {
          const uint8_t which = in.U8() % 3;
          if (which == 0) { presence_clock_destroy(clock); clock = nullptr; }
          if (which == 1) { presence_fanout_destroy(fanout); fanout = nullptr; subs.clear(); }
          if (which == 2) { presence_engine_destroy(engine); engine = nullptr; handles.clear(); }
        }
        break;
    }
  }
  presence_fanout_destroy(fanout);
  presence_engine_destroy(engine);
  presence_clock_destroy(clock);
  presence_free(g_err);
  g_err = nullptr;
  return 0;
}
