package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/informers/externalversions"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/registrycap"
)

// answer is what the stand-in daemon reports for a task; Silent never
// answers, as a dead daemon would.
type answer struct {
	Phase   appsv1beta1.ImagePullPhase
	Message string
	Delay   time.Duration
	Silent  bool
}

// fakeDaemon stands in for prepull-daemon on the test's NodeImages: it
// answers each task version once through the status subresource, as the
// real daemon does, without pulling anything. It also records how many
// tasks were open at once, per image, to check parallelism.
type fakeDaemon struct {
	e      *env
	decide func(node, image, tag string) answer

	mu       sync.Mutex
	answered map[string]bool // node/image/tag/version
	open     map[string]map[string]bool
	maxOpen  map[string]int
	// seen lists, per image, the nodes in the order their task was first
	// observed; maxOpenHost is the most tasks open at once over all images
	// of a registry host.
	seen        map[string][]string
	seenImages  []string // the image of each task, in the order first observed
	seenTask    map[string]bool
	maxOpenHost map[string]int
	writes      int
	cancelCtx   context.CancelFunc
}

func (e *env) startDaemon(decide func(node, image, tag string) answer) *fakeDaemon {
	d := &fakeDaemon{e: e, decide: decide, answered: map[string]bool{}, open: map[string]map[string]bool{}, maxOpen: map[string]int{},
		seen: map[string][]string{}, seenTask: map[string]bool{}, maxOpenHost: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancelCtx = cancel
	factory := externalversions.NewSharedInformerFactoryWithOptions(e.client, 0,
		externalversions.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "prepull-test=" + e.label }))
	inf := factory.Apps().V1beta1().NodeImages().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.observe(ctx, obj.(*appsv1beta1.NodeImage)) },
		UpdateFunc: func(_, obj any) { d.observe(ctx, obj.(*appsv1beta1.NodeImage)) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	e.t.Cleanup(func() { cancel(); factory.Shutdown() })
	return d
}

// silentOn answers Succeeded everywhere but on node, which never answers.
func silentOn(node string) func(string, string, string) answer {
	return func(n, _, _ string) answer {
		if n == node {
			return answer{Silent: true}
		}
		return answer{Phase: appsv1beta1.ImagePhaseSucceeded}
	}
}

func succeedAll(string, string, string) answer {
	return answer{Phase: appsv1beta1.ImagePhaseSucceeded, Delay: 200 * time.Millisecond}
}

func (d *fakeDaemon) maxOpenFor(image string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxOpen[image]
}

// countHost updates the most tasks open at once from image's registry
// host. Call it with d.mu held.
func (d *fakeDaemon) countHost(image string) {
	host := registrycap.Host(image)
	n := 0
	for name, open := range d.open {
		if registrycap.Host(name) == host {
			n += len(open)
		}
	}
	d.maxOpenHost[host] = max(d.maxOpenHost[host], n)
}

// seenOrder is the nodes of image in the order their task first appeared.
func (d *fakeDaemon) seenOrder(image string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.seen[image])
}

// lastSeen is the position of image's last new task among all tasks the
// daemon observed, -1 if none.
func (d *fakeDaemon) lastSeen(image string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, img := range slices.Backward(d.seenImages) {
		if img == image {
			return i
		}
	}
	return -1
}

func (d *fakeDaemon) maxOpenForHost(host string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxOpenHost[host]
}

func (d *fakeDaemon) observe(ctx context.Context, ni *appsv1beta1.NodeImage) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// A tag removed from the spec is forgotten, as a real daemon cancels
	// it: written again, it starts over at version 1 and is answered anew.
	for key := range d.answered {
		parts := strings.Split(key, "/")
		if len(parts) < 4 || parts[0] != ni.Name {
			continue
		}
		image, tag := strings.Join(parts[1:len(parts)-2], "/"), parts[len(parts)-2]
		if nodetags.FindTag(ni.Spec.Images, image, tag) < 0 {
			delete(d.answered, key)
		}
	}
	for name, img := range ni.Spec.Images {
		open := d.open[name]
		if open == nil {
			open = map[string]bool{}
			d.open[name] = open
		}
		for _, t := range img.Tags {
			st := nodetags.FindStatus(&ni.Status, name, t.Tag)
			finished := st != nil && st.Version == t.Version && (st.Phase == appsv1beta1.ImagePhaseSucceeded || st.Phase == appsv1beta1.ImagePhaseFailed)
			task := ni.Name + "/" + t.Tag
			if finished {
				delete(open, task)
				continue
			}
			open[task] = true
			d.countHost(name)
			if len(open) > d.maxOpen[name] {
				d.maxOpen[name] = len(open)
			}
			if k := name + "/" + task; !d.seenTask[k] {
				d.seenTask[k] = true
				d.seen[name] = append(d.seen[name], ni.Name)
				d.seenImages = append(d.seenImages, name)
			}
			key := fmt.Sprintf("%s/%s/%s/%d", ni.Name, name, t.Tag, t.Version)
			if d.answered[key] {
				continue
			}
			a := d.decide(ni.Name, name, t.Tag)
			if a.Silent {
				continue
			}
			d.answered[key] = true
			node, image, tag, version := ni.Name, name, t.Tag, t.Version
			time.AfterFunc(a.Delay, func() { d.report(ctx, node, image, tag, version, a) })
		}
	}
}

// report writes the answer for one task version, retrying conflicts with
// the controller's writes.
func (d *fakeDaemon) report(ctx context.Context, node, image, tag string, version int64, a answer) {
	for ctx.Err() == nil {
		ni, err := d.e.client.AppsV1beta1().NodeImages().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return
		}
		i := nodetags.FindTag(ni.Spec.Images, image, tag)
		if i < 0 || ni.Spec.Images[image].Tags[i].Version != version {
			return
		}
		statuses := map[string]appsv1beta1.ImageStatus{}
		for k, v := range ni.Status.ImageStatuses {
			statuses[k] = *v.DeepCopy()
		}
		now := metav1.Now()
		entry := appsv1beta1.ImageTagStatus{Tag: tag, Phase: a.Phase, Version: version, StartTime: &now, CompletionTime: &now, Message: a.Message, Progress: 100}
		if a.Phase == appsv1beta1.ImagePhaseSucceeded {
			entry.ImageID = image + "@sha256:" + fmt.Sprintf("%064d", version)
		}
		img := statuses[image]
		replaced := false
		for j := range img.Tags {
			if img.Tags[j].Tag == tag {
				img.Tags[j], replaced = entry, true
			}
		}
		if !replaced {
			img.Tags = append(img.Tags, entry)
		}
		statuses[image] = img
		patch, err := nodetags.StatusPatch(ni, statuses, nodetags.Count(ni.Spec.Images, statuses), nil, nodetags.Whole)
		if err != nil || patch == nil {
			return
		}
		_, err = d.e.client.AppsV1beta1().NodeImages().Patch(ctx, node, patch.Type, patch.Data, metav1.PatchOptions{}, "status")
		if err == nil {
			d.mu.Lock()
			d.writes++
			d.mu.Unlock()
			return
		}
		if !apierrors.IsConflict(err) {
			return
		}
	}
}
