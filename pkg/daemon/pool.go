package daemon

import (
	"context"
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
}

// pool runs tasks on at most size workers, oldest createdAt first (ties in
// submission order). A newer version of a key replaces a queued one and
// cancels a running one.
type pool struct {
	size    int
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*task
	running map[taskKey]*task
	seq     uint64
	closed  bool
	// onChange reports queue length and running count, for metrics.
	onChange func(queued, running int)
}

func newPool(size int, onChange func(queued, running int)) *pool {
	p := &pool{size: max(1, size), running: map[taskKey]*task{}, onChange: onChange}
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
	p.cond.Signal()
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
	if p.onChange != nil {
		p.onChange(len(p.queue), len(p.running))
	}
}

// run works the queue until ctx ends, then cancels running tasks and waits
// for every worker to return.
func (p *pool) run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < p.size; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.work(ctx)
		}()
	}
	<-ctx.Done()
	p.mu.Lock()
	p.closed = true
	for _, t := range p.running {
		t.cancel()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	wg.Wait()
}

func (p *pool) work(ctx context.Context) {
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closed {
			p.cond.Wait()
		}
		if p.closed {
			p.mu.Unlock()
			return
		}
		t := p.queue[0]
		p.queue = p.queue[1:]
		tctx, cancel := context.WithCancel(ctx)
		t.cancel = cancel
		p.running[t.key] = t
		p.changedLocked()
		p.mu.Unlock()

		t.run(tctx)
		cancel()

		p.mu.Lock()
		if p.running[t.key] == t {
			delete(p.running, t.key)
		}
		p.changedLocked()
		p.mu.Unlock()
	}
}
