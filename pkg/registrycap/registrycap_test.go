package registrycap

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func TestParseOverridesAndFor(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]int
		err  string
	}{
		{in: "", want: map[string]int{}},
		{in: "docker.io=2, registry.example.com:5000=0", want: map[string]int{"docker.io": 2, "registry.example.com:5000": 0}},
		{in: "docker.io", err: `"docker.io" is not host=N`},
		{in: "docker.io=-1", err: "N >= 0"},
		{in: "docker.io/library=1", err: "registry host"},
		{in: "=3", err: `"=3"`},
		{in: "a=1,a=2", err: "given twice"},
	} {
		got, err := ParseOverrides(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseOverrides(%q) error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("ParseOverrides(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("ParseOverrides(%q)[%s] = %d, want %d", tc.in, k, got[k], v)
			}
		}
	}
	l := Limits{Default: 5, PerHost: map[string]int{"docker.io": 2, "free.example": 0}}
	for host, want := range map[string]int{"docker.io": 2, "free.example": 0, "other.example": 5} {
		if got := l.For(host); got != want {
			t.Errorf("For(%s) = %d, want %d", host, got, want)
		}
	}
	for image, want := range map[string]string{"nginx": "docker.io", "registry.example.com:5000/team/app": "registry.example.com:5000", "127.0.0.1:4000/a": "127.0.0.1:4000"} {
		if got := Host(image); got != want {
			t.Errorf("Host(%s) = %s, want %s", image, got, want)
		}
	}
}

func TestInFlight(t *testing.T) {
	tag := func(t string, v int64) appsv1beta1.ImageTagSpec {
		return appsv1beta1.ImageTagSpec{Tag: t, Version: v, OwnerReferences: []corev1.ObjectReference{{UID: "u"}}}
	}
	st := func(t string, v int64, p appsv1beta1.ImagePullPhase) appsv1beta1.ImageTagStatus {
		return appsv1beta1.ImageTagStatus{Tag: t, Version: v, Phase: p}
	}
	n1 := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	n1.Spec.Images = map[string]appsv1beta1.ImageSpec{
		"nginx":                   {Tags: []appsv1beta1.ImageTagSpec{tag("1", 1), tag("2", 1), tag("3", 2), tag("4", 1)}},
		"docker.io/library/redis": {Tags: []appsv1beta1.ImageTagSpec{tag("7", 1)}},
		"quay.io/x/y":             {Tags: []appsv1beta1.ImageTagSpec{tag("1", 1)}},
	}
	n1.Status.ImageStatuses = map[string]appsv1beta1.ImageStatus{
		"nginx": {Tags: []appsv1beta1.ImageTagStatus{
			st("1", 1, appsv1beta1.ImagePhaseSucceeded), // finished
			st("2", 1, appsv1beta1.ImagePhasePulling),   // in flight
			st("3", 1, appsv1beta1.ImagePhaseSucceeded), // an older version finished: in flight
			st("4", 1, appsv1beta1.ImagePhaseFailed),    // finished
		}},
	}
	n2 := &appsv1beta1.NodeImage{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}
	n2.Spec.Images = map[string]appsv1beta1.ImageSpec{"nginx": {Tags: []appsv1beta1.ImageTagSpec{tag("1", 1)}}}
	nis := []*appsv1beta1.NodeImage{n1, n2}
	for host, want := range map[string]int{"docker.io": 4, "quay.io": 1, "ghcr.io": 0} {
		if got := InFlight(nis, host); got != want {
			t.Errorf("InFlight(%s) = %d, want %d", host, got, want)
		}
	}
}

func TestSlots(t *testing.T) {
	for _, tc := range []struct{ limit, inFlight, ahead, want int }{
		{2, 0, 0, 2}, {2, 1, 0, 1}, {2, 2, 0, 0}, {2, 3, 0, 0}, {5, 1, 3, 1}, {5, 1, 10, 0},
	} {
		if got := Slots(tc.limit, tc.inFlight, tc.ahead); got != tc.want {
			t.Errorf("Slots(%d, %d, %d) = %d, want %d", tc.limit, tc.inFlight, tc.ahead, got, tc.want)
		}
	}
}

// TestQueueOldestFirst: a job's slots go after the demand of older waiting
// jobs; newer jobs' demand does not count; the waiting are woken oldest
// first; a job that no longer waits leaves the queue.
func TestQueueOldestFirst(t *testing.T) {
	var q Queue
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	unlock := q.Lock("r")
	q.Set("r", "ns/old", t0, 3)
	q.Set("r", "ns/mid", t0.Add(time.Minute), 2)
	q.Set("r", "ns/new", t0.Add(2*time.Minute), 4)
	q.Set("r", "ns/tie-b", t0.Add(time.Minute), 1)
	q.Set("other", "ns/new", t0, 7)
	for _, tc := range []struct {
		key     string
		created time.Time
		want    int
	}{
		{"ns/old", t0, 0},
		{"ns/mid", t0.Add(time.Minute), 3},
		{"ns/tie-b", t0.Add(time.Minute), 5}, // same time: key order puts ns/mid first
		{"ns/new", t0.Add(2 * time.Minute), 6},
		{"ns/newest", t0.Add(time.Hour), 10},
	} {
		if got := q.Ahead("r", tc.key, tc.created); got != tc.want {
			t.Errorf("Ahead(%s) = %d, want %d", tc.key, got, tc.want)
		}
	}
	if got, want := q.Waiting("r", "ns/mid", 2), []string{"ns/old", "ns/tie-b"}; !slices.Equal(got, want) {
		t.Errorf("Waiting = %v, want %v", got, want)
	}
	q.Set("r", "ns/old", t0, 0)
	unlock()
	q.Forget("ns/new")
	unlock = q.Lock("r")
	defer unlock()
	if got, want := q.Waiting("r", "", 10), []string{"ns/mid", "ns/tie-b"}; !slices.Equal(got, want) {
		t.Errorf("Waiting after old left and new was forgotten = %v, want %v", got, want)
	}
	if got := q.Ahead("other", "ns/x", t0.Add(time.Hour)); got != 0 {
		t.Errorf("Forget left ns/new on host other: Ahead = %d", got)
	}
}
