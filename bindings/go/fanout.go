package presence

/*
#include <stdint.h>
#include <stdlib.h>
#include "presence/c.h"

// In sink.c.
void presence_go_sink(uint64_t subscriber, const char* batch, size_t batch_len, void* payload);
void presence_go_payload_free(void* payload);

// Subscribe with options built on the C stack: the owner id may point into
// Go memory, and the payload is a cgo.Handle (an integer, not a Go pointer).
static int presence_go_subscribe(uint64_t* out, presence_fanout_t* f, const char* owner,
                                 size_t owner_len, uintptr_t sink_handle, char** errmsg) {
  presence_subscriber_options_t o = PRESENCE_SUBSCRIBER_OPTIONS_INIT;
  o.owner_user_id = owner;
  o.owner_user_id_len = owner_len;
  if (sink_handle != 0) {
    o.sink = presence_go_sink;
    o.sink_payload = (void*)sink_handle;
    o.sink_payload_free = presence_go_payload_free;
  }
  return presence_fanout_subscribe(out, f, &o, errmsg);
}
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// FanoutOptions are the fields of presence_fanout_options_t
// (presence::FanoutOptions, include/presence/fanout.h). Start from
// DefaultFanoutOptions.
type FanoutOptions struct {
	FlushIntervalMs        int64   // 100
	MaxBatch               int     // 1024: flush sooner when this many changes wait
	RatePerSec             float64 // 50: token bucket per subscriber, batches/s; 0: unlimited
	Burst                  float64 // 20
	MaxOutboxBatches       int     // 256: past it a polling subscriber gets a snapshot
	ResumeWindow           int     // 64 batches kept for resume ...
	ResumeWindowBytes      int     // 32768 ... and at most this many bytes
	IntervalModeMembers    int     // 1000: larger topics flush at most every ...
	LargeTopicIntervalMs   int64   // 1000
	CountsOnlyMembers      int     // 10000: larger topics carry counts only
	TopicHistory           int     // 32
	MaxSubscribers         int     // 1048576
	MaxListUsers           int     // 10000
	MaxTopicsPerSubscriber int     // 1000
	MaxTopicMembers        int     // 1048576
}

// DefaultFanoutOptions returns the library's defaults (presence_fanout_options_init).
func DefaultFanoutOptions() FanoutOptions {
	var c C.presence_fanout_options_t
	if rc := C.presence_fanout_options_init(&c, C.PRESENCE_FANOUT_OPTIONS_VERSION, nil); rc != C.PRESENCE_OK {
		panic("presence: presence_fanout_options_init failed: " + Code(rc).String())
	}
	return FanoutOptions{
		FlushIntervalMs:        int64(c.flush_interval_ms),
		MaxBatch:               int(c.max_batch),
		RatePerSec:             float64(c.rate_per_sec),
		Burst:                  float64(c.burst),
		MaxOutboxBatches:       int(c.max_outbox_batches),
		ResumeWindow:           int(c.resume_window),
		ResumeWindowBytes:      int(c.resume_window_bytes),
		IntervalModeMembers:    int(c.interval_mode_members),
		LargeTopicIntervalMs:   int64(c.large_topic_interval_ms),
		CountsOnlyMembers:      int(c.counts_only_members),
		TopicHistory:           int(c.topic_history),
		MaxSubscribers:         int(c.max_subscribers),
		MaxListUsers:           int(c.max_list_users),
		MaxTopicsPerSubscriber: int(c.max_topics_per_subscriber),
		MaxTopicMembers:        int(c.max_topic_members),
	}
}

// SubscriberID names a subscriber of a fan-out (never 0).
type SubscriberID uint64

// SubscriberOptions configure Subscribe. The zero value is a plain pull
// subscriber.
type SubscriberOptions struct {
	// When set, the subscriber belongs to this user: watching the user in
	// its list, it sees the user's true state.
	OwnerUserID string
	// Push delivery: called with every batch. nil: pull with Poll.
	Sink Sink
}

// Fanout delivers an engine's published changes to subscribers as batched
// diffs (presence_fanout_t). A subscriber watches a list of users, topics,
// or both; every batch is a presence.v1.DiffBatch, the first a snapshot of
// the whole interest set. The fan-out flushes from Engine.Tick.
//
// Every method may be called from any goroutine at once, except Close,
// which must be the last and must not be called from inside a sink.
type Fanout struct {
	p      atomic.Pointer[C.presence_fanout_t]
	panics *sinkPanics // the engine's: Tick reports sink panics
}

// NewFanout creates a fan-out over engine and attaches it, so that the
// engine's ticks feed it. It holds a reference to the C engine. opts may be
// nil: every default.
func NewFanout(engine *Engine, opts *FanoutOptions) (*Fanout, error) {
	ep, err := engine.ptr()
	if err != nil {
		return nil, err
	}
	var copts *C.presence_fanout_options_t
	if opts != nil {
		copts = &C.presence_fanout_options_t{}
		C.presence_fanout_options_init(copts, C.PRESENCE_FANOUT_OPTIONS_VERSION, nil)
		copts.flush_interval_ms = C.int64_t(opts.FlushIntervalMs)
		copts.max_batch = C.size_t(opts.MaxBatch)
		copts.rate_per_sec = C.double(opts.RatePerSec)
		copts.burst = C.double(opts.Burst)
		copts.max_outbox_batches = C.size_t(opts.MaxOutboxBatches)
		copts.resume_window = C.size_t(opts.ResumeWindow)
		copts.resume_window_bytes = C.size_t(opts.ResumeWindowBytes)
		copts.interval_mode_members = C.size_t(opts.IntervalModeMembers)
		copts.large_topic_interval_ms = C.int64_t(opts.LargeTopicIntervalMs)
		copts.counts_only_members = C.size_t(opts.CountsOnlyMembers)
		copts.topic_history = C.size_t(opts.TopicHistory)
		copts.max_subscribers = C.size_t(opts.MaxSubscribers)
		copts.max_list_users = C.size_t(opts.MaxListUsers)
		copts.max_topics_per_subscriber = C.size_t(opts.MaxTopicsPerSubscriber)
		copts.max_topic_members = C.size_t(opts.MaxTopicMembers)
		for _, v := range []int{opts.MaxBatch, opts.MaxOutboxBatches, opts.ResumeWindow,
			opts.ResumeWindowBytes, opts.IntervalModeMembers, opts.CountsOnlyMembers,
			opts.TopicHistory, opts.MaxSubscribers, opts.MaxListUsers,
			opts.MaxTopicsPerSubscriber, opts.MaxTopicMembers} {
			if v < 0 {
				return nil, errInvalid("fan-out options: a count is negative (%d)", v)
			}
		}
	}
	var p *C.presence_fanout_t
	var msg *C.char
	rc := C.presence_fanout_new(&p, ep, copts, &msg)
	keepAlive(engine)
	if err := status(rc, msg); err != nil {
		return nil, err
	}
	f := &Fanout{panics: engine.panics}
	f.p.Store(p)
	runtime.SetFinalizer(f, (*Fanout).Close)
	return f, nil
}

// Close detaches from the engine (waiting for a tick in progress), releases
// every push subscriber's sink, and frees the fan-out. Idempotent; calls
// after it answer ErrClosed.
func (f *Fanout) Close() error {
	if p := f.p.Swap(nil); p != nil {
		C.presence_fanout_destroy(p)
		runtime.SetFinalizer(f, nil)
	}
	return nil
}

func (f *Fanout) ptr() (*C.presence_fanout_t, error) {
	if p := f.p.Load(); p != nil {
		return p, nil
	}
	return nil, errClosed("fan-out")
}

// Subscribe opens a subscriber (opts may be nil: a plain pull subscriber).
// Its first batch is a snapshot.
func (f *Fanout) Subscribe(opts *SubscriberOptions) (SubscriberID, error) {
	p, err := f.ptr()
	if err != nil {
		return 0, err
	}
	var owner string
	var h cgo.Handle
	if opts != nil {
		owner = opts.OwnerUserID
		if opts.Sink != nil {
			h = newSinkHandle(opts.Sink, f.panics)
		}
	}
	var id C.uint64_t
	var msg *C.char
	rc := C.presence_go_subscribe(&id, p, cstr(owner), C.size_t(len(owner)), C.uintptr_t(h), &msg)
	keepAlive(f)
	if err := status(rc, msg); err != nil {
		if h != 0 {
			deleteSinkHandle(h) // the library calls sink_payload_free only for open subscribers
		}
		return 0, err
	}
	return SubscriberID(id), nil
}

// Unsubscribe closes a subscriber: no batch is delivered to it after this
// returns (except one whose sink call had already started). NotFound when
// unknown or already closed.
func (f *Fanout) Unsubscribe(sub SubscriberID) error {
	p, err := f.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_fanout_unsubscribe(p, C.uint64_t(sub), &msg)
	keepAlive(f)
	return status(rc, msg)
}

type listFn func(*C.presence_fanout_t, C.uint64_t, *C.presence_bytes_t, C.size_t, **C.char) C.int

func (f *Fanout) list(fn listFn, sub SubscriberID, ids []string) error {
	p, err := f.ptr()
	if err != nil {
		return err
	}
	list := cBytesList(ids)
	defer C.free(unsafe.Pointer(list))
	var msg *C.char
	rc := fn(p, C.uint64_t(sub), list, C.size_t(len(ids)), &msg)
	keepAlive(f)
	return status(rc, msg)
}

// AddUsers adds users to the subscriber's list, in one C call; they appear
// in its next batch with their current state. ResourceExhausted past
// MaxListUsers.
func (f *Fanout) AddUsers(sub SubscriberID, userIDs ...string) error {
	return f.list(func(p *C.presence_fanout_t, s C.uint64_t, l *C.presence_bytes_t, n C.size_t, m **C.char) C.int {
		return C.presence_fanout_add_users(p, s, l, n, m)
	}, sub, userIDs)
}

// RemoveUsers removes users from the list; each appears once with Removed set.
func (f *Fanout) RemoveUsers(sub SubscriberID, userIDs ...string) error {
	return f.list(func(p *C.presence_fanout_t, s C.uint64_t, l *C.presence_bytes_t, n C.size_t, m **C.char) C.int {
		return C.presence_fanout_remove_users(p, s, l, n, m)
	}, sub, userIDs)
}

// ReplaceUsers sets the whole list.
func (f *Fanout) ReplaceUsers(sub SubscriberID, userIDs ...string) error {
	return f.list(func(p *C.presence_fanout_t, s C.uint64_t, l *C.presence_bytes_t, n C.size_t, m **C.char) C.int {
		return C.presence_fanout_replace_users(p, s, l, n, m)
	}, sub, userIDs)
}

// Join makes the subscriber watch a topic; its next batch carries the whole
// topic. NotFound for a topic with no members.
func (f *Fanout) Join(sub SubscriberID, topic string) error {
	p, err := f.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_fanout_join(p, C.uint64_t(sub), cstr(topic), C.size_t(len(topic)), &msg)
	keepAlive(f)
	return status(rc, msg)
}

// Leave stops watching a topic.
func (f *Fanout) Leave(sub SubscriberID, topic string) error {
	p, err := f.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_fanout_leave(p, C.uint64_t(sub), cstr(topic), C.size_t(len(topic)), &msg)
	keepAlive(f)
	return status(rc, msg)
}

type membersFn func(*C.presence_fanout_t, *C.char, C.size_t, *C.presence_bytes_t, C.size_t, **C.char) C.int

func (f *Fanout) members(fn membersFn, topic string, ids []string) error {
	p, err := f.ptr()
	if err != nil {
		return err
	}
	list := cBytesList(ids)
	defer C.free(unsafe.Pointer(list))
	var msg *C.char
	rc := fn(p, cstr(topic), C.size_t(len(topic)), list, C.size_t(len(ids)), &msg)
	keepAlive(f)
	return status(rc, msg)
}

// AddMembers adds users to a topic (a topic exists while it has members).
func (f *Fanout) AddMembers(topic string, userIDs ...string) error {
	return f.members(func(p *C.presence_fanout_t, t *C.char, tl C.size_t, l *C.presence_bytes_t, n C.size_t, m **C.char) C.int {
		return C.presence_fanout_add_members(p, t, tl, l, n, m)
	}, topic, userIDs)
}

// RemoveMembers removes users from a topic.
func (f *Fanout) RemoveMembers(topic string, userIDs ...string) error {
	return f.members(func(p *C.presence_fanout_t, t *C.char, tl C.size_t, l *C.presence_bytes_t, n C.size_t, m **C.char) C.int {
		return C.presence_fanout_remove_members(p, t, tl, l, n, m)
	}, topic, userIDs)
}

// ReplaceMembers sets a topic's whole membership.
func (f *Fanout) ReplaceMembers(topic string, userIDs ...string) error {
	return f.members(func(p *C.presence_fanout_t, t *C.char, tl C.size_t, l *C.presence_bytes_t, n C.size_t, m **C.char) C.int {
		return C.presence_fanout_replace_members(p, t, tl, l, n, m)
	}, topic, userIDs)
}

// poll takes the oldest undelivered batch and passes its bytes (in C
// memory, valid during the call) to use; it reports whether there was one.
func (f *Fanout) poll(sub SubscriberID, use func([]byte) error) (bool, error) {
	p, err := f.ptr()
	if err != nil {
		return false, err
	}
	var has C.uint8_t
	var buf *C.char
	var n C.size_t
	var msg *C.char
	rc := C.presence_fanout_poll(&has, &buf, &n, p, C.uint64_t(sub), &msg)
	keepAlive(f)
	if err := status(rc, msg); err != nil {
		return false, err
	}
	if has == 0 {
		return false, nil
	}
	defer C.presence_free(unsafe.Pointer(buf))
	return true, use(unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n)))
}

// PollRaw takes the subscriber's oldest undelivered batch, as the encoded
// DiffBatch (a copy in Go memory), or nil when there is none.
// FailedPrecondition for a push subscriber.
func (f *Fanout) PollRaw(sub SubscriberID) ([]byte, error) {
	var out []byte
	_, err := f.poll(sub, func(b []byte) error {
		out = append(make([]byte, 0, len(b)), b...)
		return nil
	})
	return out, err
}

// Poll takes the subscriber's oldest undelivered batch, decoded, or nil when
// there is none. FailedPrecondition for a push subscriber.
func (f *Fanout) Poll(sub SubscriberID) (*DiffBatch, error) {
	var out *DiffBatch
	_, err := f.poll(sub, func(b []byte) error {
		var err error
		out, err = DecodeDiffBatch(b)
		return err
	})
	return out, err
}

// Resume: the subscriber reconnected and last applied batch cursor (its
// Sequence; 0: none). The batches after it are delivered again, with the
// same sequence numbers, when still held, else one snapshot is: to the sink,
// on this goroutine, before Resume returns, or to the poll queue.
// InvalidArgument for a cursor from the future. Like Tick, it reports a
// push sink that panicked (an Internal error).
func (f *Fanout) Resume(sub SubscriberID, cursor uint64) error {
	p, err := f.ptr()
	if err != nil {
		return err
	}
	var msg *C.char
	rc := C.presence_fanout_resume(p, C.uint64_t(sub), C.uint64_t(cursor), &msg)
	keepAlive(f)
	if err := status(rc, msg); err != nil {
		return err
	}
	return f.panics.take()
}

// Metrics renders the fan-out's metrics in Prometheus text format.
func (f *Fanout) Metrics() (string, error) {
	p, err := f.ptr()
	if err != nil {
		return "", err
	}
	var text *C.char
	var n C.size_t
	var msg *C.char
	rc := C.presence_fanout_render_metrics(&text, &n, p, &msg)
	keepAlive(f)
	if err := status(rc, msg); err != nil {
		return "", err
	}
	s := C.GoStringN(text, C.int(n))
	C.presence_free(unsafe.Pointer(text))
	return s, nil
}
