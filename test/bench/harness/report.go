package harness

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/prepull/prepull/test/framework"
)

// Report is one benchmark run.
type Report struct {
	Started, Finished     time.Time
	Quick                 bool
	Machine, Commit       string
	LoadBefore, LoadAfter string
	WriteConcurrency      int
	S1                    []S1Result
	S2                    *S2Result
	S3                    *S3Result
	S4                    *S4Result
}

// s1Target is issue 11's S1 target for n nodes: an absolute time, or a
// ratio to the floor.
func s1Target(n int) (abs time.Duration, ratio float64) {
	switch {
	case n <= 3:
		return 200 * time.Millisecond, 0
	case n <= 200:
		return 2 * time.Second, 0
	default:
		return 0, 1.5
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// Markdown renders the report as BENCHMARKS.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# prepull benchmarks")
	w("")
	mode := "full"
	if r.Quick {
		mode = "quick (S1 up to 1,000 nodes)"
	}
	w("Written by `make bench` (%s mode). Measured %s, commit %s; %s; Go %s, Kubernetes %s control plane built by hack/build-controlplane.sh.",
		mode, r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Commit, r.Machine, strings.TrimPrefix(runtime.Version(), "go"), framework.KubernetesVersion)
	w("Load average (1, 5, 15 min) before: %s; after: %s. Run took %s.", r.LoadBefore, r.LoadAfter, r.Finished.Sub(r.Started).Round(time.Second))
	w("")
	w("Every process is real and on this machine: etcd, kube-apiserver, prepull-controller (its own process, default flags except")
	w("`--completed-tag-ttl=2h`, so that no completed job's tags expire inside S3's idle window),")
	w("and hollow nodes: one process per batch of nodes running the real daemon code of pkg/daemon for each node against an")
	w("in-memory image service (test/bench/hollow). The floor is a plain client-go program doing only the minimum writes,")
	w("one spec patch and one status patch per node, %d spec writes in flight under the controller's client limits (test/bench/floor).", r.WriteConcurrency)
	w("Writes are counted by the API server (`apiserver_request_total`), from the job's creation until no write was seen for a second.")
	w("")
	if len(r.S1) > 0 {
		w("## S1 fan-out: one Always job over N nodes, parallelism N, instant pulls")
		w("")
		w("| nodes | create → complete | floor | ratio to floor | target | writes per node and job | CPU: controller / hollow nodes / apiserver | controller peak RSS |")
		w("|---:|---:|---:|---:|---|---:|---:|---:|")
		for _, s := range r.S1 {
			ratio := s.Elapsed.Seconds() / s.Floor.Seconds()
			abs, maxRatio := s1Target(s.Nodes)
			perNode := s.Writes.Total() / float64(s.Nodes)
			var target string
			if abs > 0 {
				target = fmt.Sprintf("≤ %s: %s", secs(abs), mark(s.Elapsed <= abs))
			} else {
				target = fmt.Sprintf("≤ %.1fx floor: %s", maxRatio, mark(ratio <= maxRatio))
			}
			target += fmt.Sprintf("; ≤ 3 writes: %s", mark(perNode <= 3))
			w("| %d | %s | %s | %.2f | %s | %.2f | %.2f / %.2f / %.2f s | %s |", s.Nodes, secs(s.Elapsed), secs(s.Floor), ratio, target, perNode,
				s.ControllerCPU, s.FleetCPU, s.APIServerCPU, mib(s.Controller.PeakRSS))
		}
		w("")
		w("Writes per node and job, by verb and resource:")
		w("")
		keys := map[string]bool{}
		for _, s := range r.S1 {
			for k := range s.Writes {
				keys[k] = true
			}
		}
		var cols []string
		for k := range keys {
			cols = append(cols, k)
		}
		sort.Strings(cols)
		w("| nodes | %s |", strings.Join(cols, " | "))
		w("|---:|%s", strings.Repeat("---:|", len(cols)))
		for _, s := range r.S1 {
			var cells []string
			for _, k := range cols {
				cells = append(cells, fmt.Sprintf("%.2f", s.Writes[k]/float64(s.Nodes)))
			}
			w("| %d | %s |", s.Nodes, strings.Join(cells, " | "))
		}
		w("")
	}
	if s := r.S2; s != nil {
		w("## S2 many jobs: %d jobs × %d nodes, parallelism %d each, %s pulls", s.Jobs, s.Nodes, s.Parallelism, s.PullDelay)
		w("")
		ratio := s.TotalSyncs() / s.StatusWrites
		w("| wall time | node pulls succeeded | controller syncs | syncs/s | NodeImage status writes observed | syncs per status write (target ≤ 2) | controller CPU | writes per node and job |")
		w("|---:|---:|---:|---:|---:|---:|---:|---:|")
		w("| %s | %d | %.0f | %.1f | %.0f | %.2f: %s | %.1f s | %.2f |", secs(s.Elapsed), s.Succeeded, s.TotalSyncs(), s.TotalSyncs()/s.Elapsed.Seconds(),
			s.StatusWrites, ratio, mark(ratio <= 2), s.ControllerCPU, s.Writes.Total()/float64(s.Jobs*s.Nodes))
		w("")
		var parts []string
		for _, k := range sortedKeys(s.Syncs) {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, s.Syncs[k]))
		}
		w("Syncs by controller: %s.", strings.Join(parts, ", "))
		parts = nil
		for _, k := range s.Writes.Keys() {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, s.Writes[k]))
		}
		w("Writes: %s.", strings.Join(parts, ", "))
		w("")
	}
	if s := r.S3; s != nil {
		w("## S3 idle: %s after S2 with nothing to do", s.Idle)
		w("")
		writes := s.Requests.Writes().Total()
		w("| process | CPU seconds | CPU share |")
		w("|---|---:|---:|")
		for _, k := range sortedKeys(s.CPU) {
			w("| %s | %.2f | %.2f%% |", k, s.CPU[k], 100*s.CPU[k]/s.Idle.Seconds())
		}
		w("")
		var parts []string
		for _, k := range s.Requests.Keys() {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, s.Requests[k]))
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		w("Writes: %.0f (target 0: %s). All requests: %s.", writes, mark(writes == 0), strings.Join(parts, ", "))
		w("")
	}
	if s := r.S4; s != nil {
		w("## S4 memory: %d NodeImages holding %d images each", s.NodeImages, s.Images)
		w("")
		w("| process | peak RSS | PSS | PSS anonymous | PSS file (binary) | target |")
		w("|---|---:|---:|---:|---:|---|")
		w("| prepull-controller (all NodeImages cached) | %s | %s | %s | %s | RSS ≤ 200 MiB: %s |", mib(s.Controller.PeakRSS), mib(s.Controller.PSS),
			mib(s.Controller.PSSAnon), mib(s.Controller.PSSFile), mark(s.Controller.PeakRSS <= 200<<20))
		w("| prepull-daemon (real binary, one node of %d images, idle) | %s | %s | %s | %s | PSS ≤ 6 MiB: %s; anonymous: %s |", s.Images, mib(s.Daemon.PeakRSS), mib(s.Daemon.PSS),
			mib(s.Daemon.PSSAnon), mib(s.Daemon.PSSFile), mark(s.Daemon.PSS <= 6<<20), mark(s.Daemon.PSSAnon <= 6<<20))
		w("")
		w("One daemon process alone counts all of its binary's mapped code in its PSS; where many daemons share a machine")
		w("(as in the measurement the target came from, one process per node on one host) that part is divided among them.")
		w("")
	}
	return b.String()
}

func sortedKeys(m map[string]float64) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Section wraps text in HTML comment markers named name, which Markdown
// does not show, so that a later run can find and replace it.
func Section(name, text string) string {
	return "<!-- " + name + " -->\n" + strings.TrimRight(text, "\n") + "\n<!-- /" + name + " -->\n"
}

// WithoutSection removes the section named name from doc, if it has one.
func WithoutSection(doc, name string) string {
	start := strings.Index(doc, "<!-- "+name+" -->")
	endMark := "<!-- /" + name + " -->\n"
	end := strings.Index(doc, endMark)
	if start < 0 || end < start {
		return doc
	}
	return doc[:start] + doc[end+len(endMark):]
}
