// Package bench holds the smoke test of the benchmark harness that `make
// test` runs: quick mode (S1 up to 1,000 hollow nodes, a small S2) on the
// real control plane. It checks that every scenario ran to completion and
// was measured, and guards against real regressions only: the write counts
// per node and job, which are nearly deterministic, and ratios to the
// floor far past their targets. Timings belong in BENCHMARKS.md, from
// `make bench`.
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
	if len(r.S1) != len(cfg.S1Nodes)*cfg.S1Runs {
		t.Fatalf("%d S1 results, want one per size %v and run (%d)", len(r.S1), cfg.S1Nodes, cfg.S1Runs)
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
		if !strings.Contains(md, "| "+strconv.Itoa(s.Nodes)+" (run 1) | ") {
			t.Errorf("the report has no row for %d nodes:\n%s", s.Nodes, md)
		}
	}
	checkGuards(t, r)
	t.Logf("quick benchmark (figures only; `make bench` writes BENCHMARKS.md):\n%s", md)
}

// Regression guards, set well clear of what BENCHMARKS.md records (S1
// about 2.1 writes per node and the 1,000-node run 1.4x its floor; the
// small S2 0.7 to 1.4 writes per node and job from run to run) so that only a real change
// of behaviour trips them: a writer that stopped folding, a status that
// is written twice, a fan-out that lost its concurrency.
const (
	maxS1WritesPerNode    = 2.6
	maxS1Ratio            = 3.0 // the target is 1.5
	maxS2WritesPerNodeJob = 2.0
	maxS2Ratio            = 6.0
)

func checkGuards(t *testing.T, r *harness.Report) {
	t.Helper()
	for _, s := range r.S1 {
		if s.Nodes < 200 {
			continue // a handful of writes: too few to judge
		}
		if got := s.WritesPerNode(); got > maxS1WritesPerNode {
			t.Errorf("S1 at %d nodes: %.2f writes per node, guard %.1f (BENCHMARKS.md: about 2.1)", s.Nodes, got, maxS1WritesPerNode)
		}
		if s.Nodes >= 1000 && s.Ratio() > maxS1Ratio {
			t.Errorf("S1 at %d nodes: %.2fx the floor, guard %.1fx (target 1.5x)", s.Nodes, s.Ratio(), maxS1Ratio)
		}
	}
	if len(r.S2) == 0 {
		t.Fatal("no S2 result: the quick benchmark runs a small S2")
	}
	for _, s := range r.S2 {
		if int(s.Succeeded) != s.Jobs*s.Nodes || s.Floor <= 0 || s.FloorAPIServerCPU <= 0 || len(s.Complete) != s.Jobs || len(s.FirstNode) != s.Jobs || len(s.FirstTag) != s.Jobs {
			t.Errorf("S2 run %d: %d of %d node pulls, floor %s (apiserver CPU %.1f s), %d completions, %d first nodes and %d first tags of %d jobs: all must be measured",
				s.Run, s.Succeeded, s.Jobs*s.Nodes, s.Floor, s.FloorAPIServerCPU, len(s.Complete), len(s.FirstNode), len(s.FirstTag), s.Jobs)
		}
		if got := s.WritesPerNodeJob(); got > maxS2WritesPerNodeJob {
			t.Errorf("S2 run %d: %.2f writes per node and job, guard %.1f (the tag writer folds jobs' writes per node)", s.Run, got, maxS2WritesPerNodeJob)
		}
		if s.Ratio() > maxS2Ratio {
			t.Errorf("S2 run %d: %.2fx its floor, guard %.1fx", s.Run, s.Ratio(), maxS2Ratio)
		}
	}
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

// TestWavesSpareTheRegistry runs the waves benchmark small: with waves the
// registry serves the image once per zone (here one), a count, not a time;
// without, every node pulls it once from the registry or a peer.
func TestWavesSpareTheRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	cfg := harness.WavesConfig{Nodes: 12, ImageBytes: 4 << 20, RegistryBytesPerSecond: 100 << 20, PeerBytesPerSecond: 100 << 20, Runs: 1, Logf: t.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := harness.RunWaves(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Runs) != 2 {
		t.Fatalf("%d runs, want one with waves and one without", len(r.Runs))
	}
	for _, run := range r.Runs {
		total := run.RegistryBytes + run.MirrorBytes
		if total != int64(cfg.Nodes)*cfg.ImageBytes {
			t.Errorf("waves=%v: %d bytes served in all, want the image once per node (%d)", run.Waves, total, int64(cfg.Nodes)*cfg.ImageBytes)
		}
		if run.Waves && run.RegistryBytes != cfg.ImageBytes {
			t.Errorf("with waves the registry served %d bytes, want the image once (%d): the first wave is one node", run.RegistryBytes, cfg.ImageBytes)
		}
	}
	if md := r.Markdown(); !strings.Contains(md, "meets the target") {
		t.Errorf("report:\n%s", md)
	}
}
