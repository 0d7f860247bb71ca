// Package pullwatch decides, from samples of a running pull's layer bytes,
// where the pull's time goes (downloading or unpacking), how fast it moves,
// when it should end, and whether it should be abandoned: a download whose
// bytes stopped moving for the stall interval, an unpack that runs far past
// what its size needs, or (where the runtime shows no bytes at all) the
// default timeout. It does no I/O; the daemon feeds it samples and acts on
// its verdicts.
package pullwatch

import (
	"fmt"
	"time"

	"github.com/prepull/prepull/pkg/diskbudget"
)

// Bytes is how far a pull's layers have come: bytes in the content store
// (committed layers whole, in-flight ones to their offset) of Total.
type Bytes struct{ Done, Total int64 }

// Phase is where a running attempt spends its time.
type Phase string

const (
	// Starting: the runtime has not shown the image's layers yet (it is
	// resolving the tag and reading the manifest, or cannot tell at all).
	Starting Phase = "starting"
	// Downloading: layer bytes are arriving.
	Downloading Phase = "downloading"
	// Unpacking: every layer byte is there; the runtime unpacks the last
	// layers into snapshots, which shows no byte movement.
	Unpacking Phase = "unpacking"
)

// Rule bounds an attempt.
type Rule struct {
	// Stall abandons a download whose bytes have not moved for this long
	// (0: never).
	Stall time.Duration
	// MinUnpackRate is the slowest believable unpack, in bytes a second: an
	// attempt unpacking for longer than Total/MinUnpackRate (and at least
	// Stall) is abandoned as wedged. 0: never.
	MinUnpackRate int64
	// Blind is the bound of an attempt whose runtime never showed its
	// bytes, which therefore cannot be seen to move (0: none).
	Blind time.Duration
}

// DefaultMinUnpackRate is a slow disk's unpack rate, a tenth of the
// ~90 MiB/s one core inflates gzip at.
const DefaultMinUnpackRate = 8 << 20

// rateWindow is how far back the rate looks: long enough to smooth the
// bursts of a layer committing, short enough to follow a link slowing down.
const rateWindow = 30 * time.Second

type sample struct {
	at   time.Time
	done int64
}

// Watch follows one attempt.
type Watch struct {
	rule      Rule
	start     time.Time
	baseline  int64 // bytes an earlier attempt already saw arrive
	seen      bool
	last      Bytes
	moved     time.Time // when Done last grew (or the attempt started)
	unpacking time.Time // when Done reached Total; zero while downloading
	samples   []sample  // within rateWindow, oldest first
	// Downloaded counts the bytes seen arriving during this attempt.
	Downloaded int64
}

// New starts watching an attempt that began at start; an earlier attempt
// of the same pull saw baseline bytes arrive (0 for the first), which a
// resumed attempt finds in place and does not count again.
func New(rule Rule, start time.Time, baseline int64) *Watch {
	return &Watch{rule: rule, start: start, moved: start, baseline: baseline}
}

// Verdict is what a sample says about the attempt.
type Verdict struct {
	Phase Phase
	Bytes Bytes
	// Rate is bytes a second over the last half minute (0: not known yet).
	Rate float64
	// Left estimates the time to the end of the download (0: unknown).
	Left time.Duration
	// Stop, when not nil, says why the attempt should be abandoned.
	Stop error
}

// Done is the last byte count seen (0 before any), the baseline of the
// next attempt.
func (w *Watch) Done() int64 { return max(w.last.Done, w.baseline) }

// Observe takes a sample read at now; ok false means the runtime could not
// tell this time. It returns the verdict and the bytes that arrived since
// the previous sample.
func (w *Watch) Observe(now time.Time, b Bytes, ok bool) (Verdict, int64) {
	if !ok || b.Total <= 0 {
		v := Verdict{Phase: Starting}
		if w.seen {
			// A failed read in mid-pull says nothing new: keep the last word.
			v = w.verdict(now)
		} else if w.rule.Blind > 0 && now.Sub(w.start) >= w.rule.Blind {
			v.Stop = fmt.Errorf("attempt timed out after %s (pullPolicy.timeoutSeconds: the runtime shows no byte progress that would let a moving pull run longer)", w.rule.Blind)
		}
		return v, 0
	}
	b.Done = min(max(b.Done, 0), b.Total)
	var grew int64
	if !w.seen || b.Total != w.last.Total {
		// First sight of the layers (or another manifest): what is there
		// beyond what earlier attempts saw arrived in this one.
		w.seen, w.moved, w.samples = true, now, w.samples[:0]
		grew = max(b.Done-w.baseline, 0)
	} else if b.Done > w.last.Done {
		grew = b.Done - w.last.Done
		w.moved = now
	}
	w.Downloaded += grew
	w.last = b
	if b.Done >= b.Total {
		if w.unpacking.IsZero() {
			w.unpacking = now
		}
	} else {
		w.unpacking = time.Time{}
	}
	w.samples = append(w.samples, sample{now, b.Done})
	for len(w.samples) > 2 && now.Sub(w.samples[1].at) >= rateWindow {
		w.samples = w.samples[1:]
	}
	return w.verdict(now), grew
}

func (w *Watch) verdict(now time.Time) Verdict {
	v := Verdict{Phase: Downloading, Bytes: w.last}
	if len(w.samples) > 1 && now.After(w.samples[0].at) {
		first := w.samples[0]
		v.Rate = float64(w.last.Done-first.done) / now.Sub(first.at).Seconds()
	}
	if !w.unpacking.IsZero() {
		v.Phase = Unpacking
		if limit := w.unpackLimit(); limit > 0 && now.Sub(w.unpacking) >= limit {
			v.Stop = fmt.Errorf("stalled: unpacking %s took longer than %s, the most its size needs at %s/s", diskbudget.Bytes(w.last.Total), limit, diskbudget.Bytes(w.rule.MinUnpackRate))
		}
		return v
	}
	if v.Rate > 0 {
		v.Left = time.Duration(float64(w.last.Total-w.last.Done) / v.Rate * float64(time.Second))
	}
	if w.rule.Stall > 0 && now.Sub(w.moved) >= w.rule.Stall {
		v.Stop = fmt.Errorf("stalled: no layer bytes arrived for %s, at %s of %s (the stall interval: the job's prepull.io/stall-timeout, else prepull-daemon --pull-stall-timeout)", w.rule.Stall, diskbudget.Bytes(w.last.Done), diskbudget.Bytes(w.last.Total))
	}
	return v
}

func (w *Watch) unpackLimit() time.Duration {
	if w.rule.MinUnpackRate <= 0 {
		return 0
	}
	need := time.Duration(float64(w.last.Total) / float64(w.rule.MinUnpackRate) * float64(time.Second))
	return max(need, w.rule.Stall).Round(time.Second)
}

// Percent is the share of the layer bytes present, held at 99 until the
// runtime says the image is usable (the unpack after the last byte takes
// real time on a big image).
func (v Verdict) Percent() int32 {
	if v.Bytes.Total <= 0 {
		return 0
	}
	// In floating point: Done*100 would overflow past 92 PB, a size a
	// registry may declare.
	return int32(min(float64(v.Bytes.Done)*100/float64(v.Bytes.Total), 99))
}

// Message says where the attempt is, for the tag's status: e.g.
// "downloading 1.2 GiB of 20.0 GiB at 45.3 MiB/s, about 7m left".
func (v Verdict) Message() string {
	switch v.Phase {
	case Downloading:
		msg := fmt.Sprintf("downloading %s of %s", diskbudget.Bytes(v.Bytes.Done), diskbudget.Bytes(v.Bytes.Total))
		if v.Rate > 0 {
			msg += fmt.Sprintf(" at %s/s", diskbudget.Bytes(int64(v.Rate)))
		}
		if v.Left > 0 {
			msg += ", about " + Approx(v.Left) + " left"
		}
		return msg
	case Unpacking:
		return fmt.Sprintf("unpacking: all %s of layers downloaded", diskbudget.Bytes(v.Bytes.Total))
	}
	return "starting: resolving the image and reading its manifest"
}

// Approx writes a duration as a person would estimate it: 45s, 7m, 1h20m.
func Approx(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(int(d.Round(time.Second)/time.Second), 1))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Round(time.Minute)/time.Minute))
	}
	d = d.Round(10 * time.Minute)
	if m := int(d/time.Minute) % 60; m != 0 {
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), m)
	}
	return fmt.Sprintf("%dh", int(d/time.Hour))
}
