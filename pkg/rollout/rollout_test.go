package rollout

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

func TestPlanOf(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		seeds       int
		key         string
		first       string
		err         string
	}{
		{name: "none", key: DefaultTopologyKey},
		{name: "waves true", annotations: map[string]string{WavesAnnotation: "True"}, seeds: 1, key: DefaultTopologyKey},
		{name: "waves false", annotations: map[string]string{WavesAnnotation: "false"}, key: DefaultTopologyKey},
		{name: "three seeds", annotations: map[string]string{WavesAnnotation: " 3 "}, seeds: 3, key: DefaultTopologyKey},
		{name: "zero seeds", annotations: map[string]string{WavesAnnotation: "0"}, key: DefaultTopologyKey, err: WavesAnnotation},
		{name: "too many seeds", annotations: map[string]string{WavesAnnotation: "1001"}, key: DefaultTopologyKey, err: "from 1 to 1000"},
		{name: "waves word", annotations: map[string]string{WavesAnnotation: "yes"}, key: DefaultTopologyKey, err: `"yes"`},
		{name: "topology key", annotations: map[string]string{WavesAnnotation: "1", WaveTopologyAnnotation: "example.com/rack"}, seeds: 1, key: "example.com/rack"},
		{name: "bad topology key", annotations: map[string]string{WaveTopologyAnnotation: "not a key"}, key: DefaultTopologyKey, err: WaveTopologyAnnotation},
		{name: "first", annotations: map[string]string{NodesFirstAnnotation: "mirror.example.com/ready=true"}, key: DefaultTopologyKey, first: "mirror.example.com/ready=true"},
		{name: "bad first", annotations: map[string]string{NodesFirstAnnotation: "a in (b"}, key: DefaultTopologyKey, err: NodesFirstAnnotation},
		{name: "two errors keep the good part", annotations: map[string]string{WavesAnnotation: "2", NodesFirstAnnotation: "==", WaveTopologyAnnotation: "-"}, seeds: 2, key: DefaultTopologyKey, err: WaveTopologyAnnotation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanOf(tc.annotations)
			if tc.err == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want one naming %q", err, tc.err)
			}
			if p.Seeds != tc.seeds || p.TopologyKey != tc.key {
				t.Fatalf("plan %+v, want seeds %d key %s", p, tc.seeds, tc.key)
			}
			first := ""
			if p.First != nil {
				first = p.First.String()
			}
			if first != tc.first {
				t.Fatalf("first %q, want %q", first, tc.first)
			}
		})
	}
}

func TestOrder(t *testing.T) {
	nodes := []Candidate{
		{Name: "e"},
		{Name: "d", Labels: map[string]string{"ready": "true"}},
		{Name: "c", HasOtherTag: true},
		{Name: "b", Labels: map[string]string{"ready": "true"}},
		{Name: "a"},
		{Name: "f", HasOtherTag: true, Labels: map[string]string{"ready": "true"}},
	}
	sel, _ := labels.Parse("ready=true")
	Order(nodes, sel)
	if got, want := names(nodes), []string{"c", "f", "b", "d", "a", "e"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	Order(nodes, nil)
	if got, want := names(nodes), []string{"c", "f", "a", "b", "d", "e"}; !slices.Equal(got, want) {
		t.Fatalf("order without a selector %v, want %v", got, want)
	}
}

func names(cs []Candidate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// zones makes n waiting nodes in each zone, named zone-i, in order.
func zones(n int, zs ...string) []Candidate {
	var out []Candidate
	for _, z := range zs {
		for i := range n {
			out = append(out, Candidate{Name: fmt.Sprintf("%s-%d", z, i), Labels: map[string]string{DefaultTopologyKey: z}})
		}
	}
	Order(out, nil)
	return out
}

func TestNext(t *testing.T) {
	waves := Plan{Seeds: 1, TopologyKey: DefaultTopologyKey}
	for _, tc := range []struct {
		name    string
		plan    Plan
		waiting []Candidate
		written Written
		limit   int
		want    []string
		wave    int
	}{
		{name: "no waves takes the first limit", plan: Plan{}, waiting: zones(3, "a"), limit: 2, want: []string{"a-0", "a-1"}},
		{name: "no waves, limit past the nodes", plan: Plan{}, waiting: zones(1, "a"), limit: 5, want: []string{"a-0"}},
		{name: "negative limit", plan: Plan{}, waiting: zones(1, "a"), limit: -1, want: []string{}},
		{name: "first wave: one seed per zone", plan: waves, waiting: zones(4, "a", "b", "c"), limit: 100, want: []string{"a-0", "b-0", "c-0"}, wave: 1},
		{name: "first wave under a limit: zones take turns", plan: waves, waiting: zones(4, "a", "b", "c"), limit: 2, want: []string{"a-0", "b-0"}, wave: 1},
		{name: "seeds pulling: nothing more", plan: waves, waiting: zones(3, "a", "b", "c"),
			written: Written{PerZone: map[string]int{"a": 1, "b": 1, "c": 1}, Active: 1}, limit: 100, want: []string{}, wave: 1},
		{name: "seeds done: wave two adds two per zone", plan: waves, waiting: zones(3, "a", "b"),
			written: Written{PerZone: map[string]int{"a": 1, "b": 1}}, limit: 100, want: []string{"a-0", "b-0", "a-1", "b-1"}, wave: 2},
		{name: "wave one not complete in a zone: it finishes first", plan: waves, waiting: zones(3, "a", "b"),
			written: Written{PerZone: map[string]int{"a": 1}}, limit: 100, want: []string{"b-0"}, wave: 1},
		{name: "a zone with no node left does not hold the next wave", plan: waves, waiting: zones(5, "a"),
			written: Written{PerZone: map[string]int{"a": 3, "b": 1}}, limit: 100, want: []string{"a-0", "a-1", "a-2", "a-3"}, wave: 3},
		{name: "two seeds per zone widen to six more", plan: Plan{Seeds: 2, TopologyKey: DefaultTopologyKey}, waiting: zones(10, "a"),
			written: Written{PerZone: map[string]int{"a": 2}}, limit: 100, want: []string{"a-0", "a-1", "a-2", "a-3"}, wave: 2},
		{name: "a new node in a zone joins the wave in progress", plan: waves, waiting: zones(1, "c"),
			written: Written{PerZone: map[string]int{"a": 3, "b": 2}, Active: 2}, limit: 100, want: []string{"c-0"}, wave: 2},
		{name: "nodes without the zone label are one zone", plan: waves, waiting: []Candidate{{Name: "x"}, {Name: "y"}}, limit: 100, want: []string{"x"}, wave: 1},
		{name: "another topology key", plan: Plan{Seeds: 1, TopologyKey: "rack"},
			waiting: []Candidate{{Name: "x", Labels: map[string]string{"rack": "1"}}, {Name: "y", Labels: map[string]string{"rack": "1"}}, {Name: "z", Labels: map[string]string{"rack": "2"}}},
			limit:   100, want: []string{"x", "z"}, wave: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, wave := Next(tc.plan, tc.waiting, tc.written, tc.limit)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("took %v, want %v", got, tc.want)
			}
			if wave.Number != tc.wave {
				t.Fatalf("wave %d, want %d", wave.Number, tc.wave)
			}
		})
	}
}

// TestWavesWidenGeometrically plays a job over 50 nodes in one zone: each
// wave doubles the nodes that got the tag before it, and every node gets
// it in the end.
func TestWavesWidenGeometrically(t *testing.T) {
	waiting := zones(50, "a")
	written := Written{PerZone: map[string]int{}}
	var sizes []int
	for len(waiting) > 0 {
		took, _ := Next(Plan{Seeds: 1, TopologyKey: DefaultTopologyKey}, waiting, written, 1000)
		if len(took) == 0 {
			t.Fatalf("stuck with %d nodes waiting after waves %v", len(waiting), sizes)
		}
		sizes = append(sizes, len(took))
		written.PerZone["a"] += len(took)
		waiting = waiting[len(took):]
	}
	if want := []int{1, 2, 4, 8, 16, 19}; !slices.Equal(sizes, want) {
		t.Fatalf("waves %v, want %v", sizes, want)
	}
}
