// Package bench holds the smoke test of the benchmark harness that `make
// test` runs: quick mode (S1 up to 1,000 hollow nodes) on the real control
// plane. It checks that every scenario ran to completion and was measured;
// it asserts no timings (those belong in BENCHMARKS.md, from `make bench`).
package bench

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prepull/prepull/test/bench/harness"
)

func TestQuickBenchmark(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and 1,000 hollow nodes")
	}
	cfg := harness.Quick()
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	r, err := harness.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.S1) != len(cfg.S1Nodes) {
		t.Fatalf("%d S1 results, want one per size %v", len(r.S1), cfg.S1Nodes)
	}
	md := r.Markdown()
	for i, s := range r.S1 {
		if s.Nodes != cfg.S1Nodes[i] || int(s.Succeeded) != s.Nodes {
			t.Errorf("S1 at %d nodes: %d succeeded", cfg.S1Nodes[i], s.Succeeded)
		}
		if s.Elapsed <= 0 || s.Floor <= 0 {
			t.Errorf("S1 at %d nodes: time %s, floor %s: both must be measured", s.Nodes, s.Elapsed, s.Floor)
		}
		// Every node needs its tag written and its result reported: the
		// API server must have counted at least that.
		if tags, statuses := s.Writes["PATCH nodeimages"], s.Writes["PATCH nodeimages/status"]; tags < float64(s.Nodes) || statuses < float64(s.Nodes) {
			t.Errorf("S1 at %d nodes: %v tag and %v status writes counted, want at least one each per node (writes: %v)", s.Nodes, tags, statuses, s.Writes)
		}
		if s.Controller.PeakRSS <= 0 {
			t.Errorf("S1 at %d nodes: controller memory not measured", s.Nodes)
		}
		if !strings.Contains(md, "| "+strconv.Itoa(s.Nodes)+" | ") {
			t.Errorf("the report has no row for %d nodes:\n%s", s.Nodes, md)
		}
	}
	t.Logf("quick benchmark (figures only; `make bench` writes BENCHMARKS.md):\n%s", md)
}

// The big-image scenario's harness, small: one round of a 32 MiB image,
// directly over CRI and by prepull on a real containerd. Measured, not
// judged.
func TestBigImageHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane, containerd and a daemon")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := harness.RunBigImage(ctx, harness.BigImageConfig{Bytes: 32 << 20, Layers: 2, Rounds: 2, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Rounds) != 2 || !r.Rounds[1].PrepullFirst || r.Rounds[0].PrepullFirst {
		t.Fatalf("rounds %+v, want two, the second with prepull first", r.Rounds)
	}
	for i, x := range r.Rounds {
		if x.Direct <= 0 || x.Prepull <= 0 || x.DaemonPull <= 0 || x.DaemonRSS <= 0 {
			t.Errorf("round %d: %+v: every figure must be measured", i+1, x)
		}
	}
	md := r.Markdown()
	if !strings.Contains(md, "| 2 | prepull | ") {
		t.Errorf("the report has no row for round 2:\n%s", md)
	}
	t.Logf("big-image harness (figures only):\n%s", md)
}
