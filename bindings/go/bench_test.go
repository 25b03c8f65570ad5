package presence

import (
	"fmt"
	"testing"
	"time"
)

// The benchmarks run on a manual clock, like benchmarks/capi_bench.cc: each
// round over all devices is one simulated second, advanced (with a Tick)
// outside the timed region, so every device stays live and no device
// passes the engine's flood limit (20 signals per device per second, which
// presence_engine_options_t cannot change).

type benchWorld struct {
	clock  *ManualClock
	engine *Engine
	ids    []string
}

func newBenchWorld(b *testing.B, users int) *benchWorld {
	clock, err := NewManualClock(start)
	if err != nil {
		b.Fatal(err)
	}
	o := DefaultEngineOptions()
	o.Clock = clock
	e, err := NewEngine(&o)
	if err != nil {
		b.Fatal(err)
	}
	w := &benchWorld{clock: clock, engine: e, ids: make([]string, users)}
	for i := range w.ids {
		w.ids[i] = fmt.Sprintf("user-%06d", i)
	}
	b.Cleanup(func() {
		e.Close()
		clock.Close()
	})
	return w
}

// second moves the engine one second on, outside the timed region.
func (w *benchWorld) second(b *testing.B) {
	b.StopTimer()
	if err := w.clock.Advance(1000); err != nil {
		b.Fatal(err)
	}
	if _, err := w.engine.Tick(); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
}

// BenchmarkSignalBatch: keyed signals per second from Go through one
// SignalBatch call per batch (one cgo crossing and one C allocation per
// batch, every id copied once). 10^4 users with one device each; every
// signal is applied. ns/op is per signal.
func BenchmarkSignalBatch(b *testing.B) {
	for _, size := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			const users = 10000
			w := newBenchWorld(b, users)
			batch := make([]Signal, size)
			for i := range batch {
				batch[i] = Signal{DeviceID: "laptop", SessionID: 1, Platform: PlatformDesktop}
			}
			b.ReportAllocs()
			b.ResetTimer()
			var timed time.Duration
			began := time.Now()
			next := 0
			for done := 0; done < b.N; {
				n := size
				if b.N-done < n {
					n = b.N - done
				}
				if users-next < n {
					n = users - next
				}
				for i := 0; i < n; i++ {
					batch[i].UserID = w.ids[next+i]
				}
				r, err := w.engine.SignalBatch(batch[:n])
				if err != nil || r.Applied != n {
					b.Fatalf("%+v %v", r, err)
				}
				done += n
				next += n
				if next == users { // every user signalled once: one second on
					next = 0
					timed += time.Since(began)
					w.second(b)
					began = time.Now()
				}
			}
			timed += time.Since(began)
			b.ReportMetric(float64(b.N)/timed.Seconds(), "signals/s")
		})
	}
}

// BenchmarkSignalOne: the same signals, one cgo call each, for comparison.
func BenchmarkSignalOne(b *testing.B) {
	const users = 10000
	w := newBenchWorld(b, users)
	s := Signal{DeviceID: "laptop", SessionID: 1, Platform: PlatformDesktop}
	b.ReportAllocs()
	b.ResetTimer()
	var timed time.Duration
	began := time.Now()
	for i := 0; i < b.N; i++ {
		s.UserID = w.ids[i%users]
		if err := w.engine.Signal(s); err != nil {
			b.Fatal(err)
		}
		if i%users == users-1 {
			timed += time.Since(began)
			w.second(b)
			began = time.Now()
		}
	}
	timed += time.Since(began)
	b.ReportMetric(float64(b.N)/timed.Seconds(), "signals/s")
}

// BenchmarkBeat: one handle heartbeat from Go (the lock-free fast path: a
// live device whose activity does not change), over 10^4 devices.
func BenchmarkBeat(b *testing.B) {
	const devices = 10000
	w := newBenchWorld(b, devices)
	handles := make([]Handle, devices)
	for i := range handles {
		h, err := w.engine.Connect(Signal{UserID: w.ids[i], DeviceID: "laptop", SessionID: 1})
		if err != nil {
			b.Fatal(err)
		}
		handles[i] = h
	}
	w.second(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := w.engine.Beat(handles[i%devices], ActivityActive, SourceApp); err != nil {
			b.Fatal(err)
		}
		if i%devices == devices-1 {
			w.second(b)
		}
	}
}

// BenchmarkGet100: Get of 100 users in one call.
func BenchmarkGet100(b *testing.B) {
	w := newBenchWorld(b, 100)
	for _, id := range w.ids {
		if err := w.engine.Signal(Signal{UserID: id, DeviceID: "pc", SessionID: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w.engine.Get(w.ids, ""); err != nil {
			b.Fatal(err)
		}
	}
}
