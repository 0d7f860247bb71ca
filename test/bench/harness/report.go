package harness

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strconv"
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
	FloorConcurrency      int
	Flags                 []string
	S1                    []S1Result
	S2                    []S2Result
	S3                    *S3Result
	S5                    *S2Result
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

func s1Abs(n int) bool { abs, _ := s1Target(n); return abs > 0 }

// s1Key names an S1 row: its size, and its run when there are several.
func s1Key(s S1Result) string { return fmt.Sprintf("%d (run %d)", s.Nodes, s.Run) }

// s1Meets judges one S1 run against its size's targets.
func s1Meets(s S1Result) (string, bool) {
	abs, maxRatio := s1Target(s.Nodes)
	var target string
	ok := true
	if abs > 0 {
		ok = s.Elapsed <= abs
		target = fmt.Sprintf("≤ %s: %s", secs(abs), mark(ok))
	} else {
		ok = s.Ratio() <= maxRatio
		target = fmt.Sprintf("≤ %.1fx floor: %s", maxRatio, mark(ok))
	}
	writesOK := s.WritesPerNode() <= 3
	return target + fmt.Sprintf("; ≤ 3 writes: %s", mark(writesOK)), ok && writesOK
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
	if len(r.Flags) == 0 {
		w("The benchmark ran with its default flags (`make bench`).")
	} else {
		w("The benchmark ran with flags other than its defaults: `%s`.", strings.Join(r.Flags, " "))
	}
	w("")
	w("Every process is real and on this machine: etcd, kube-apiserver, prepull-controller (its own process, default flags except")
	w("`--completed-tag-ttl=2h`, so that no completed job's tags expire inside S3's idle window, and `--unanswered-timeout=2h`,")
	w("so that the checks one scenario's tag writes schedule 10 minutes later do not come due inside a later scenario's runs),")
	w("and hollow nodes: one process per batch of nodes running the real daemon code of pkg/daemon for each node against an")
	w("in-memory image service (test/bench/hollow). The floor is a plain client-go program doing only the minimum writes,")
	w("one spec patch and one status patch per node, %d spec writes in flight (the controller keeps %d) under the controller's client limits (test/bench/floor).", r.FloorConcurrency, r.WriteConcurrency)
	w("Writes are counted by the API server (`apiserver_request_total`), from the job's creation until no write was seen for a second.")
	w("")
	if len(r.S1) > 0 {
		w("## S1 fan-out: one Always job over N nodes, parallelism N, instant pulls")
		w("")
		w("| nodes | create → complete | floor | ratio to floor | target | writes per node and job | CPU: controller / hollow nodes / apiserver | controller peak RSS |")
		w("|---:|---:|---:|---:|---|---:|---:|---:|")
		rows := slices.Clone(r.S1)
		slices.SortStableFunc(rows, func(a, b S1Result) int { return a.Nodes - b.Nodes })
		worst := map[int]S1Result{}
		for _, s := range rows {
			target, _ := s1Meets(s)
			w("| %s | %s | %s | %.2f | %s | %.2f | %.2f / %.2f / %.2f s | %s |", s1Key(s), secs(s.Elapsed), secs(s.Floor), s.Ratio(), target, s.WritesPerNode(),
				s.ControllerCPU, s.FleetCPU, s.APIServerCPU, mib(s.Controller.PeakRSS))
			prev, seen := worst[s.Nodes]
			if !seen || (s1Abs(s.Nodes) && s.Elapsed > prev.Elapsed) || (!s1Abs(s.Nodes) && s.Ratio() > prev.Ratio()) {
				worst[s.Nodes] = s
			}
		}
		w("")
		var parts []string
		for _, n := range slices.Sorted(maps.Keys(worst)) {
			target, _ := s1Meets(worst[n])
			parts = append(parts, fmt.Sprintf("%d nodes: %s", n, target))
		}
		w("Targets on the worst run of each size: %s.", strings.Join(parts, "; "))
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
			w("| %s | %s |", s1Key(s), strings.Join(cells, " | "))
		}
		w("")
	}
	if len(r.S2) > 0 {
		r.s2Markdown(w)
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
	if s := r.S5; s != nil {
		r.s5Markdown(w, s)
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

// spreadDurations is the median, minimum and maximum of v.
func spreadDurations(v []time.Duration) (median, lo, hi time.Duration) {
	f := make([]float64, len(v))
	for i, d := range v {
		f[i] = float64(d)
	}
	m, l, h := spread(f)
	return time.Duration(m), time.Duration(l), time.Duration(h)
}

// WithSection puts text into doc as the section named name: in place of
// the section doc has by that name, or at its end.
func WithSection(doc, name, text string) string {
	start := strings.Index(doc, "<!-- "+name+" -->")
	endMark := "<!-- /" + name + " -->\n"
	end := strings.Index(doc, endMark)
	if start < 0 || end < start {
		return strings.TrimRight(doc, "\n") + "\n\n" + Section(name, text)
	}
	return doc[:start] + Section(name, text) + doc[end+len(endMark):]
}

// comparedColumns are the table columns Compare reports: times, ratios
// to the floor, write counts and costs.
var comparedColumns = []string{"create → complete", "ratio to floor", "writes per node and job", "wall time", "floor",
	"status write: median", "spec write: median", "prepull / direct", "controller peak RSS", "peak RSS"}

// Compare lists, for every table row found in both reports (by section
// heading and first cell), how each compared figure changed from before
// to after, so a run shows at once what it moved against the committed
// BENCHMARKS.md.
func Compare(before, after string) string {
	old := tableCells(before)
	var b strings.Builder
	b.WriteString("Change against the previous report:\n")
	n := 0
	for _, c := range tableCellList(after) {
		was, ok := old[c.key]
		if !ok {
			continue
		}
		x, okx := leadingNumber(was)
		y, oky := leadingNumber(c.value)
		if !okx || !oky || x == y {
			continue
		}
		change := "new"
		if x != 0 {
			change = fmt.Sprintf("%+.0f%%", (y-x)*100/x)
		}
		fmt.Fprintf(&b, "  %s: %s -> %s (%s)\n", c.key, strings.TrimSpace(was), strings.TrimSpace(c.value), change)
		n++
	}
	if n == 0 {
		b.WriteString("  no compared figure changed (or the previous report has none of these tables)\n")
	}
	return b.String()
}

type cell struct{ key, value string }

func tableCells(doc string) map[string]string {
	out := map[string]string{}
	for _, c := range tableCellList(doc) {
		out[c.key] = c.value
	}
	return out
}

// tableCellList reads the compared columns of every Markdown table in doc,
// keyed "heading | first cell | column".
func tableCellList(doc string) []cell {
	var out []cell
	heading := ""
	var header []string
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			heading, header = strings.TrimPrefix(line, "## "), nil
		case !strings.HasPrefix(line, "|"):
			header = nil
		case header == nil:
			header = splitRow(line)
		case strings.HasPrefix(line, "|--") || strings.HasPrefix(line, "|:"):
		default:
			row := splitRow(line)
			for i, h := range header {
				if i == 0 || i >= len(row) || !slices.Contains(comparedColumns, h) {
					continue
				}
				out = append(out, cell{key: heading + " | " + row[0] + " | " + h, value: row[i]})
			}
		}
	}
	return out
}

func splitRow(line string) []string {
	parts := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// leadingNumber parses the number a cell starts with ("5.29 s", "1.35",
// "114.0 MiB").
func leadingNumber(s string) (float64, bool) {
	s = strings.TrimSpace(strings.TrimLeft(s, "*"))
	end := 0
	for end < len(s) && (s[end] == '.' || s[end] == '-' || (s[end] >= '0' && s[end] <= '9')) {
		end++
	}
	v, err := strconv.ParseFloat(s[:end], 64)
	return v, err == nil
}

// s2Markdown renders S2: a row per run, then the targets judged on the
// worst run.
func (r *Report) s2Markdown(w func(format string, args ...any)) {
	s0 := r.S2[0]
	w("## S2 many jobs: %d jobs × %d nodes, parallelism %d each, %s pulls, %d pulls at once per node", s0.Jobs, s0.Nodes, s0.Parallelism, s0.PullDelay, hollowSlots)
	w("")
	w("Each run starts after the previous run's jobs are deleted and their tags left every node, so each meets NodeImages of the same sizes.")
	w("The floor, measured right after each run on NodeImages of its own, is the least any controller and daemons could do (test/bench/floor RunMany):")
	w("the jobs' parallelism allows %d phases in which every node is busy; in each, every node gets its share of the jobs' tags in one spec write,", max(1, (s0.Nodes+s0.Parallelism-1)/s0.Parallelism))
	w("pulls them %d at a time, and reports them in one status write, as JSON patches like prepull's, %d spec writes in flight.", hollowSlots, r.FloorConcurrency)
	w("Before it starts, each of the floor's NodeImages gets as many finished tags as the run's NodeImages held on average when the run started")
	w("(earlier scenarios' completed tags; column \"entries before\"), so its writes cost what the run's do.")
	w("")
	w("| run | create → complete | floor | ratio to floor | writes per node and job | first tags per job: median (max) | first node done per job: median (max) | completion per job: median (max) | syncs per status write | entries before | apiserver CPU: run / floor | CPU: controller / hollow nodes / etcd |")
	w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var worstTime time.Duration
	var worstRatio, worstWrites, worstSyncs float64
	for _, s := range r.S2 {
		tm, _, thi := spreadDurations(s.FirstTag)
		fm, _, fhi := spreadDurations(s.FirstNode)
		cm, _, chi := spreadDurations(s.Complete)
		syncs := s.TotalSyncs() / s.StatusWrites
		w("| %d | %s | %s | %.2f | %.2f | %s (%s) | %s (%s) | %s (%s) | %.2f | %.1f | %.1f / %.1f s | %.1f / %.1f / %.1f s |", s.Run, secs(s.Elapsed), secs(s.Floor), s.Ratio(),
			s.WritesPerNodeJob(), secs(tm), secs(thi), secs(fm), secs(fhi), secs(cm), secs(chi), syncs, s.Preexisting, s.APIServerCPU, s.FloorAPIServerCPU, s.ControllerCPU, s.FleetCPU, s.EtcdCPU)
		worstTime, worstRatio = max(worstTime, s.Elapsed), max(worstRatio, s.Ratio())
		worstWrites, worstSyncs = max(worstWrites, s.WritesPerNodeJob()), max(worstSyncs, syncs)
	}
	w("")
	w("Targets, on the worst of %d runs: time ≤ 60 s: %s (%s); ≤ 1.5x floor: %s (%.2f); writes per node and job ≤ 1.5: %s (%.2f); syncs per status write ≤ 2: %s (%.2f).",
		len(r.S2), mark(worstTime <= 60*time.Second), secs(worstTime), mark(worstRatio <= 1.5), worstRatio, mark(worstWrites <= 1.5), worstWrites, mark(worstSyncs <= 2), worstSyncs)
	w("")
	for _, s := range r.S2 {
		u, g := s.Store.PerPatch()
		fu, fg := s.FloorStore.PerPatch()
		l1, l2 := s.Store.LateShares()
		fl1, fl2 := s.FloorStore.LateShares()
		w("Run %d, the API server's storage work per NodeImage patch (a patch applied to a stale watch-cache copy is applied again): etcd updates %.2f (floor %.2f), fresh reads %.2f (floor %.2f); NodeImage watchers it dropped as unresponsive: %.0f (floor %.0f); events its watch cache took in over 0.1 s / over 1 s after etcd sent them: %.0f%% / %.0f%% (floor %.0f%% / %.0f%%).",
			s.Run, u, fu, g, fg, s.Store.DroppedWatchers, s.FloorStore.DroppedWatchers, 100*l1, 100*l2, 100*fl1, 100*fl2)
	}
	w("")
	for _, s := range r.S2 {
		w("Run %d, syncs by controller: %s; the controller's NodeImage writes by writer/result: %s; writes: %s.", s.Run,
			joinCounts(s.Syncs, sortedKeys(s.Syncs)), joinCounts(s.ControllerWrites, sortedKeys(s.ControllerWrites)), joinCounts(s.Writes, s.Writes.Keys()))
	}
	w("")
}

// s5Markdown renders S5, issue 11's size.
func (r *Report) s5Markdown(w func(format string, args ...any), s *S2Result) {
	w("## S5 issue 11's size: %d jobs × %d nodes, parallelism %d each, %s pulls, %d pulls at once per node", s.Jobs, s.Nodes, s.Parallelism, s.PullDelay, hollowSlots)
	w("")
	w("Once, after S2's last run is cleared, without a floor (the floor's writes at NodeImages of %d entries would take longer than the run).", s.Jobs)
	w("")
	syncs := s.TotalSyncs() / s.StatusWrites
	done := fmt.Sprintf("%d of %d", s.Succeeded, s.Jobs*s.Nodes)
	if s.TimedOut {
		done += fmt.Sprintf(" (stopped at %s)", secs(s.Elapsed))
	}
	cm, _, chi := spreadDurations(s.Complete)
	w("| create → complete | node pulls done | writes per node and job | completion per job: median (max) | syncs per status write | controller peak RSS | CPU: controller / hollow nodes / apiserver / etcd |")
	w("|---:|---:|---:|---:|---:|---:|---:|")
	w("| %s | %s | %.2f | %s (%s) | %.2f | %s | %.1f / %.1f / %.1f / %.1f s |", secs(s.Elapsed), done, s.WritesPerNodeJob(), secs(cm), secs(chi), syncs,
		mib(s.Controller.PeakRSS), s.ControllerCPU, s.FleetCPU, s.APIServerCPU, s.EtcdCPU)
	w("")
	w("Targets: under 30 minutes: %s; syncs per status write ≤ 2: %s.", mark(!s.TimedOut && s.Elapsed <= 30*time.Minute), mark(syncs <= 2))
	w("")
}

// joinCounts renders counts as "key n, key n" in the order of keys.
func joinCounts(m map[string]float64, keys []string) string {
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
