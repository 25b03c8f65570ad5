// The C side of push sinks (see sink.go): the library calls these with the
// cgo.Handle of a Go sink as the payload, and they call the exported Go
// functions. The casts adapt the library's const char* and void* to what
// cgo exports.
#include <stdint.h>

#include "_cgo_export.h"
#include "presence/c.h"

void presence_go_sink(uint64_t subscriber, const char* batch, size_t batch_len, void* payload) {
  presenceGoSink(subscriber, (char*)batch, batch_len, (uintptr_t)payload);
}

void presence_go_payload_free(void* payload) { presenceGoPayloadFree((uintptr_t)payload); }

void presence_go_probe(const presence_probe_t* p, void* payload) {
  presenceGoProbe((char*)p->user_id, p->user_id_len, (char*)p->device_id, p->device_id_len,
                  p->session_id, p->probe_id, p->source, p->attempt, (char*)p->gateway,
                  p->gateway_len, (uintptr_t)payload);
}
