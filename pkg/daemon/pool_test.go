package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/pkg/cri/critest"
	"github.com/prepull/prepull/pkg/puller"
)

// The pool never runs more than its size, and starts tasks oldest first,
// measured at a fake CRI runtime on a real socket.
func TestPoolBoundAndOrder(t *testing.T) {
	release := make(chan struct{})
	fake := critest.Start(t, func(ctx context.Context, _ *runtimeapi.PullImageRequest) (string, error) {
		select {
		case <-release:
			return "sha256:x", nil
		case <-ctx.Done():
			return "", critest.Block(ctx)
		}
	})
	rt, err := cri.Connect(context.Background(), fake.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	p := &puller.Puller{Images: rt.Images}
	pool := newPool(3, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var done sync.WaitGroup
	// Submitted newest first, all before the pool runs (else its workers
	// rightly take the oldest of what has arrived so far): the pool must
	// still start the oldest first.
	for i := 9; i >= 0; i-- {
		image := fmt.Sprintf("r.io/img%d:v1", i)
		done.Add(1)
		pool.submit(&task{key: taskKey{image, "v1"}, version: 1, createdAt: base.Add(time.Duration(i) * time.Second),
			run: func(ctx context.Context) {
				defer done.Done()
				p.Pull(ctx, puller.Request{Image: image, Timeout: time.Minute})
			}})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pool.run(ctx) }()
	waitFor(t, func() bool { return len(fake.Order()) == 3 })
	// Finish one pull at a time: each frees one worker, which must take the
	// oldest waiting task.
	for started := 4; started <= 10; started++ {
		release <- struct{}{}
		waitFor(t, func() bool { return len(fake.Order()) == started })
	}
	close(release)
	done.Wait()
	if m := fake.MaxInFlight(); m != 3 {
		t.Errorf("at most %d pulls ran at once, want exactly the pool size 3", m)
	}
	order := fake.Order()
	// The first three start together, in any order; the rest strictly by age.
	slices.Sort(order[:3])
	want := []string{}
	for i := 0; i < 10; i++ {
		want = append(want, fmt.Sprintf("r.io/img%d:v1", i))
	}
	if !slices.Equal(order, want) {
		t.Errorf("pull order %v, want oldest first %v", order, want)
	}
	cancel()
	wg.Wait()
}

// A new version of a key cancels the running one; cancel drops a key.
func TestPoolReplacesAndCancels(t *testing.T) {
	pool := newPool(1, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pool.run(ctx)
	started, cancelled := make(chan int64, 4), make(chan int64, 4)
	mk := func(v int64) *task {
		return &task{key: taskKey{"img", "v1"}, version: v, createdAt: time.Now(), run: func(ctx context.Context) {
			started <- v
			<-ctx.Done()
			cancelled <- v
		}}
	}
	pool.submit(mk(1))
	if v := <-started; v != 1 {
		t.Fatalf("started version %d", v)
	}
	pool.submit(mk(2))
	if v := <-cancelled; v != 1 {
		t.Fatalf("cancelled version %d, want 1", v)
	}
	if v := <-started; v != 2 || !pool.has(taskKey{"img", "v1"}, 2) || pool.has(taskKey{"img", "v1"}, 1) {
		t.Fatalf("version 2 not running in place of 1 (started %d)", v)
	}
	pool.cancel(taskKey{"img", "v1"})
	if v := <-cancelled; v != 2 || len(pool.keys()) != 0 {
		t.Fatalf("cancel left %v", pool.keys())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A task waiting out a backoff gives its slot back: with one slot, another
// task pulls meanwhile, and the waiting one resumes after it.
func TestPoolPausedTaskFreesItsSlot(t *testing.T) {
	pool := newPool(1, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pool.run(ctx)
	var mu sync.Mutex
	var events []string
	log := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	resume, bDone, aDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	base := time.Now()
	pool.submit(&task{key: taskKey{"failing", "v1"}, version: 1, createdAt: base, run: func(ctx context.Context) {
		log("a: attempt 1 failed")
		if err := pool.pause(ctx, func(context.Context) error { <-resume; return nil }); err != nil {
			t.Errorf("pause: %v", err)
		}
		log("a: attempt 2")
		close(aDone)
	}})
	pool.submit(&task{key: taskKey{"healthy", "v1"}, version: 1, createdAt: base.Add(time.Second), run: func(context.Context) {
		log("b: pulled")
		close(bDone)
	}})
	select {
	case <-bDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the healthy task never ran while the failing one waited out its backoff")
	}
	close(resume)
	<-aDone
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a: attempt 1 failed", "b: pulled", "a: attempt 2"}; !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
}

// A task that promotes itself to a large-pull slot frees its slot for the
// next task; with the large slots taken, a second large task keeps its
// slot, and the queue waits for it.
func TestPoolPromote(t *testing.T) {
	pool := newPool(1, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pool.run(ctx) }()

	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	started := make(chan string, 4)
	finish := map[string]chan struct{}{}
	promoted := make(chan bool, 4)
	for i, name := range []string{"big1", "small", "big2", "after"} {
		finish[name] = make(chan struct{})
		pool.submit(&task{key: taskKey{name, "v1"}, version: 1, createdAt: base.Add(time.Duration(i) * time.Second),
			run: func(ctx context.Context) {
				started <- name
				if name == "big1" || name == "big2" {
					promoted <- pool.promote(ctx)
					if pool.promote(ctx) {
						t.Errorf("%s promoted twice", name)
					}
				}
				<-finish[name]
			}})
	}
	next := func(want string) {
		t.Helper()
		select {
		case got := <-started:
			if got != want {
				t.Fatalf("started %s, want %s", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never started", want)
		}
	}
	next("big1")
	if !<-promoted {
		t.Fatal("big1 was not promoted with a large slot free")
	}
	// big1 holds the large slot; its regular slot went to the queue.
	next("small")
	close(finish["small"])
	next("big2")
	if <-promoted {
		t.Fatal("big2 was promoted with the only large slot taken")
	}
	pool.mu.Lock()
	slots, large, queued := pool.slots, pool.large, len(pool.queue)
	pool.mu.Unlock()
	if slots != 1 || large != 1 || queued != 1 {
		t.Fatalf("with big2 unpromoted: %d slots, %d large slots held, %d queued; want 1, 1 and 1 (after waits)", slots, large, queued)
	}
	close(finish["big2"])
	next("after")
	close(finish["after"])
	close(finish["big1"])
	cancel()
	wg.Wait()
	if pool.slots != 0 || pool.large != 0 {
		t.Errorf("after every task: %d slots and %d large slots held, want none", pool.slots, pool.large)
	}
}

// stuck: a pool whose slots are all held by pulls that never move, with
// tasks waiting, is wedged once the window passes; a free slot, an empty
// queue or a pull whose bytes grow (touch) is not.
func TestPoolStuck(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	pool := newPool(2, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pool.run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	hang := func(ctx context.Context) {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	now := time.Now()
	pool.submit(&task{key: taskKey{"a", "v1"}, version: 1, createdAt: now, run: hang})
	if err := pool.stuck(now.Add(time.Hour), time.Minute); err != nil {
		t.Fatalf("one task, a free slot: %v", err)
	}
	pool.submit(&task{key: taskKey{"b", "v1"}, version: 1, createdAt: now, run: hang})
	waitFor(t, func() bool { pool.mu.Lock(); defer pool.mu.Unlock(); return pool.slots == 2 })
	if err := pool.stuck(time.Now().Add(time.Hour), time.Minute); err != nil {
		t.Fatalf("slots full, nothing waiting: %v", err)
	}
	pool.submit(&task{key: taskKey{"c", "v1"}, version: 1, createdAt: now, run: hang})
	if err := pool.stuck(time.Now(), time.Minute); err != nil {
		t.Fatalf("within the window: %v", err)
	}
	err := pool.stuck(time.Now().Add(time.Hour), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "1 pull(s) wait and all 2 slots") {
		t.Fatalf("wedged pool: %v", err)
	}
	if err := pool.stuck(time.Now().Add(time.Hour), 0); err != nil {
		t.Fatalf("window 0 is off: %v", err)
	}
	pool.touch()
	if err := pool.stuck(time.Now().Add(30*time.Second), time.Minute); err != nil {
		t.Fatalf("bytes just moved: %v", err)
	}
}
