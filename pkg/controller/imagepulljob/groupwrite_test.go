package imagepulljob

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
)

func addImage(image string) imagesChange {
	return func(e *nodeEdit) bool {
		if _, ok := e.Images[image]; ok {
			return false
		}
		e.Images[image] = appsv1beta1.ImageSpec{Tags: []appsv1beta1.ImageTagSpec{{Tag: "v1"}}}
		return true
	}
}

// funcView answers the writer's questions with functions; nil ones say
// settled and not busy.
type funcView struct{ settledFn, busyFn func(name string) bool }

func (v funcView) settled(name string) bool { return v.settledFn == nil || v.settledFn(name) }
func (v funcView) busy(name string) bool    { return v.busyFn != nil && v.busyFn(name) }

// recordedWrites is a write function over in-memory NodeImages that
// records, per NodeImage, how many images each write added; written, when
// set, hears of each write under mu.
type recordedWrites struct {
	mu      sync.Mutex
	stored  map[string]map[string]appsv1beta1.ImageSpec
	writes  map[string][]int
	written func(name string)
}

func (r *recordedWrites) write(_ context.Context, name string, change imagesChange) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stored == nil {
		r.stored, r.writes = map[string]map[string]appsv1beta1.ImageSpec{}, map[string][]int{}
	}
	if r.stored[name] == nil {
		r.stored[name] = map[string]appsv1beta1.ImageSpec{}
	}
	before := len(r.stored[name])
	change(&nodeEdit{Images: r.stored[name]})
	r.writes[name] = append(r.writes[name], len(r.stored[name])-before)
	if r.written != nil {
		r.written(name)
	}
	return nil
}

// of is the images each write of name added, in order.
func (r *recordedWrites) of(name string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.writes[name]...)
}

// runWriter runs w with workers until the test ends.
func runWriter(t *testing.T, w *groupWriter, workers int) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, workers) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Changes that arrive while a write is in flight go out together in the
// next one; every change is written exactly once; no two writes of one
// NodeImage overlap although several workers run; each waiting caller
// gets its write's error, and the owners of a failed write's changes are
// told once each.
func TestGroupWriterFoldsConcurrentChanges(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]map[string]appsv1beta1.ImageSpec{"n1": {}, "broken": {}}
	writes, inFlight, mostInFlight := map[string]int{}, 0, 0
	release := make(chan struct{})
	first := make(chan struct{})
	var failedOwners []string
	w := newGroupWriter(func(_ context.Context, name string, change imagesChange) error {
		mu.Lock()
		writes[name]++
		inFlight++
		mostInFlight = max(mostInFlight, inFlight)
		n := writes[name]
		mu.Unlock()
		if name == "n1" && n == 1 {
			close(first)
			<-release // hold the first write until the others queued up
		}
		mu.Lock()
		defer mu.Unlock()
		inFlight--
		change(&nodeEdit{Images: stored[name]})
		if name == "broken" {
			return errors.New("refused")
		}
		return nil
	}, func(owner string, err error) {
		mu.Lock()
		defer mu.Unlock()
		failedOwners = append(failedOwners, owner)
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.run(ctx, 4)

	groups := []*changeGroup{w.submit("n1", "ns/job-0", addImage("image-0"))}
	<-first
	for i := 1; i <= 10; i++ {
		groups = append(groups, w.submit("n1", fmt.Sprintf("ns/job-%d", i), addImage(fmt.Sprintf("image-%d", i))))
	}
	close(release)
	for i, g := range groups {
		<-g.done
		if g.err != nil {
			t.Errorf("change %d: %v", i, g.err)
		}
	}
	mu.Lock()
	if len(stored["n1"]) != 11 {
		t.Errorf("%d images written, want 11: %v", len(stored["n1"]), stored["n1"])
	}
	if writes["n1"] != 2 {
		t.Errorf("%d writes, want 2 (the held one, then the ten folded together)", writes["n1"])
	}
	if mostInFlight != 1 {
		t.Errorf("%d writes of one NodeImage at once, want 1", mostInFlight)
	}
	mu.Unlock()

	// Two changes of one job and one of another in one failed write.
	release2 := make(chan struct{})
	held := w.submit("broken", "ns/a", func(*nodeEdit) bool { <-release2; return true })
	waitUntil(t, "the held write to start", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.queues["broken"] != nil && w.queues["broken"].inFlight == held
	})
	g1 := w.submit("broken", "ns/b", addImage("x"))
	w.submit("broken", "ns/b", addImage("y"))
	w.submit("broken", "ns/c", addImage("z"))
	close(release2)
	<-held.done
	if err := w.edit(ctx, "broken", "ns/d", addImage("w")); err == nil {
		t.Error("a failed write's error did not reach its waiting caller")
	}
	<-g1.done
	// Owners are told after the group's waiters wake: wait for the four.
	waitUntil(t, "four owners told of failed writes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(failedOwners) >= 4
	})
	mu.Lock()
	if got := fmt.Sprint(failedOwners); got != "[ns/a ns/b ns/c ns/d]" {
		t.Errorf("owners told of failed writes: %s, want each once: [ns/a ns/b ns/c ns/d]", got)
	}
	mu.Unlock()
	waitUntil(t, "the queues to empty", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queues) == 0
	})
}

// A change not yet written shows in project, on a copy; so does one
// written that the cache has not caught up with; NodeImages without either
// pass through as they are; a writer stopping fails what it did not write.
func TestGroupWriterProjectsPendingChanges(t *testing.T) {
	w := newGroupWriter(func(context.Context, string, imagesChange) error { return nil }, func(string, error) {}, nil)
	cached := []*appsv1beta1.NodeImage{
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: appsv1beta1.NodeImageSpec{Images: map[string]appsv1beta1.ImageSpec{"old": {}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}},
	}
	same := func(ni *appsv1beta1.NodeImage) *appsv1beta1.NodeImage { return ni }
	if got := w.project(cached, same); &got[0] != &cached[0] {
		t.Error("with nothing pending, project copied the list")
	}
	g := w.submit("a", "ns/j", addImage("new"))
	got := w.project(cached, same)
	if _, ok := got[0].Spec.Images["new"]; !ok || len(got[0].Spec.Images) != 2 {
		t.Errorf("projected a: %v, want old and new", got[0].Spec.Images)
	}
	if _, ok := cached[0].Spec.Images["new"]; ok {
		t.Error("project wrote into the cached object")
	}
	if got[1] != cached[1] {
		t.Error("b has nothing pending but was copied")
	}
	// Nothing moved: the next sync gets the same projection; a change
	// that came since, or a newer base, makes a new one.
	if again := w.project(cached, same); again[0] != got[0] {
		t.Error("a projected again with nothing changed: made a new copy instead of reusing the last")
	}
	w.submit("a", "ns/k", addImage("newer"))
	if again := w.project(cached, same); len(again[0].Spec.Images) != 3 {
		t.Errorf("projected a after another change: %v, want old, new and newer", again[0].Spec.Images)
	}
	newerBase := cached[0].DeepCopy()
	newerBase.Spec.Images["fromServer"] = appsv1beta1.ImageSpec{}
	if again := w.project([]*appsv1beta1.NodeImage{newerBase, cached[1]}, same); len(again[0].Spec.Images) != 4 {
		t.Errorf("projected a from a newer copy: %v, want its images and the three pending", again[0].Spec.Images)
	}
	// b's write is done, and the writer's copy is newer than the cache's:
	// the tag shows though nothing for b is pending any more.
	written := cached[1].DeepCopy()
	written.Spec.Images = map[string]appsv1beta1.ImageSpec{"written": {}}
	ours := func(ni *appsv1beta1.NodeImage) *appsv1beta1.NodeImage {
		if ni.Name == "b" {
			return written
		}
		return ni
	}
	got = w.project(cached, ours)
	if got[1] != written {
		t.Errorf("projected b: %v, want the writer's own copy (the cache has not caught up with its write)", got[1].Spec.Images)
	}
	if _, ok := got[0].Spec.Images["new"]; !ok {
		t.Errorf("projected a: %v, want its pending change still", got[0].Spec.Images)
	}
	if cached[1] == written || len(cached[1].Spec.Images) != 0 {
		t.Error("project changed the cached list")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.run(ctx, 1)
	<-g.done
	if g.err == nil {
		t.Error("a change the stopped writer never wrote reports no error")
	}
}

// A write that fails leaves the NodeImage as it was: its changes leave the
// projection though the base copy did not move, while a change queued
// behind it stays.
func TestGroupWriterProjectionDropsAFailedWrite(t *testing.T) {
	first, release := make(chan struct{}), make(chan struct{})
	calls := 0
	w := newGroupWriter(func(ctx context.Context, _ string, _ imagesChange) error {
		calls++
		if calls == 1 {
			close(first)
			<-release
			return errors.New("conflict")
		}
		<-ctx.Done()
		return ctx.Err()
	}, func(string, error) {}, nil)
	cached := []*appsv1beta1.NodeImage{{ObjectMeta: metav1.ObjectMeta{Name: "a"}}}
	same := func(ni *appsv1beta1.NodeImage) *appsv1beta1.NodeImage { return ni }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx, 1); close(done) }()
	defer func() { cancel(); <-done }()
	failing := w.submit("a", "ns/x", addImage("x"))
	<-first
	w.submit("a", "ns/y", addImage("y"))
	if got := w.project(cached, same); len(got[0].Spec.Images) != 2 {
		t.Fatalf("projected a with x in flight and y queued: %v, want x and y", got[0].Spec.Images)
	}
	close(release)
	<-failing.done
	got := w.project(cached, same)
	if _, ok := got[0].Spec.Images["x"]; ok {
		t.Errorf("projected a after x's write failed: %v, want y only", got[0].Spec.Images)
	}
	if _, ok := got[0].Spec.Images["y"]; !ok {
		t.Errorf("projected a after x's write failed: %v, want y still pending", got[0].Spec.Images)
	}
}

// A change function that panics (data it did not expect) fails only the
// write that carried it: its caller gets the panic as an error, its owner
// is told, and the writer's workers keep writing, the same NodeImage
// included.
func TestGroupWriterSurvivesAPanickingChange(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]map[string]appsv1beta1.ImageSpec{"n1": {}, "n2": {}}
	var failedOwners []string
	w := newGroupWriter(func(_ context.Context, name string, change imagesChange) error {
		mu.Lock()
		defer mu.Unlock()
		e := &nodeEdit{Images: stored[name]}
		change(e)
		return nil
	}, func(owner string, err error) {
		mu.Lock()
		defer mu.Unlock()
		failedOwners = append(failedOwners, owner+": "+err.Error())
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, 2) }()
	defer func() { cancel(); <-done }()

	var nilMap map[string]string
	bad := func(e *nodeEdit) bool {
		nilMap["boom"] = "assignment to entry in nil map"
		return true
	}
	err := w.edit(ctx, "n1", "ns/bad", bad)
	if err == nil || !strings.Contains(err.Error(), "writing NodeImage n1: panic: assignment to entry in nil map") {
		t.Fatalf("panicking change: error %v, want the panic as the write's error", err)
	}
	if err := w.edit(ctx, "n1", "ns/good", addImage("after")); err != nil {
		t.Fatalf("a write of the same NodeImage after the panic: %v", err)
	}
	if err := w.edit(ctx, "n2", "ns/good", addImage("other")); err != nil {
		t.Fatalf("a write of another NodeImage after the panic: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if _, ok := stored["n1"]["after"]; !ok {
		t.Errorf("n1 = %v, want the change after the panic written", stored["n1"])
	}
	if len(failedOwners) != 1 || !strings.HasPrefix(failedOwners[0], "ns/bad: ") {
		t.Errorf("owners told of failures: %v, want only ns/bad", failedOwners)
	}
}

// A NodeImage's next write waits until the informer brought back the one
// before it, and carries every change that came meanwhile; settle sends it
// at once; without a settle it still goes, once settleHold has passed.
// Other NodeImages are not held up by it.
func TestGroupWriterWaitsForItsLastWriteToComeBack(t *testing.T) {
	unsettled := map[string]bool{}
	rec := &recordedWrites{written: func(name string) {
		unsettled[name] = true // the informer has not brought it back yet
	}}
	w := newGroupWriter(rec.write, func(string, error) {}, funcView{settledFn: func(name string) bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return !unsettled[name]
	}})
	ctx := runWriter(t, w, 1)
	writesOf := rec.of

	if err := w.edit(ctx, "n1", "ns/a", addImage("a")); err != nil {
		t.Fatal(err)
	}
	b, c := w.submit("n1", "ns/b", addImage("b")), w.submit("n1", "ns/c", addImage("c"))
	// One worker takes n1 (queued first) before n2: once n2 is written,
	// n1's second write was due, and must have been held.
	if err := w.edit(ctx, "n2", "ns/a", addImage("a")); err != nil {
		t.Fatal(err)
	}
	if got := writesOf("n1"); len(got) != 1 {
		t.Fatalf("n1's writes before its first came back: %v, want only the first", got)
	}
	if got := w.project([]*appsv1beta1.NodeImage{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}}, func(ni *appsv1beta1.NodeImage) *appsv1beta1.NodeImage { return ni }); len(got[0].Spec.Images) != 2 {
		t.Errorf("held changes must show to the syncs: projected images %v, want b and c", got[0].Spec.Images)
	}
	rec.mu.Lock()
	unsettled["n1"] = false
	rec.mu.Unlock()
	w.settle("n1")
	if err := b.wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := writesOf("n1"); len(got) != 2 || got[1] != 2 {
		t.Fatalf("n1's writes: %v (images added by each), want [1 2]: b and c in one write after the settle", got)
	}

	// Nothing brings the second write back: the third goes anyway, after
	// settleHold.
	start := time.Now()
	if err := w.edit(ctx, "n1", "ns/d", addImage("d")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < settleHold {
		t.Errorf("an unsettled NodeImage's write went after %s, want it held for %s", took, settleHold)
	}
	if got := writesOf("n1"); len(got) != 3 {
		t.Errorf("n1's writes: %v, want 3", got)
	}
}

// A write to a node whose daemon has pulls in hand waits for the daemon's
// next status write (and carries what came meanwhile), goes at once after
// a recent one, and without one still goes once statusHold has passed.
// An idle node's write never waits.
func TestGroupWriterWaitsForABusyDaemonsStatus(t *testing.T) {
	rec := &recordedWrites{}
	w := newGroupWriter(rec.write, func(string, error) {}, funcView{busyFn: func(name string) bool { return name == "busy" }})
	ctx := runWriter(t, w, 2)
	writesOf := rec.of

	a := w.submit("busy", "ns/a", addImage("a"))
	if err := w.edit(ctx, "idle", "ns/a", addImage("a")); err != nil {
		t.Fatal(err)
	}
	b := w.submit("busy", "ns/b", addImage("b"))
	if got := writesOf("busy"); len(got) != 0 {
		t.Fatalf("the busy node was written before its daemon wrote: %v", got)
	}
	w.statusMoved("busy")
	if err := a.wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := writesOf("busy"); len(got) != 1 || got[0] != 2 {
		t.Fatalf("busy node's writes: %v (images added by each), want [2]: a and b in one write after the status", got)
	}

	// The daemon wrote just now: the next write need not wait.
	w.statusMoved("busy")
	if err := w.edit(ctx, "busy", "ns/c", addImage("c")); err != nil {
		t.Fatal(err)
	}
	// No status write comes: the next goes anyway, after statusHold.
	waitUntil(t, "the last status write to be older than statusQuiet", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return time.Since(w.statusAt["busy"]) > statusQuiet
	})
	start := time.Now()
	if err := w.edit(ctx, "busy", "ns/d", addImage("d")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < statusHold {
		t.Errorf("a busy node's write went after %s without a status write, want it held for %s", took, statusHold)
	}
	if got := writesOf("busy"); len(got) != 3 {
		t.Errorf("busy node's writes: %v, want 3", got)
	}
	w.forget("busy")
	w.mu.Lock()
	_, kept := w.statusAt["busy"]
	w.mu.Unlock()
	if kept {
		t.Error("forget kept the deleted NodeImage's last status time")
	}
}

// nodesOf names the NodeImages an owner's changes went to until the
// informer shows them written: queued, written but not back, then gone
// once settled; forgetOwner drops the rest.
func TestGroupWriterNamesAnOwnersNodesUntilTheyAreBack(t *testing.T) {
	var mu sync.Mutex
	out := map[string]bool{} // written, not back from the informer
	rec := &recordedWrites{written: func(name string) {
		mu.Lock()
		defer mu.Unlock()
		out[name] = true
	}}
	w := newGroupWriter(rec.write, func(string, error) {}, funcView{settledFn: func(name string) bool {
		mu.Lock()
		defer mu.Unlock()
		return !out[name]
	}})
	a1, a2 := w.submit("n1", "ns/a", addImage("a")), w.submit("n2", "ns/a", addImage("a"))
	b2 := w.submit("n2", "ns/b", addImage("b"))
	w.submit("n3", "ns/c", addImage("c"))
	if got := w.nodesOf("ns/a"); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Fatalf("queued: nodesOf(a) = %v, want [n1 n2]", got)
	}
	ctx := runWriter(t, w, 2)
	for _, g := range []*changeGroup{a1, a2, b2} {
		if err := g.wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.nodesOf("ns/a"); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Fatalf("written, not back: nodesOf(a) = %v, want [n1 n2]", got)
	}
	mu.Lock()
	out["n1"] = false
	mu.Unlock()
	if got := w.nodesOf("ns/a"); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("n1 back: nodesOf(a) = %v, want [n2]", got)
	}
	mu.Lock()
	out["n2"] = false
	mu.Unlock()
	if got := w.nodesOf("ns/a"); len(got) != 0 {
		t.Fatalf("all back: nodesOf(a) = %v, want none", got)
	}
	if got := w.nodesOf("ns/b"); len(got) != 0 {
		t.Fatalf("all back: nodesOf(b) = %v, want none", got)
	}
	w.forgetOwner("ns/c")
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.touched) != 0 {
		t.Errorf("the writer still keeps nodes for %v", w.touched)
	}
}
