// Package rollout decides which of a job's waiting nodes get its tag next:
// in which order, and, for a job that asks for waves, how many per zone at
// once. Pulling a few nodes first lets a peer-to-peer mirror (Spegel,
// Dragonfly, Kraken) serve the rest from inside the cluster instead of the
// registry serving every node.
package rollout

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Annotations of an ImagePullJob (and of an ImageListPullJob, whose jobs
// inherit them). Kruise's schema has no fields for them.
const (
	// WavesAnnotation "true" (one seed node per zone) or a number N (N
	// seed nodes per zone) starts the job on its seeds and widens
	// geometrically as each wave finishes: 1, 2, 4, ... times N nodes per
	// zone, so a wave has twice the nodes that already hold the image.
	WavesAnnotation = "prepull.io/waves"
	// WaveTopologyAnnotation is the node label whose values are the zones
	// of the waves; topology.kubernetes.io/zone unless set.
	WaveTopologyAnnotation = "prepull.io/wave-topology-key"
	// NodesFirstAnnotation is a label selector (kubectl's syntax, such as
	// "mirror.example.com/ready=true" or "pool in (a,b)"): nodes it matches get the
	// tag before the others.
	NodesFirstAnnotation = "prepull.io/nodes-first"
	// DefaultTopologyKey is the well-known zone label.
	DefaultTopologyKey = "topology.kubernetes.io/zone"
	// MaxSeeds bounds the seed nodes per zone one wave annotation asks.
	MaxSeeds = 1000
)

// Plan is what a job's annotations ask of its rollout.
type Plan struct {
	// Seeds is the number of nodes per zone of the first wave; 0 means no
	// waves (new nodes as parallelism allows).
	Seeds int
	// TopologyKey is the label that names a node's zone.
	TopologyKey string
	// First selects the nodes that go before the others; nil selects none.
	First labels.Selector
}

// PlanOf reads a job's rollout annotations. A bad value is reported and
// its part of the plan falls back to the default (no waves, no preferred
// nodes), so the job still runs; the controller tells the error in an
// Event.
func PlanOf(annotations map[string]string) (Plan, error) {
	p := Plan{TopologyKey: DefaultTopologyKey}
	var errs []string
	if v, ok := annotations[WavesAnnotation]; ok {
		switch s := strings.TrimSpace(v); {
		case strings.EqualFold(s, "true"):
			p.Seeds = 1
		case strings.EqualFold(s, "false"), s == "":
		default:
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > MaxSeeds {
				errs = append(errs, fmt.Sprintf("annotation %s: %q is neither \"true\" nor a number of seed nodes per zone from 1 to %d; the job pulls without waves until it is fixed", WavesAnnotation, v, MaxSeeds))
			} else {
				p.Seeds = n
			}
		}
	}
	if v, ok := annotations[WaveTopologyAnnotation]; ok {
		key := strings.TrimSpace(v)
		if _, err := labels.NewRequirement(key, "exists", nil); key == "" || err != nil {
			errs = append(errs, fmt.Sprintf("annotation %s: %q is not a label key such as %s; the waves use %s until it is fixed", WaveTopologyAnnotation, v, DefaultTopologyKey, DefaultTopologyKey))
		} else {
			p.TopologyKey = key
		}
	}
	if v, ok := annotations[NodesFirstAnnotation]; ok && strings.TrimSpace(v) != "" {
		sel, err := labels.Parse(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("annotation %s: %q is not a label selector such as mirror.example.com/ready=true (%v); nodes go in the default order until it is fixed", NodesFirstAnnotation, v, err))
		} else {
			p.First = sel
		}
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return p, nil
}

// Candidate is a node that waits for the job's tag.
type Candidate struct {
	Name   string
	Labels map[string]string
	// HasOtherTag says the node already pulled another tag of the image:
	// it holds most layers of the new one (a rollout's older version), so
	// it pulls fastest and can serve the rest to a peer-to-peer mirror.
	HasOtherTag bool
}

// Order sorts waiting nodes into the order they get the tag: nodes that
// hold another tag of the image, then nodes the plan's First selects, then
// the rest; by name within each group. The order is deterministic, so a
// job resumes where it was after a restart.
func Order(nodes []Candidate, first labels.Selector) {
	rank := func(c Candidate) int {
		r := 2
		if first != nil && first.Matches(labels.Set(c.Labels)) {
			r = 1
		}
		if c.HasOtherTag {
			r = 0
		}
		return r
	}
	slices.SortStableFunc(nodes, func(a, b Candidate) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// Wave is the wave a job is in.
type Wave struct {
	// Number counts from 1.
	Number int
	// PerZone is how many nodes of each zone may have the tag in this
	// wave, all waves so far together.
	PerZone int
}

// Written is what a job's nodes that already have its tag tell the waves.
type Written struct {
	// PerZone counts, per zone, the nodes written (pulling or finished).
	PerZone map[string]int
	// Active counts the written nodes whose pull has not finished.
	Active int
}

// cumulative is the nodes per zone of waves 1..k+1 together:
// seeds * (2^(k+1) - 1).
func cumulative(seeds, k int) int {
	if k >= 30 {
		return int(^uint(0) >> 1)
	}
	return seeds * ((1 << (k + 1)) - 1)
}

// Next picks, from the ordered waiting nodes, at most limit nodes to get
// the tag now. Without waves it takes the first limit. With waves it takes
// at most the wave's nodes per zone, the zones taking turns so a limit
// cuts evenly; the next wave opens only when every node written so far has
// finished and each zone has its share of this wave (or no node left).
func Next(p Plan, waiting []Candidate, written Written, limit int) ([]string, Wave) {
	limit = max(0, min(limit, len(waiting)))
	if p.Seeds <= 0 {
		out := make([]string, 0, limit)
		for _, c := range waiting[:limit] {
			out = append(out, c.Name)
		}
		return out, Wave{}
	}
	zoneOf := func(c Candidate) string { return c.Labels[p.TopologyKey] }
	left := map[string]int{}
	for _, c := range waiting {
		left[zoneOf(c)]++
	}
	most := 0
	for _, n := range written.PerZone {
		most = max(most, n)
	}
	k := 0
	for cumulative(p.Seeds, k) < most {
		k++
	}
	full := true
	for zone, n := range left {
		if n > 0 && written.PerZone[zone] < cumulative(p.Seeds, k) {
			full = false
		}
	}
	if most > 0 && written.Active == 0 && full {
		k++
	}
	allowed := cumulative(p.Seeds, k)

	// Rank each waiting node within its zone; the zones take turns.
	type pick struct {
		name       string
		turn, rank int
	}
	var picks []pick
	taken := map[string]int{}
	for i, c := range waiting {
		z := zoneOf(c)
		if written.PerZone[z]+taken[z] >= allowed {
			continue
		}
		picks = append(picks, pick{name: c.Name, turn: taken[z], rank: i})
		taken[z]++
	}
	slices.SortFunc(picks, func(a, b pick) int {
		if a.turn != b.turn {
			return a.turn - b.turn
		}
		return a.rank - b.rank
	})
	out := make([]string, 0, min(limit, len(picks)))
	for _, pk := range picks[:min(limit, len(picks))] {
		out = append(out, pk.name)
	}
	return out, Wave{Number: k + 1, PerZone: allowed}
}
