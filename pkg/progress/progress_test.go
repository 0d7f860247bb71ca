package progress

import (
	"math"
	"testing"

	"github.com/prepull/prepull/pkg/pullwatch"
)

func TestHasRepo(t *testing.T) {
	if !hasRepo("a,b/c", "b/c") || hasRepo("a,b/c", "b") || hasRepo("", "a") {
		t.Error("hasRepo matches wrongly")
	}
}

// Sizes come from the registry: lies must not reach the status as
// negative or wrapped figures.
func TestSumOfDeclaredSizes(t *testing.T) {
	all := func(l layer) int64 { return l.Size }
	for _, tc := range []struct {
		name   string
		layers []layer
		done   func(layer) int64
		want   pullwatch.Bytes
		known  bool
	}{
		{"two layers, one present", []layer{{"a", 10}, {"b", 30}}, func(l layer) int64 {
			if l.Digest == "a" {
				return 10
			}
			return 0
		}, pullwatch.Bytes{Done: 10, Total: 40}, true},
		{"an ingest past its declared size counts as the size", []layer{{"a", 10}}, func(layer) int64 { return 25 }, pullwatch.Bytes{Done: 10, Total: 10}, true},
		{"a negative ingest offset counts as none", []layer{{"a", 10}}, func(layer) int64 { return -5 }, pullwatch.Bytes{Done: 0, Total: 10}, true},
		{"a negative declared size: unknown", []layer{{"a", 10}, {"b", -1}}, all, pullwatch.Bytes{}, false},
		{"sizes that overflow together: unknown", []layer{{"a", math.MaxInt64 - 5}, {"b", 10}}, all, pullwatch.Bytes{}, false},
		{"one huge size that fits", []layer{{"a", math.MaxInt64 - 5}, {"b", 5}}, func(l layer) int64 { return min(l.Size, 5) }, pullwatch.Bytes{Done: 10, Total: math.MaxInt64}, true},
		{"no sizes: unknown", []layer{{"a", 0}}, all, pullwatch.Bytes{}, false},
	} {
		got, known := sum(tc.layers, tc.done)
		if got != tc.want || known != tc.known {
			t.Errorf("%s: sum = %+v, %v; want %+v, %v", tc.name, got, known, tc.want, tc.known)
		}
	}
}
