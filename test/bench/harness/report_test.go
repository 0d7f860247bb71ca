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
