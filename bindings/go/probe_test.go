package presence

import (
	"errors"
	"strings"
	"testing"
)

// Push/pull checks (docs/design.md rule 9) from Go: a Prober, answers from
// inside it and after it, late and unknown ids, a panicking prober, and the
// options.

func newProbeWorld(t *testing.T, prober Prober, tune func(*EngineOptions)) *world {
	t.Helper()
	return newWorldWith(t, func(o *EngineOptions) {
		o.Prober = prober
		if tune != nil {
			tune(o)
		}
	})
}

func (w *world) run(ms int64) {
	w.t.Helper()
	for i := int64(0); i < ms; i += 100 {
		w.step(100)
	}
}

func TestProbeSilentDeviceIsProbedThenOffline(t *testing.T) {
	var probes []Probe
	w := newProbeWorld(t, func(p Probe) { probes = append(probes, p) }, nil)
	s := sig("alice", "web", 3)
	s.Gateway = "gw-1"
	must(t, w.engine.Signal(s))
	w.run(1900)
	if len(probes) != 0 {
		t.Fatalf("probed before 2 s of silence: %+v", probes)
	}
	w.run(100)
	if len(probes) != 1 {
		t.Fatalf("want one probe at 2 s, got %+v", probes)
	}
	p := probes[0]
	if p.UserID != "alice" || p.DeviceID != "web" || p.SessionID != 3 || p.Source != SourceApp ||
		p.Attempt != 1 || p.Gateway != "gw-1" || p.ProbeID == 0 {
		t.Fatalf("probe = %+v", p)
	}
	w.run(2000) // the retries at 2.5, 3 and 3.5 s go unanswered: offline at 4 s
	if len(probes) != 4 || probes[3].Attempt != 4 {
		t.Fatalf("want the retries, got %+v", probes)
	}
	if got := w.get("alice", "bob").State; got != StateOffline {
		t.Fatalf("state = %v, want offline", got)
	}
	applied, err := w.engine.AnswerProbe(probes[3].ProbeID)
	if applied || err != nil {
		t.Fatalf("late answer: applied=%v err=%v, want false, nil", applied, err)
	}
	m, err := w.engine.Metrics()
	must(t, err)
	for _, want := range []string{"presence_probes_given_up_total 1\n", "presence_probes_late_total 1\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestProbeAnswersKeepADeviceWithoutHeartbeatsOnline(t *testing.T) {
	var w *world
	answered := 0
	w = newProbeWorld(t, func(p Probe) {
		applied, err := w.engine.AnswerProbe(p.ProbeID) // from inside the prober
		if applied && err == nil {
			answered++
		}
	}, nil)
	_, err := w.engine.Connect(sig("alice", "web", 1))
	must(t, err)
	w.run(30000)
	if got := w.get("alice", "bob").State; got != StateOnline {
		t.Fatalf("state = %v, want online", got)
	}
	if answered != 15 {
		t.Fatalf("answered %d probes, want 15 (one per 2 s of silence)", answered)
	}
}

func TestProbeUnknownIDIsNotFound(t *testing.T) {
	w := newProbeWorld(t, func(Probe) {}, nil)
	_, err := w.engine.AnswerProbe(12345)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != NotFound {
		t.Fatalf("err = %v, want NotFound", err)
	}
}

func TestProbeAPanicIsReportedByTick(t *testing.T) {
	w := newProbeWorld(t, func(p Probe) {
		if p.Attempt == 1 {
			panic("no socket")
		}
	}, nil)
	must(t, w.engine.Signal(sig("alice", "web", 1)))
	var tickErr error
	for i := 0; i < 20 && tickErr == nil; i++ {
		must(t, w.clock.Advance(100))
		_, tickErr = w.engine.Tick()
	}
	var pe *Error
	if !errors.As(tickErr, &pe) || pe.Code != Internal || !strings.Contains(pe.Message, "no socket") {
		t.Fatalf("tick error = %v, want Internal naming the panic", tickErr)
	}
	w.run(2000)
	if got := w.get("alice", "bob").State; got != StateOffline {
		t.Fatalf("state = %v, want offline", got)
	}
}

func TestProbeOptions(t *testing.T) {
	d := DefaultEngineOptions()
	if d.ProbeMarginMs != 1000 || d.ProbeRetryMs != 500 || d.MaxProbes != 4 ||
		d.MaxProbesPerGatewayPerSec != 1000 || d.Prober != nil {
		t.Fatalf("defaults = %+v", d)
	}
	o := DefaultEngineOptions()
	o.Prober = func(Probe) {}
	o.MaxProbes = 0
	_, err := NewEngine(&o)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != InvalidArgument || !strings.Contains(pe.Message, "max_probes") {
		t.Fatalf("err = %v, want InvalidArgument naming max_probes", err)
	}
	var probes []Probe
	w := newProbeWorld(t, func(p Probe) { probes = append(probes, p) }, func(o *EngineOptions) {
		o.ProbeMarginMs = 0
		o.MaxProbes = 1
	})
	must(t, w.engine.Signal(sig("alice", "web", 1)))
	w.run(3000)
	if len(probes) != 1 || probes[0].Attempt != 1 {
		t.Fatalf("probes = %+v, want one at 1 s", probes)
	}
}
