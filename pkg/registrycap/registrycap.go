// Package registrycap bounds the node pulls in flight from one registry
// host across all jobs: registries throttle (Docker Hub's hourly limits,
// 429s from private registries), and a thousand nodes warming one image
// would otherwise all ask at once. A pull is in flight from the moment the
// controller writes its tag until the node reports it finished; jobs share
// a registry's slots oldest first.
package registrycap

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
)

// Limits are the caps: Default for every registry host, PerHost overrides
// for some. Zero means no cap.
type Limits struct {
	Default int
	PerHost map[string]int
}

// For is the cap on host's pulls in flight, 0 for none.
func (l Limits) For(host string) int {
	if n, ok := l.PerHost[host]; ok {
		return n
	}
	return l.Default
}

// ParseOverrides reads "host=N,host2=M" (the flag's form). Hosts are
// spelled as in image references (docker.io for Docker Hub, with a port
// when the registry has one); N >= 0, where 0 lifts the default cap.
func ParseOverrides(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		host, value, ok := strings.Cut(item, "=")
		host = strings.TrimSpace(host)
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if !ok || host == "" || strings.ContainsAny(host, "/ ") || err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not host=N with a registry host (as in image references, e.g. docker.io or registry.example.com:5000) and a number of pulls N >= 0", item)
		}
		if _, dup := out[host]; dup {
			return nil, fmt.Errorf("registry host %s is given twice", host)
		}
		out[host] = n
	}
	return out, nil
}

// Host is the registry host an image is pulled from, spelled as Limits
// keys are.
func Host(image string) string {
	host, _ := imageref.Repository(image)
	return host
}

// InFlight counts the node pulls from host handed out and not finished
// over all NodeImages: tags in a spec whose status does not report that
// version succeeded or failed.
func InFlight(nis []*appsv1beta1.NodeImage, host string) int {
	hosts := map[string]string{}
	n := 0
	for _, ni := range nis {
		for name, img := range ni.Spec.Images {
			h, ok := hosts[name]
			if !ok {
				h = Host(name)
				hosts[name] = h
			}
			if h != host {
				continue
			}
			for i := range img.Tags {
				t := &img.Tags[i]
				if !finished(ni, name, t) {
					n++
				}
			}
		}
	}
	return n
}

func finished(ni *appsv1beta1.NodeImage, name string, t *appsv1beta1.ImageTagSpec) bool {
	st := nodetags.CurrentStatus(&ni.Status, name, t)
	return st != nil && nodetags.Finished(st.Phase)
}

// Slots is how many new node pulls a job may start on a capped registry:
// what the cap leaves after the pulls in flight and the waiting demand of
// older jobs (oldest first: a newer job gets a slot only once older jobs
// have what they can use).
func Slots(limit, inFlight, ahead int) int {
	return max(0, limit-inFlight-ahead)
}

// Queue remembers, per registry host, the jobs that wait for its slots and
// how many nodes each could start: the oldest first claim freed slots.
// The controller's syncs share it; per host, one sync at a time decides
// (Lock), so two jobs never hand out the same slot.
type Queue struct {
	mu    sync.Mutex
	hosts map[string]*hostQueue
}

type hostQueue struct {
	lock    sync.Mutex
	waiting map[string]waiter
}

type waiter struct {
	created time.Time
	demand  int
}

func (q *Queue) host(h string) *hostQueue {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.hosts == nil {
		q.hosts = map[string]*hostQueue{}
	}
	hq := q.hosts[h]
	if hq == nil {
		hq = &hostQueue{waiting: map[string]waiter{}}
		q.hosts[h] = hq
	}
	return hq
}

// Lock holds host for one job's decision, from counting the pulls in
// flight to handing its new tags to the writer; call the result to release.
func (q *Queue) Lock(host string) (unlock func()) {
	hq := q.host(host)
	hq.lock.Lock()
	return hq.lock.Unlock
}

// older orders waiters: by creation, then by key.
func older(aCreated time.Time, aKey string, bCreated time.Time, bKey string) bool {
	if !aCreated.Equal(bCreated) {
		return aCreated.Before(bCreated)
	}
	return aKey < bKey
}

// Ahead is the demand of the jobs older than key that wait for host.
// Call it under Lock.
func (q *Queue) Ahead(host, key string, created time.Time) int {
	hq := q.host(host)
	n := 0
	for k, w := range hq.waiting {
		if k != key && older(w.created, k, created, key) {
			n += w.demand
		}
	}
	return n
}

// Set records how many nodes job key could start but for the cap; 0
// takes it out of the queue. Call it under Lock.
func (q *Queue) Set(host, key string, created time.Time, demand int) {
	hq := q.host(host)
	if demand <= 0 {
		delete(hq.waiting, key)
		return
	}
	hq.waiting[key] = waiter{created: created, demand: demand}
}

// Forget takes job key out of every host's queue (it is gone or done).
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	hosts := make([]*hostQueue, 0, len(q.hosts))
	for _, hq := range q.hosts {
		hosts = append(hosts, hq)
	}
	q.mu.Unlock()
	for _, hq := range hosts {
		hq.lock.Lock()
		delete(hq.waiting, key)
		hq.lock.Unlock()
	}
}

// Waiting lists the jobs waiting for host other than key, oldest first, at
// most n of them: the ones to wake when slots are free. Call it under
// Lock.
func (q *Queue) Waiting(host, key string, n int) []string {
	hq := q.host(host)
	type entry struct {
		key string
		w   waiter
	}
	var all []entry
	for k, w := range hq.waiting {
		if k != key {
			all = append(all, entry{k, w})
		}
	}
	slices.SortFunc(all, func(a, b entry) int {
		if older(a.w.created, a.key, b.w.created, b.key) {
			return -1
		}
		return 1
	})
	var out []string
	for _, e := range all[:min(n, len(all))] {
		out = append(out, e.key)
	}
	return out
}
