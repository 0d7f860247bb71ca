// Command bench runs prepull's benchmark scenarios (test/bench/harness)
// and writes BENCHMARKS.md: `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prepull/prepull/test/bench/harness"
)

func main() {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	quick := fs.Bool("quick", false, "Run only S1 up to 1,000 nodes (what `make test` runs as a smoke test).")
	out := fs.String("out", "BENCHMARKS.md", "File the report is written to; empty: standard output only.")
	full := harness.Full()
	s1 := fs.String("s1-nodes", joinInts(full.S1Nodes), "S1 fleet sizes, ascending, comma-separated.")
	fs.IntVar(&full.S1Runs, "s1-runs", full.S1Runs, "How many times S1 runs over its sizes (targets count on the worst run of each size).")
	fs.IntVar(&full.S2Jobs, "s2-jobs", full.S2Jobs, "S2 jobs (0 skips S2 and S3).")
	fs.IntVar(&full.S2Nodes, "s2-nodes", full.S2Nodes, "Nodes each S2 job covers; one of -s1-nodes.")
	fs.IntVar(&full.S2Parallelism, "s2-parallelism", full.S2Parallelism, "Parallelism of each S2 job.")
	fs.DurationVar(&full.S2PullDelay, "s2-pull-delay", full.S2PullDelay, "How long each S2 pull takes.")
	fs.IntVar(&full.S2Runs, "s2-runs", full.S2Runs, "How many times S2 runs, each followed by its floor (targets count on the worst run).")
	fs.IntVar(&full.S5Jobs, "s5-jobs", full.S5Jobs, "S5 (issue 11's size) jobs, after S2 (0 skips S5).")
	fs.IntVar(&full.S5Nodes, "s5-nodes", full.S5Nodes, "Nodes each S5 job covers; one of -s1-nodes.")
	fs.IntVar(&full.S5Parallelism, "s5-parallelism", full.S5Parallelism, "Parallelism of each S5 job.")
	fs.DurationVar(&full.S5Timeout, "s5-timeout", full.S5Timeout, "S5 stops after this long and reports the node pulls done by then.")
	fs.DurationVar(&full.Idle, "idle", full.Idle, "How long S3 watches the idle cluster (0 skips S3).")
	fs.IntVar(&full.S4NodeImages, "s4-nodeimages", full.S4NodeImages, "NodeImages in S4 (0 skips S4).")
	fs.IntVar(&full.S4Images, "s4-images", full.S4Images, "Images per NodeImage in S4.")
	big := harness.BigImageConfig{Bytes: 2 << 30, Layers: 2, Rounds: 3}
	fs.Int64Var(&big.Bytes, "big-image-bytes", big.Bytes, "Size of the big-image scenario's image (0 skips it; quick mode skips it).")
	fs.IntVar(&big.Rounds, "big-image-rounds", big.Rounds, "Rounds of the big-image scenario (each pulls the image directly and by prepull).")
	bigOnly := fs.Bool("big-image-only", false, "Run only the big-image scenario and replace its section of -out, keeping the rest.")
	cost := harness.WriteCostConfig{Writes: 200, Rounds: 3}
	costEntries := fs.String("write-cost-entries", "1,5,20,40,80", "NodeImage sizes (entries) of the write-cost micro-benchmark, ascending (empty skips it; quick mode skips it).")
	fs.IntVar(&cost.Writes, "write-cost-writes", cost.Writes, "Sequential writes per figure of the write-cost micro-benchmark.")
	fs.IntVar(&cost.Rounds, "write-cost-rounds", cost.Rounds, "Rounds of the write-cost micro-benchmark (sizes interleaved within each).")
	costOnly := fs.Bool("write-cost-only", false, "Run only the write-cost micro-benchmark and replace its section of -out, keeping the rest.")
	waves := harness.WavesConfig{Nodes: 50, ImageBytes: 64 << 20, RegistryBytesPerSecond: 200 << 20, PeerBytesPerSecond: 200 << 20, Runs: 3}
	fs.IntVar(&waves.Nodes, "waves-nodes", waves.Nodes, "Nodes of the waves benchmark (0 skips it; quick mode skips it).")
	fs.Int64Var(&waves.ImageBytes, "waves-image-bytes", waves.ImageBytes, "Size of the waves benchmark's image.")
	fs.IntVar(&waves.Runs, "waves-runs", waves.Runs, "Runs of the waves benchmark (each with and without waves).")
	wavesOnly := fs.Bool("waves-only", false, "Run only the waves benchmark and replace its section of -out, keeping the rest.")
	fs.IntVar(&full.WriteConcurrency, "write-concurrency", full.WriteConcurrency, "The controller's --nodeimage-write-concurrency.")
	fs.IntVar(&full.FloorConcurrency, "floor-write-concurrency", full.FloorConcurrency, "Spec writes the floors keep in flight.")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: bench [flags]\n\nRuns prepull's benchmark scenarios (issue 11) on a real control plane with the controller\nand hollow nodes, each next to the floor, prints the table and writes it to -out. Flags:\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	cfg := full
	if *quick {
		cfg = harness.Quick()
	} else {
		sizes, err := parseInts(*s1)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: -s1-nodes: %v\n", err)
			os.Exit(2)
		}
		cfg.S1Nodes = sizes
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "out" {
			cfg.Flags = append(cfg.Flags, fmt.Sprintf("-%s=%s", f.Name, f.Value))
		}
	})
	cfg.Logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *costEntries != "" {
		var err error
		if cost.Entries, err = parseInts(*costEntries); err != nil {
			fmt.Fprintf(os.Stderr, "bench: -write-cost-entries: %v\n", err)
			os.Exit(2)
		}
	}
	old := ""
	if *out != "" {
		data, _ := os.ReadFile(*out)
		old = string(data)
	}
	var md string
	only := *bigOnly || *costOnly || *wavesOnly
	if !only {
		report, err := harness.Run(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		md = report.Markdown()
	} else {
		md = old
	}
	if !*quick && len(cost.Entries) > 0 && (!only || *costOnly) {
		cost.Logf = cfg.Logf
		res, err := harness.RunWriteCost(ctx, cost)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: write cost:", err)
			os.Exit(1)
		}
		md = harness.WithSection(md, writeCostSection, res.Markdown())
	}
	if !*quick && big.Bytes > 0 && (!only || *bigOnly) {
		big.Logf = cfg.Logf
		res, err := harness.RunBigImage(ctx, big)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: big image:", err)
			os.Exit(1)
		}
		md = harness.WithSection(md, bigImageSection, res.Markdown())
	}
	if !*quick && waves.Nodes > 0 && (!only || *wavesOnly) {
		waves.Logf = cfg.Logf
		res, err := harness.RunWaves(ctx, waves)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: waves:", err)
			os.Exit(1)
		}
		md = harness.WithSection(md, wavesSection, res.Markdown())
	}
	if old != "" {
		fmt.Fprintln(os.Stderr, harness.Compare(old, md))
	}
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *out)
	}
}

// bigImageSection and writeCostSection mark those tables in the report,
// so that -big-image-only, -write-cost-only and -waves-only can replace
// them alone.
const (
	bigImageSection  = "big-image"
	writeCostSection = "write-cost"
	wavesSection     = "waves"
)

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("sizes must ascend: %d after %d", n, out[len(out)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(v []int) string {
	var s []string
	for _, n := range v {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}
