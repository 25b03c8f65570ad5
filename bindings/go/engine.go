package presence

/*
#include <stdint.h>
#include <stdlib.h>
#include "presence/c.h"

// In sink.c.
void presence_go_probe(const presence_probe_t* probe, void* payload);

// The payload is a cgo.Handle (an integer, not a Go pointer).
static void presence_go_set_prober(presence_engine_options_t* o, uintptr_t handle) {
  o->prober = presence_go_probe;
  o->prober_payload = (void*)handle;
}
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// EngineOptions are the fields of presence_engine_options_t
// (presence::Options, include/presence/options.h, says more about each).
// Start from DefaultEngineOptions: a zero EngineOptions is not the defaults.
type EngineOptions struct {
	Shards int32        // lock shards, rounded up to a power of two, <= 256; 0: 16
	Clock  *ManualClock // nil: the system clock. The engine holds its own reference.

	// Liveness per source (docs/design.md rule 1): the expected interval between
	// signals, and the silence after which the source no longer keeps the
	// device live.
	InferredIntervalMs     int64 // 60000
	InferredOfflineAfterMs int64 // 240000
	AppIntervalMs          int64 // 1000
	AppOfflineAfterMs      int64 // 4000
	ManualIntervalMs       int64 // 1000
	ManualOfflineAfterMs   int64 // 4000

	ReconnectGraceMs     int64 // 1500: an abrupt disconnect waits this long
	MinDwellMs           int64 // 1000: at most one published change per user per dwell
	MaxFutureSkewMs      int64 // 5000: signals stamped further ahead are rejected
	MaxSignalAgeMs       int64 // 300000: signals stamped further behind are rejected
	DeadRetentionMs      int64 // 300000: a dead device's record is kept this long
	UserRetentionMs      int64 // 86400000: a user with nothing left is forgotten
	FalseOfflineWindowMs int64 // 30000: a return this soon counts as a false offline

	MaxDevicesPerUser   int32 // 64
	MaxOverridesPerUser int32 // 16

	InferredCanBeOnline        bool // false: a device kept live only by INFERRED shows AWAY
	OverrideRequiresLiveDevice bool // true: DND with no live device shows OFFLINE

	// Flood limit: most signals one device may have accepted per second
	// (beats included); past it they answer ResourceExhausted. 0: none.
	MaxSignalsPerDevicePerSec int32 // 20
	// Memory budget for users and devices, in bytes: a signal that would
	// create one past it answers ResourceExhausted. 0: none.
	MemoryBudgetBytes int64 // 0

	// FileDir keeps the engine's state in the crash-safe file store in this
	// folder (created when missing): a new engine on the folder loads its
	// users and devices, and History, TimeInStates and LastSeen read its
	// audit trail. "": memory only, and no history. A folder that another
	// engine holds answers FailedPrecondition; one that cannot be read or
	// created PermissionDenied (or the file system's error).
	FileDir            string
	FileSync           FileSync // FileSyncEveryWrite
	FileSyncIntervalMs int64    // 100: FileSyncInterval only

	// Prober turns on push/pull checks (docs/design.md rule 9): before a
	// silent device is declared offline the engine asks it to check the
	// device (a WebSocket ping, a push), and the host reports the answer
	// with Engine.AnswerProbe. nil: the engine only waits. A device whose
	// every live source was silent past its interval plus ProbeMarginMs is
	// probed, then again every ProbeRetryMs, at most MaxProbes (1..8) times
	// per silence; offline_after stays the upper bound.
	Prober                    Prober
	ProbeMarginMs             int64 // 1000
	ProbeRetryMs              int64 // 500
	MaxProbes                 int32 // 4
	MaxProbesPerGatewayPerSec int32 // 1000: per gateway; 0: no limit
}

// DefaultEngineOptions returns the library's defaults
// (presence_engine_options_init).
func DefaultEngineOptions() EngineOptions {
	var c C.presence_engine_options_t
	if rc := C.presence_engine_options_init(&c, C.PRESENCE_ENGINE_OPTIONS_VERSION, nil); rc != C.PRESENCE_OK {
		panic("presence: presence_engine_options_init failed: " + Code(rc).String())
	}
	return EngineOptions{
		Shards:                     int32(c.shards),
		InferredIntervalMs:         int64(c.inferred_interval_ms),
		InferredOfflineAfterMs:     int64(c.inferred_offline_after_ms),
		AppIntervalMs:              int64(c.app_interval_ms),
		AppOfflineAfterMs:          int64(c.app_offline_after_ms),
		ManualIntervalMs:           int64(c.manual_interval_ms),
		ManualOfflineAfterMs:       int64(c.manual_offline_after_ms),
		ReconnectGraceMs:           int64(c.reconnect_grace_ms),
		MinDwellMs:                 int64(c.min_dwell_ms),
		MaxFutureSkewMs:            int64(c.max_future_skew_ms),
		MaxSignalAgeMs:             int64(c.max_signal_age_ms),
		DeadRetentionMs:            int64(c.dead_retention_ms),
		UserRetentionMs:            int64(c.user_retention_ms),
		FalseOfflineWindowMs:       int64(c.false_offline_window_ms),
		MaxDevicesPerUser:          int32(c.max_devices_per_user),
		MaxOverridesPerUser:        int32(c.max_overrides_per_user),
		InferredCanBeOnline:        c.inferred_can_be_online != 0,
		OverrideRequiresLiveDevice: c.override_requires_live_device != 0,
		MaxSignalsPerDevicePerSec:  int32(c.max_signals_per_device_per_sec),
		MemoryBudgetBytes:          int64(c.memory_budget_bytes),
		FileSync:                   FileSync(c.file_sync),
		FileSyncIntervalMs:         int64(c.file_sync_interval_ms),
		ProbeMarginMs:              int64(c.probe_margin_ms),
		ProbeRetryMs:               int64(c.probe_retry_ms),
		MaxProbes:                  int32(c.max_probes),
		MaxProbesPerGatewayPerSec:  int32(c.max_probes_per_gateway_per_sec),
	}
}

func cbool(b bool) C.uint8_t {
	if b {
		return 1
	}
	return 0
}

// Engine decides who is online (presence_engine_t). The host feeds it
// signals, calls Tick about every 100 ms, and reads states with Get or
// receives diffs through a Fanout.
//
// Every method may be called from any goroutine at once, except Close.
type Engine struct {
	p      atomic.Pointer[C.presence_engine_t]
	panics *sinkPanics // panics recovered in push sinks and the prober, reported by Tick
	prober cgo.Handle  // of the *proberEntry the C engine calls; 0: none
}

// NewEngine creates an engine. opts may be nil: every default and the
// system clock.
func NewEngine(opts *EngineOptions) (*Engine, error) {
	var p *C.presence_engine_t
	var msg *C.char
	var rc C.int
	panics := &sinkPanics{}
	var prober cgo.Handle
	if opts == nil {
		rc = C.presence_engine_new(&p, nil, &msg)
	} else {
		// Go memory is fine here: the pointers inside are C pointers (the
		// clock, and a C copy of the folder's path).
		c := &C.presence_engine_options_t{}
		C.presence_engine_options_init(c, C.PRESENCE_ENGINE_OPTIONS_VERSION, nil)
		if opts.Clock != nil {
			c.clock = opts.Clock.p.Load()
			if c.clock == nil {
				return nil, errClosed("clock")
			}
		}
		c.shards = C.int32_t(opts.Shards)
		c.inferred_interval_ms = C.int64_t(opts.InferredIntervalMs)
		c.inferred_offline_after_ms = C.int64_t(opts.InferredOfflineAfterMs)
		c.app_interval_ms = C.int64_t(opts.AppIntervalMs)
		c.app_offline_after_ms = C.int64_t(opts.AppOfflineAfterMs)
		c.manual_interval_ms = C.int64_t(opts.ManualIntervalMs)
		c.manual_offline_after_ms = C.int64_t(opts.ManualOfflineAfterMs)
		c.reconnect_grace_ms = C.int64_t(opts.ReconnectGraceMs)
		c.min_dwell_ms = C.int64_t(opts.MinDwellMs)
		c.max_future_skew_ms = C.int64_t(opts.MaxFutureSkewMs)
		c.max_signal_age_ms = C.int64_t(opts.MaxSignalAgeMs)
		c.dead_retention_ms = C.int64_t(opts.DeadRetentionMs)
		c.user_retention_ms = C.int64_t(opts.UserRetentionMs)
		c.false_offline_window_ms = C.int64_t(opts.FalseOfflineWindowMs)
		c.max_devices_per_user = C.int32_t(opts.MaxDevicesPerUser)
		c.max_overrides_per_user = C.int32_t(opts.MaxOverridesPerUser)
		c.inferred_can_be_online = cbool(opts.InferredCanBeOnline)
		c.override_requires_live_device = cbool(opts.OverrideRequiresLiveDevice)
		c.max_signals_per_device_per_sec = C.int32_t(opts.MaxSignalsPerDevicePerSec)
		c.memory_budget_bytes = C.int64_t(opts.MemoryBudgetBytes)
		c.file_sync = C.int32_t(opts.FileSync)
		c.file_sync_interval_ms = C.int64_t(opts.FileSyncIntervalMs)
		c.probe_margin_ms = C.int64_t(opts.ProbeMarginMs)
		c.probe_retry_ms = C.int64_t(opts.ProbeRetryMs)
		c.max_probes = C.int32_t(opts.MaxProbes)
		c.max_probes_per_gateway_per_sec = C.int32_t(opts.MaxProbesPerGatewayPerSec)
		if opts.Prober != nil {
			prober = cgo.NewHandle(&proberEntry{fn: opts.Prober, panics: panics})
			C.presence_go_set_prober(c, C.uintptr_t(prober))
		}
		if opts.FileDir != "" {
			dir := C.CBytes([]byte(opts.FileDir))
			defer C.free(dir)
			c.store = C.PRESENCE_STORE_FILE
			c.file_dir = (*C.char)(dir)
			c.file_dir_len = C.size_t(len(opts.FileDir))
		}
		rc = C.presence_engine_new(&p, c, &msg)
		keepAlive(opts.Clock)
	}
	if err := status(rc, msg); err != nil {
		if prober != 0 {
			prober.Delete()
		}
		return nil, err
	}
	e := &Engine{panics: panics, prober: prober}
	e.p.Store(p)
	runtime.SetFinalizer(e, (*Engine).Close)
	return e, nil
}

// Close releases the engine (the C engine is freed once no fan-out holds it
// either). Idempotent; calls after it answer ErrClosed.
func (e *Engine) Close() error {
	if p := e.p.Swap(nil); p != nil {
		C.presence_engine_destroy(p)
		runtime.SetFinalizer(e, nil)
		// Only Tick calls the prober, and no Tick runs after Close.
		if e.prober != 0 {
			e.prober.Delete()
		}
	}
	return nil
}

// AnswerProbe reports the answer to a probe (docs/design.md rule 9): it
// counts as a signal of the probed device and source, now. It returns true
// when applied, false when the answer came late (the device signalled, died
// or disconnected since: counted, nothing applied), and an error with Code
// NotFound for an id that no probe of this engine had.
func (e *Engine) AnswerProbe(probeID uint64) (bool, error) {
	p, err := e.ptr()
	if err != nil {
		return false, err
	}
	var msg *C.char
	rc := C.presence_engine_answer_probe(p, C.uint64_t(probeID), &msg)
	keepAlive(e)
	if rc == C.PRESENCE_ERR_FAILED_PRECONDITION {
		C.presence_free(unsafe.Pointer(msg))
		return false, nil
	}
	if err := status(rc, msg); err != nil {
		return false, err
	}
	return true, nil
}

func (e *Engine) ptr() (*C.presence_engine_t, error) {
	if p := e.p.Load(); p != nil {
		return p, nil
	}
	return nil, errClosed("engine")
}

// Tick fires the timers that are due and publishes the changes to every
// fan-out over the engine, which delivers to push sinks on this goroutine.
// Call it every flush interval (100 ms). It returns the number of change
// events published. A push sink that panicked during the tick is reported
// here, as an Internal error (after the tick itself completed).
func (e *Engine) Tick() (int, error) {
	p, err := e.ptr()
	if err != nil {
		return 0, err
	}
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_tick(&n, p, &msg)
	keepAlive(e)
	if err := status(rc, msg); err != nil {
		return int(n), err
	}
	return int(n), e.panics.take()
}

// Now is the engine's notion of now: its clock's time, in ms.
func (e *Engine) Now() (int64, error) {
	p, err := e.ptr()
	if err != nil {
		return 0, err
	}
	var now C.int64_t
	var msg *C.char
	rc := C.presence_engine_now(&now, p, &msg)
	keepAlive(e)
	return int64(now), status(rc, msg)
}

// Metrics renders every engine metric in Prometheus text format.
func (e *Engine) Metrics() (string, error) {
	p, err := e.ptr()
	if err != nil {
		return "", err
	}
	var text *C.char
	var n C.size_t
	var msg *C.char
	rc := C.presence_engine_render_metrics(&text, &n, p, &msg)
	keepAlive(e)
	if err := status(rc, msg); err != nil {
		return "", err
	}
	s := C.GoStringN(text, C.int(n))
	C.presence_free(unsafe.Pointer(text))
	return s, nil
}
