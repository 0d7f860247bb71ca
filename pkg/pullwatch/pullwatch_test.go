package pullwatch

import (
	"math"
	"strings"
	"testing"
	"time"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

type step struct {
	at   time.Duration // since the attempt started
	done int64
	ok   bool
	// want
	phase   Phase
	stop    string // substring of the stop reason; "" means no stop
	grew    int64
	percent int32
	message string // substring of the message
}

func TestWatch(t *testing.T) {
	rule := Rule{Stall: 2 * time.Minute, MinUnpackRate: DefaultMinUnpackRate, Blind: 10 * time.Minute}
	cases := []struct {
		name     string
		total    int64
		baseline int64
		steps    []step
	}{
		{name: "a moving download runs past the default timeout", total: 20 * gib, steps: []step{
			{at: 0, ok: false, phase: Starting, message: "starting"},
			{at: time.Second, done: 0, ok: true, phase: Downloading, message: "downloading 0 B of 20.0 GiB"},
			{at: 11 * time.Second, done: 100 * mib, ok: true, phase: Downloading, grew: 100 * mib, message: "at 10.0 MiB/s, about 34m left"},
			{at: 15 * time.Minute, done: 10 * gib, ok: true, phase: Downloading, grew: 10*gib - 100*mib, percent: 50},
			{at: 16 * time.Minute, done: 10*gib + 600*mib, ok: true, phase: Downloading, grew: 600 * mib, percent: 52},
		}},
		{name: "a download that stops moving is stalled after the interval, not before", total: gib, steps: []step{
			{at: time.Second, done: 512 * mib, ok: true, phase: Downloading, grew: 512 * mib, percent: 50},
			{at: 2*time.Minute + 500*time.Millisecond, done: 512 * mib, ok: true, phase: Downloading, percent: 50},
			{at: 2*time.Minute + time.Second, done: 512 * mib, ok: true, phase: Downloading, stop: "no layer bytes arrived for 2m0s, at 512.0 MiB of 1.0 GiB"},
		}},
		{name: "a failed read in mid-pull neither stalls nor resets", total: gib, steps: []step{
			{at: time.Second, done: 0, ok: true, phase: Downloading},
			{at: time.Minute, done: 100 * mib, ok: true, phase: Downloading, grew: 100 * mib, percent: 9},
			{at: 2 * time.Minute, ok: false, phase: Downloading, percent: 9},
			{at: 3*time.Minute + time.Second, ok: false, phase: Downloading, stop: "no layer bytes arrived"},
		}},
		{name: "bytes an earlier attempt saw arrive do not count again (a resumed attempt)", total: gib, baseline: 800 * mib, steps: []step{
			{at: time.Second, done: 900 * mib, ok: true, phase: Downloading, grew: 100 * mib, percent: 87},
			{at: 2 * time.Second, done: 901 * mib, ok: true, phase: Downloading, grew: mib, percent: 87},
		}},
		{name: "a first attempt counts what arrived before its first sample", total: gib, steps: []step{
			{at: time.Second, done: 300 * mib, ok: true, phase: Downloading, grew: 300 * mib, percent: 29},
		}},
		{name: "unpacking holds 99 percent and is bounded by the size at the slowest unpack rate", total: 8 * gib, steps: []step{
			{at: time.Second, done: 8 * gib, ok: true, phase: Unpacking, grew: 8 * gib, percent: 99, message: "unpacking: all 8.0 GiB"},
			{at: 16 * time.Minute, done: 8 * gib, ok: true, phase: Unpacking, percent: 99},
			{at: 17*time.Minute + 5*time.Second, done: 8 * gib, ok: true, phase: Unpacking, stop: "unpacking 8.0 GiB took longer than 17m4s"},
		}},
		{name: "a small image's unpack gets at least the stall interval", total: mib, steps: []step{
			{at: time.Second, done: mib, ok: true, phase: Unpacking, grew: mib, percent: 99},
			{at: time.Minute, done: mib, ok: true, phase: Unpacking, percent: 99},
			{at: 2*time.Minute + time.Second, done: mib, ok: true, phase: Unpacking, stop: "took longer than 2m0s"},
		}},
		{name: "a runtime that never shows bytes gets the default timeout", total: 0, steps: []step{
			{at: 9 * time.Minute, ok: false, phase: Starting},
			{at: 10 * time.Minute, ok: false, phase: Starting, stop: "timed out after 10m0s"},
		}},
		{name: "a byte count past the total is clamped", total: mib, steps: []step{
			{at: time.Second, done: 2 * mib, ok: true, phase: Unpacking, grew: mib, percent: 99},
		}},
	}
	start := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := New(rule, start, c.baseline)
			for i, s := range c.steps {
				v, grew := w.Observe(start.Add(s.at), Bytes{Done: s.done, Total: c.total}, s.ok)
				if v.Phase != s.phase {
					t.Errorf("step %d: phase %s, want %s", i, v.Phase, s.phase)
				}
				switch {
				case s.stop == "" && v.Stop != nil:
					t.Errorf("step %d: stopped: %v", i, v.Stop)
				case s.stop != "" && (v.Stop == nil || !strings.Contains(v.Stop.Error(), s.stop)):
					t.Errorf("step %d: stop %v, want one saying %q", i, v.Stop, s.stop)
				}
				if grew != s.grew {
					t.Errorf("step %d: grew %d, want %d", i, grew, s.grew)
				}
				if s.stop == "" && v.Percent() != s.percent {
					t.Errorf("step %d: percent %d, want %d", i, v.Percent(), s.percent)
				}
				if !strings.Contains(v.Message(), s.message) {
					t.Errorf("step %d: message %q, want it to contain %q", i, v.Message(), s.message)
				}
			}
		})
	}
}

// With every bound off, nothing is ever stopped.
func TestWatchUnbounded(t *testing.T) {
	start := time.Now()
	w := New(Rule{}, start, 0)
	for _, s := range []struct {
		at   time.Duration
		done int64
		ok   bool
	}{{time.Hour, 0, false}, {2 * time.Hour, 5, true}, {30 * time.Hour, 5, true}, {60 * time.Hour, 10, true}} {
		if v, _ := w.Observe(start.Add(s.at), Bytes{s.done, 10}, s.ok); v.Stop != nil {
			t.Fatalf("at %s: stopped: %v", s.at, v.Stop)
		}
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "1s", 400 * time.Millisecond: "1s", 45 * time.Second: "45s", 7*time.Minute + 20*time.Second: "7m", 80 * time.Minute: "1h20m", 2 * time.Hour: "2h", 119 * time.Minute: "2h"} {
		if got := Approx(d); got != want {
			t.Errorf("Approx(%s) = %q, want %q", d, got, want)
		}
	}
}

// A registry may declare sizes in the exabytes: the percentage neither
// overflows nor leaves 0..99 before the runtime says the image is there.
func TestPercentOfHugeSizes(t *testing.T) {
	for _, tc := range []struct {
		b    Bytes
		want int32
	}{
		{Bytes{Done: 1 << 62, Total: math.MaxInt64}, 50},
		{Bytes{Done: math.MaxInt64, Total: math.MaxInt64}, 99},
		{Bytes{Done: 0, Total: math.MaxInt64}, 0},
		{Bytes{Done: 5, Total: 0}, 0},
	} {
		if got := (Verdict{Bytes: tc.b}).Percent(); got != tc.want {
			t.Errorf("Percent of %+v = %d, want %d", tc.b, got, tc.want)
		}
	}
}
