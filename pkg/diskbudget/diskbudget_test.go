package diskbudget

import (
	"strings"
	"testing"
)

func TestAdmit(t *testing.T) {
	const gib = 1 << 30
	cases := []struct {
		name   string
		budget Budget
		u      Usage
		ok     bool
		says   []string
	}{
		{"below the limit", Budget{MaxUsage: 0.75}, Usage{Path: "/var/lib/containerd", Capacity: 100 * gib, Available: 30 * gib}, true, nil},
		{"at the limit", Budget{MaxUsage: 0.75}, Usage{Capacity: 100 * gib, Available: 25 * gib}, true, nil},
		{"above the limit", Budget{MaxUsage: 0.75}, Usage{Path: "/var/lib/containerd", Capacity: 100 * gib, Available: 10 * gib}, false,
			[]string{"/var/lib/containerd is 90% used", "10.0 GiB of 100.0 GiB free", "--max-image-fs-usage of 75%"}},
		{"budget off", Budget{MaxUsage: 0}, Usage{Capacity: 100 * gib, Available: 0}, true, nil},
		{"unknown size", Budget{MaxUsage: 0.75}, Usage{}, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := tc.budget.Admit(tc.u)
			if ok != tc.ok {
				t.Fatalf("Admit = %v (%q), want %v", ok, why, tc.ok)
			}
			for _, s := range tc.says {
				if !strings.Contains(why, s) {
					t.Errorf("message %q does not say %q", why, s)
				}
			}
		})
	}
}

func TestMayPin(t *testing.T) {
	const gib = 1 << 30
	u := Usage{Path: "/var/lib/containerd", Capacity: 100 * gib, Available: 50 * gib}
	cases := []struct {
		name         string
		max          float64
		u            Usage
		pinned, size int64
		ok           bool
		says         string
	}{
		{"fits", 0.5, u, 10 * gib, 20 * gib, true, ""},
		{"exactly the cap", 0.5, u, 30 * gib, 20 * gib, true, ""},
		{"over the cap", 0.5, u, 40 * gib, 20 * gib, false, "above --max-pinned-fraction 50%"},
		{"no pins allowed", 0, u, 0, 1, false, "--max-pinned-fraction 0%"},
		{"no cap", 1, Usage{}, 1000 * gib, gib, true, ""},
		{"unknown size", 0.5, Usage{}, 0, 1, false, "size is unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := Budget{MaxPinned: tc.max}.MayPin(tc.u, tc.pinned, tc.size)
			if ok != tc.ok || !strings.Contains(why, tc.says) {
				t.Errorf("MayPin = %v %q, want %v and a message saying %q", ok, why, tc.ok, tc.says)
			}
		})
	}
}
