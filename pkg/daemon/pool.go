package daemon

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// taskKey is one image tag on the node; at most one version of it runs.
type taskKey struct{ image, tag string }

// task is one version of a tag's pull.
type task struct {
	key       taskKey
	version   int64
	createdAt time.Time
	seq       uint64
	run       func(ctx context.Context)
	cancel    context.CancelFunc
	// note is added to the task's final message (why it runs again).
	note string
	// large says the task moved to a large-pull slot (promote).
	large bool
}

// pool runs tasks holding at most size slots at once, oldest createdAt
// first (ties in submission order). A newer version of a key replaces a
// queued one and cancels a running one. A task waiting out a retry backoff
// gives its slot back (pause), so one failing image never holds a slot
// that a healthy one could pull with. A task found to pull a large image
// moves to one of largeSize slots of its own (promote), so one 20 GB pull
// does not hold back the small images queued behind it for its whole
// duration.
type pool struct {
	size int
	// largeSize bounds the promoted tasks, large the ones running.
	largeSize, large int
	mu               sync.Mutex
	cond             *sync.Cond
	queue            []*task
	running          map[taskKey]*task
	// slots counts the tasks holding a slot: running, not paused.
	slots  int
	seq    uint64
	closed bool
	tasks  sync.WaitGroup
	// onChange reports queue length and slots in use, for metrics.
	onChange func(queued, running int)
	// moved is when the pool last moved: a task queued, started, paused,
	// resumed or finished, or a running pull's bytes grew (touch).
	moved time.Time
}

func newPool(size, largeSize int, onChange func(queued, running int)) *pool {
	p := &pool{size: max(1, size), largeSize: max(0, largeSize), running: map[taskKey]*task{}, onChange: onChange}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// has reports whether version of key is queued or running.
func (p *pool) has(key taskKey, version int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.running[key]; t != nil && t.version == version {
		return true
	}
	for _, t := range p.queue {
		if t.key == key && t.version == version {
			return true
		}
	}
	return false
}

// submit queues t, replacing any other version of its key.
func (p *pool) submit(t *task) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancelLocked(t.key)
	p.seq++
	t.seq = p.seq
	i := sort.Search(len(p.queue), func(i int) bool { return p.less(t, p.queue[i]) })
	p.queue = append(p.queue, nil)
	copy(p.queue[i+1:], p.queue[i:])
	p.queue[i] = t
	p.changedLocked()
	p.cond.Broadcast()
}

func (p *pool) less(a, b *task) bool {
	if !a.createdAt.Equal(b.createdAt) {
		return a.createdAt.Before(b.createdAt)
	}
	return a.seq < b.seq
}

// cancel drops key's queued task and cancels its running one.
func (p *pool) cancel(key taskKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancelLocked(key)
	p.changedLocked()
}

func (p *pool) cancelLocked(key taskKey) {
	for i, t := range p.queue {
		if t.key == key {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			break
		}
	}
	if t := p.running[key]; t != nil {
		t.cancel()
		delete(p.running, key)
	}
}

// keys lists every queued or running key.
func (p *pool) keys() []taskKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []taskKey
	for _, t := range p.queue {
		out = append(out, t.key)
	}
	for k := range p.running {
		out = append(out, k)
	}
	return out
}

func (p *pool) changedLocked() {
	p.moved = time.Now()
	if p.onChange != nil {
		p.onChange(len(p.queue), p.slots+p.large)
	}
}

// touch records that a running pull moved (its bytes grew).
func (p *pool) touch() {
	p.mu.Lock()
	p.moved = time.Now()
	p.mu.Unlock()
}

// stuck says why the pool looks wedged: tasks wait, every slot is held,
// and nothing has moved for window (a runtime that stopped answering holds
// its slots). Nil when it is not.
func (p *pool) stuck(now time.Time, window time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if window <= 0 || len(p.queue) == 0 || p.slots < p.size || p.moved.IsZero() {
		return nil
	}
	if idle := now.Sub(p.moved); idle > window {
		return fmt.Errorf("%d pull(s) wait and all %d slots have been held with no pull starting, finishing or downloading for %s (is the container runtime answering?)", len(p.queue), p.size, idle.Round(time.Second))
	}
	return nil
}

// run starts queued tasks as slots free up until ctx ends, then cancels
// running tasks and waits for every one to return.
func (p *pool) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.closed = true
		for _, t := range p.running {
			t.cancel()
		}
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	for {
		for !p.closed && (len(p.queue) == 0 || p.slots >= p.size) {
			p.cond.Wait()
		}
		if p.closed {
			break
		}
		t := p.queue[0]
		p.queue = p.queue[1:]
		tctx, cancel := context.WithCancel(context.WithValue(ctx, taskKeyCtx{}, t))
		t.cancel = cancel
		p.running[t.key] = t
		p.slots++
		p.changedLocked()
		p.tasks.Add(1)
		go p.exec(tctx, t)
	}
	p.mu.Unlock()
	p.tasks.Wait()
}

func (p *pool) exec(ctx context.Context, t *task) {
	defer p.tasks.Done()
	t.run(ctx)
	t.cancel()
	p.mu.Lock()
	if p.running[t.key] == t {
		delete(p.running, t.key)
	}
	if t.large {
		p.large--
	} else {
		p.slots--
	}
	p.changedLocked()
	p.cond.Broadcast()
	p.mu.Unlock()
}

type taskKeyCtx struct{}

// running is the task a ctx of exec belongs to, or nil.
func running(ctx context.Context) *task {
	t, _ := ctx.Value(taskKeyCtx{}).(*task)
	return t
}

// promote moves the calling task (ctx is exec's) from its slot to a free
// large-pull slot, freeing its slot for the queue; false when none is free
// (the task keeps its slot) or it moved already.
func (p *pool) promote(ctx context.Context) bool {
	t := running(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if t == nil || t.large || p.large >= p.largeSize {
		return false
	}
	t.large = true
	p.large++
	p.slots--
	p.changedLocked()
	p.cond.Broadcast()
	return true
}

// pause gives the calling task's slot back while it waits (a retry
// backoff): until wait returns, another task may pull. It then takes a slot
// again, waiting for one if needed, and returns wait's error, or ctx's if
// ctx ended first.
func (p *pool) pause(ctx context.Context, wait func(context.Context) error) error {
	large := false
	if t := running(ctx); t != nil {
		large = t.large
	}
	held, size := &p.slots, p.size
	if large {
		held, size = &p.large, p.largeSize
	}
	p.mu.Lock()
	*held--
	p.changedLocked()
	p.cond.Broadcast()
	p.mu.Unlock()
	err := wait(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	for *held >= size && ctx.Err() == nil && !p.closed {
		p.cond.Wait()
	}
	// The slot is taken back even when cancelled: exec returns it.
	*held++
	p.changedLocked()
	if err == nil {
		err = ctx.Err()
	}
	return err
}
