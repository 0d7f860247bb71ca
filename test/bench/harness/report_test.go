package harness

import (
	"strings"
	"testing"
)

const before = `# prepull benchmarks

## S1 fan-out: one Always job over N nodes, parallelism N, instant pulls

| nodes | create → complete | floor | ratio to floor | target | writes per node and job |
|---:|---:|---:|---:|---|---:|
| 200 | 1.01 s | 0.60 s | 1.70 | ≤ 2.00 s: met | 2.13 |
| 1000 | 5.29 s | 3.91 s | 1.35 | ≤ 1.5x floor: met | 2.06 |

<!-- big-image -->
## Big image
old table
<!-- /big-image -->
`

func TestCompareReportsChangedFigures(t *testing.T) {
	after := strings.Replace(before, "| 1000 | 5.29 s | 3.91 s | 1.35 |", "| 1000 | 4.00 s | 3.91 s | 1.02 |", 1)
	got := Compare(before, after)
	for _, want := range []string{
		"S1 fan-out: one Always job over N nodes, parallelism N, instant pulls | 1000 | create → complete: 5.29 s -> 4.00 s (-24%)",
		"| 1000 | ratio to floor: 1.35 -> 1.02 (-24%)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Compare output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "| 200 |") || strings.Contains(got, "floor: 3.91") {
		t.Errorf("Compare reported figures that did not change:\n%s", got)
	}
	if got := Compare(before, before); !strings.Contains(got, "no compared figure changed") {
		t.Errorf("Compare of a report with itself: %s", got)
	}
}

func TestWithSectionReplacesOrAppends(t *testing.T) {
	doc := WithSection(before, "big-image", "new table")
	if strings.Contains(doc, "old table") || !strings.Contains(doc, "<!-- big-image -->\nnew table\n<!-- /big-image -->\n") {
		t.Errorf("section not replaced in place:\n%s", doc)
	}
	doc = WithSection(doc, "write-cost", "costs")
	if !strings.HasSuffix(doc, "<!-- /big-image -->\n\n<!-- write-cost -->\ncosts\n<!-- /write-cost -->\n") {
		t.Errorf("new section not appended at the end:\n%s", doc)
	}
}

// The API server's storage counts are read apart from its request
// counts and never count as writes.
func TestStoreCountsFromMetrics(t *testing.T) {
	for _, c := range []struct {
		line, key string
		v         float64
		ok        bool
	}{
		{`etcd_requests_total{group="apps.kruise.io",operation="update",resource="nodeimages"} 5320`, "etcd update nodeimages", 5320, true},
		{`etcd_requests_total{group="apps.kruise.io",operation="get",resource="nodeimages"} 1407`, "etcd get nodeimages", 1407, true},
		{`apiserver_terminated_watchers_total{group="apps.kruise.io",resource="nodeimages"} 2`, "dropped watchers nodeimages", 2, true},
		{`apiserver_request_total{code="200",resource="nodeimages",subresource="",verb="PATCH"} 7`, "", 0, false},
		{`etcd_requests_total{operation="update",resource="nodeimages"} x`, "", 0, false},
		{`apiserver_watch_events_dispatch_duration_seconds_bucket{group="apps.kruise.io",resource="nodeimages",stage="storage_to_cache",le="0.1"} 40`, "watch lag nodeimages le=0.1", 40, true},
		{`apiserver_watch_events_dispatch_duration_seconds_bucket{group="apps.kruise.io",resource="nodeimages",stage="total",le="0.1"} 40`, "", 0, false},
	} {
		key, v, ok := storeCount(c.line)
		if key != c.key || v != c.v || ok != c.ok {
			t.Errorf("storeCount(%s) = %q, %v, %v; want %q, %v, %v", c.line, key, v, ok, c.key, c.v, c.ok)
		}
	}
	d := Requests{"PATCH nodeimages": 1000, "PATCH nodeimages/status": 1000, "etcd update nodeimages": 3000, "etcd get nodeimages": 500,
		"watch lag nodeimages le=0.1": 60, "watch lag nodeimages le=1": 90, "watch lag nodeimages le=+Inf": 100}
	if len(d.Writes()) != 2 {
		t.Errorf("writes of %v: %v, want the two PATCH counts only", d, d.Writes())
	}
	if u, g := storeWork(d).PerPatch(); u != 1.5 || g != 0.25 {
		t.Errorf("per patch: updates %v, reads %v; want 1.5 and 0.25", u, g)
	}
	if a, b := storeWork(d).LateShares(); a != 0.4 || b != 0.1 {
		t.Errorf("late shares %v, %v; want 0.4 and 0.1", a, b)
	}
}
