package presence

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// The benchmarks run on a manual clock, like benchmarks/capi_bench.cc: each
// round over all devices is one simulated second, advanced (with a Tick)
// outside the timed region, so every device stays live and no device
// passes the engine's default flood limit (20 signals per device per
// second).

// meter measures the timed regions in wall time and in process CPU time
// (getrusage: every thread, the GC's included), since the shared machine
// these run on is often loaded well past its cores.
type meter struct {
	wall, cpu time.Duration
	w0        time.Time
	c0        time.Duration
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *meter) start() { m.w0, m.c0 = time.Now(), processCPU() }
func (m *meter) stop() {
	m.wall += time.Since(m.w0)
	m.cpu += processCPU() - m.c0
}

// report adds per-item CPU time and the rates by wall and by CPU time.
func (m *meter) report(b *testing.B, items int, unit string) {
	b.ReportMetric(float64(m.cpu.Nanoseconds())/float64(items), "cpu-ns/"+unit)
	b.ReportMetric(float64(items)/m.wall.Seconds(), unit+"s/s-wall")
	b.ReportMetric(float64(items)/m.cpu.Seconds(), unit+"s/s-cpu")
}

type benchWorld struct {
	m      meter
	clock  *ManualClock
	engine *Engine
	ids    []string
}

// connectAll connects one device ("laptop") per user and moves one second
// on; it returns their handles, in user order.
func (w *benchWorld) connectAll(b *testing.B) []Handle {
	handles := make([]Handle, len(w.ids))
	for i := range handles {
		h, err := w.engine.Connect(Signal{UserID: w.ids[i], DeviceID: "laptop", SessionID: 1})
		if err != nil {
			b.Fatal(err)
		}
		handles[i] = h
	}
	w.second(b)
	return handles
}

// startTiming starts the timed region: allocations reported, the benchmark
// timer and the CPU meter from zero.
func (w *benchWorld) startTiming(b *testing.B) {
	b.ReportAllocs()
	b.ResetTimer()
	w.m = meter{}
	w.m.start()
}

// inBatches hands b.N items to call in batches of at most size, in order
// over items 0..total-1 and around again; each pass is one simulated second.
// Every batch must be applied whole.
func (w *benchWorld) inBatches(b *testing.B, total, size int, call func(first, n int) (BatchResult, error)) {
	next := 0
	for done := 0; done < b.N; {
		n := size
		if b.N-done < n {
			n = b.N - done
		}
		if total-next < n {
			n = total - next
		}
		r, err := call(next, n)
		if err != nil || r.Applied != n {
			b.Fatalf("%+v %v", r, err)
		}
		done += n
		next += n
		if next == total { // every item once: one second on
			next = 0
			w.second(b)
		}
	}
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

// warm creates every user's device (one signal each) and moves one second
// on, so that the timed signals are steady-state ones on known devices.
func (w *benchWorld) warm(b *testing.B, s Signal) {
	batch := make([]Signal, len(w.ids))
	for i, id := range w.ids {
		batch[i] = s
		batch[i].UserID = id
	}
	if r, err := w.engine.SignalBatch(batch); err != nil || r.Applied != len(batch) {
		b.Fatalf("warm-up: %+v %v", r, err)
	}
	w.second(b)
}

// second moves the engine one second on, outside the timed region.
func (w *benchWorld) second(b *testing.B) {
	w.m.stop()
	b.StopTimer()
	if err := w.clock.Advance(1000); err != nil {
		b.Fatal(err)
	}
	if _, err := w.engine.Tick(); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	w.m.start()
}

// BenchmarkSignalBatch: keyed signals per second from Go through one
// SignalBatch call per batch (one cgo crossing and one C allocation per
// batch, every id copied once). 10^4 users with one device each, created
// before the timed region; every signal is applied. ns/op is per signal.
func BenchmarkSignalBatch(b *testing.B) {
	for _, size := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			const users = 10000
			w := newBenchWorld(b, users)
			batch := make([]Signal, size)
			for i := range batch {
				batch[i] = Signal{DeviceID: "laptop", SessionID: 1, Platform: PlatformDesktop}
			}
			w.warm(b, batch[0])
			w.startTiming(b)
			w.inBatches(b, users, size, func(first, n int) (BatchResult, error) {
				for i := 0; i < n; i++ {
					batch[i].UserID = w.ids[first+i]
				}
				return w.engine.SignalBatch(batch[:n])
			})
			w.m.stop()
			w.m.report(b, b.N, "signal")
		})
	}
}

// BenchmarkSignalOne: the same signals, one cgo call each, for comparison.
func BenchmarkSignalOne(b *testing.B) {
	const users = 10000
	w := newBenchWorld(b, users)
	s := Signal{DeviceID: "laptop", SessionID: 1, Platform: PlatformDesktop}
	w.warm(b, s)
	w.startTiming(b)
	for i := 0; i < b.N; i++ {
		s.UserID = w.ids[i%users]
		if err := w.engine.Signal(s); err != nil {
			b.Fatal(err)
		}
		if i%users == users-1 {
			w.second(b)
		}
	}
	w.m.stop()
	w.m.report(b, b.N, "signal")
}

// BenchmarkBeat: one handle heartbeat from Go (the lock-free fast path: a
// live device whose activity does not change), over 10^4 devices.
func BenchmarkBeat(b *testing.B) {
	const devices = 10000
	w := newBenchWorld(b, devices)
	handles := w.connectAll(b)
	w.startTiming(b)
	for i := 0; i < b.N; i++ {
		if err := w.engine.Beat(handles[i%devices], ActivityActive, SourceApp); err != nil {
			b.Fatal(err)
		}
		if i%devices == devices-1 {
			w.second(b)
		}
	}
	w.m.stop()
	w.m.report(b, b.N, "beat")
}

// BenchmarkBeatMany: the same heartbeats as BenchmarkBeat, 1,000 handles
// per BeatMany call (one cgo crossing per batch). ns/op is per beat.
func BenchmarkBeatMany(b *testing.B) {
	const devices, batch = 10000, 1000
	w := newBenchWorld(b, devices)
	handles := w.connectAll(b)
	w.startTiming(b)
	w.inBatches(b, devices, batch, func(first, n int) (BatchResult, error) {
		return w.engine.BeatMany(handles[first:first+n], ActivityActive, SourceApp)
	})
	w.m.stop()
	w.m.report(b, b.N, "beat")
}

// BenchmarkGet100: Get of 100 users in one call.
func BenchmarkGet100(b *testing.B) {
	w := newBenchWorld(b, 100)
	for _, id := range w.ids {
		if err := w.engine.Signal(Signal{UserID: id, DeviceID: "pc", SessionID: 1}); err != nil {
			b.Fatal(err)
		}
	}
	w.startTiming(b)
	for i := 0; i < b.N; i++ {
		if _, err := w.engine.Get(w.ids, ""); err != nil {
			b.Fatal(err)
		}
	}
	w.m.stop()
	w.m.report(b, b.N, "get")
}

// BenchmarkCgoFloor: the cheapest call into libpresence.so
// (presence_version_number), the floor under every call of the binding.
func BenchmarkCgoFloor(b *testing.B) {
	var m meter
	m.start()
	for i := 0; i < b.N; i++ {
		_ = VersionNumber()
	}
	m.stop()
	m.report(b, b.N, "call")
}
