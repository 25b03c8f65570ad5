// Command watch is the Go binding (bindings/go) in one small program, the
// twin of examples/c/watch.c.
//
// Four users connect their devices, carol sets Do Not Disturb, bob's phone
// drops off the network, and a watcher subscribed to all four prints every
// batch of diffs it receives through a push sink (decoded from the
// presence.v1.DiffBatch bytes with presence.DecodeDiffBatch). At the end,
// Get answers for everyone in one call.
//
// The engine runs on a manual clock, advanced by the loop below in steps of
// 100 ms, so the program runs in an instant and prints the same every time.
// A real host uses the system clock (no Clock in the options), calls Tick
// from a 100 ms time.Ticker, and Beat from each socket's heartbeat.
//
// Run it (from examples/go, after building libpresence.so into build/):
//
//	go run ./watch
//
// or through ctest: ctest --test-dir build -R go_example_watch -V
package main

import (
	"fmt"
	"log"
	"strings"

	"presence.dev/presence"
)

type device struct {
	user, id string
	platform presence.Platform
	handle   presence.Handle
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("watch: ")
	fmt.Printf("presence %s (headers %s), Go binding\n", presence.Version(), presence.HeaderVersion)

	const startMs = 1_700_000_000_000
	clock, err := presence.NewManualClock(startMs)
	check(err, "clock")
	defer clock.Close()
	opts := presence.DefaultEngineOptions()
	opts.Clock = clock
	engine, err := presence.NewEngine(&opts)
	check(err, "engine")
	defer engine.Close()
	fanout, err := presence.NewFanout(engine, nil)
	check(err, "fan-out")
	defer fanout.Close()

	// The watcher: a push subscriber watching all four users. The sink runs
	// on this goroutine, inside engine.Tick.
	batches, bytes := 0, 0
	watcher, err := fanout.Subscribe(&presence.SubscriberOptions{
		Sink: func(sub presence.SubscriberID, batch []byte) {
			batches++
			bytes += len(batch)
			now, _ := clock.Now()
			d, err := presence.DecodeDiffBatch(batch)
			if err != nil {
				log.Printf("subscriber %d: %v", sub, err)
				return
			}
			snapshot := ""
			if d.Snapshot {
				snapshot = " (snapshot)"
			}
			fmt.Printf("[%5.1fs] subscriber %d: batch #%d%s, %d bytes\n",
				float64(now-startMs)/1000, sub, d.Sequence, snapshot, len(batch))
			for _, u := range d.Users {
				printUser(u)
			}
		},
	})
	check(err, "subscribe")
	everyone := []string{"alice", "bob", "carol", "dave"}
	check(fanout.AddUsers(watcher, everyone...), "watch")

	devices := []*device{
		{user: "alice", id: "laptop", platform: presence.PlatformDesktop},
		{user: "bob", id: "phone", platform: presence.PlatformMobile},
		{user: "carol", id: "browser", platform: presence.PlatformWeb},
		{user: "dave", id: "console", platform: presence.PlatformConsole},
	}
	for _, d := range devices {
		d.handle, err = engine.Connect(presence.Signal{UserID: d.user, DeviceID: d.id,
			SessionID: 1, Platform: d.platform})
		check(err, "connect "+d.user)
	}

	// Ten seconds in ticks of 100 ms. Every second each device still on
	// the network beats; carol sets DND at 3 s; bob's phone goes silent at
	// 4 s (no disconnect: it lapses after 4 s of silence).
	for tick := 1; tick <= 100; tick++ {
		check(clock.Advance(100), "advance")
		if tick%10 == 0 {
			for _, d := range devices {
				if d.user == "bob" && tick >= 40 {
					continue
				}
				check(engine.Beat(d.handle, presence.ActivityActive, presence.SourceApp), "beat "+d.user)
			}
		}
		if tick == 30 {
			_, err := engine.SetOverride("carol", presence.OverrideDND, 0, 0)
			check(err, "dnd")
			fmt.Println("[  3.0s] carol sets Do Not Disturb")
		}
		if tick == 40 {
			fmt.Println("[  4.0s] bob's phone drops off the network")
		}
		_, err := engine.Tick()
		check(err, "tick")
	}

	fmt.Printf("\n%d batches, %d bytes; now, in one Get:\n", batches, bytes)
	users, err := engine.Get(everyone, "")
	check(err, "get")
	for _, u := range users {
		fmt.Printf("  %-6s %-8s %d live device(s), last seen %.1fs ago\n", u.UserID, u.State,
			u.LiveDevices, float64(u.FreshnessMs)/1000)
	}
	m, err := engine.Metrics()
	check(err, "metrics")
	fmt.Printf("engine metrics: %d lines of Prometheus text\n", strings.Count(m, "\n"))
}

func printUser(u presence.UserState) {
	if u.Removed {
		fmt.Printf("          %-6s (removed)\n", u.UserID)
		return
	}
	var devices []string
	for _, c := range []struct {
		name string
		n    uint32
	}{{"web", u.Devices.Web}, {"desktop", u.Devices.Desktop}, {"mobile", u.Devices.Mobile},
		{"console", u.Devices.Console}, {"other", u.Devices.Other}} {
		if c.n > 0 {
			devices = append(devices, fmt.Sprintf("%s %d", c.name, c.n))
		}
	}
	if len(devices) == 0 {
		devices = []string{"-"}
	}
	fmt.Printf("          %-6s %-8s %s\n", u.UserID, u.State, strings.Join(devices, ", "))
}

// check exits with the library's message when a call failed.
func check(err error, what string) {
	if err != nil {
		log.Fatalf("%s: %v", what, err)
	}
}
