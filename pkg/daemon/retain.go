package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/diskbudget"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/retention"
)

// Pinner pins images in the runtime's image store (package imagestore on
// containerd).
type Pinner interface {
	Pin(ctx context.Context, name string) error
	Unpin(ctx context.Context, name string) error
	// Pinned lists the images this daemon pinned.
	Pinned(ctx context.Context) ([]string, error)
}

// storeName is the name the runtime stores a pulled image under: the
// normalised reference (docker.io/library/nginx:1.25), as CRI names it.
func storeName(image, tag string) string { return imageref.Normalize(imageref.Join(image, tag)) }

// awaitDiskSpace holds a task, without its pool slot, while the image
// filesystem is above the budget, with the reason in its status. It
// returns early only when ctx ends; a reading that fails lets the pull go
// (the budget is a guard, not a gate that a broken statfs may close).
func (d *Daemon) awaitDiskSpace(ctx context.Context, set func(func(*appsv1beta1.ImageTagStatus))) error {
	if d.opts.ImageFS == nil {
		return nil
	}
	waited := false
	for {
		u, err := d.opts.ImageFS(ctx)
		if err != nil {
			klog.FromContext(ctx).V(2).Info("Reading the image filesystem failed; pulling without the disk budget", "err", err)
			return nil
		}
		observeImageFS(u)
		ok, why := d.opts.Budget.Admit(u)
		if ok {
			if waited {
				budgetWaiting.Dec()
			}
			return nil
		}
		if !waited {
			waited = true
			budgetWaiting.Inc()
			budgetWaits.Inc()
			klog.FromContext(ctx).Info("Pull waits for disk space", "usage", u.Ratio(), "limit", d.opts.Budget.MaxUsage, "path", u.Path)
		}
		set(func(st *appsv1beta1.ImageTagStatus) {
			st.Phase, st.Progress, st.Message = appsv1beta1.ImagePhaseWaiting, 0, why
		})
		if err := d.pool.pause(ctx, func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d.opts.BudgetInterval):
				return nil
			}
		}); err != nil {
			budgetWaiting.Dec()
			return err
		}
	}
}

// pin pins a just-pulled image when its tag's owners ask for it, within
// the pinned-bytes budget, and says what happened for the tag's message.
func (d *Daemon) pin(ctx context.Context, image, tag string) string {
	ni, err := d.ni.Get(d.opts.NodeName)
	if err != nil || !retention.Policies(ni)[retention.TagKey{Image: image, Tag: tag}].Pin {
		return ""
	}
	return d.pinOne(ctx, image, tag)
}

func (d *Daemon) pinOne(ctx context.Context, image, tag string) string {
	if d.opts.Pins == nil {
		return "; not pinned: " + d.opts.NoPinReason
	}
	name := storeName(image, tag)
	size, pinnedNow, _ := d.imageSize(ctx, name)
	if !pinnedNow {
		// Without a reading of the filesystem the cap cannot be checked,
		// and MayPin refuses (unless there is no cap).
		var u diskbudget.Usage
		if d.opts.ImageFS != nil {
			u, _ = d.opts.ImageFS(ctx)
		}
		_, pinned := d.pinned(ctx)
		if ok, why := d.opts.Budget.MayPin(u, pinned, size); !ok {
			return "; " + why
		}
	}
	if err := d.opts.Pins.Pin(ctx, name); err != nil {
		return fmt.Sprintf("; not pinned: %v", err)
	}
	// Only CRI's own answer tells whether the kubelet will see the pin;
	// containerd's CRI plugin learns of the label from an event, a moment
	// after the update returns.
	deadline := time.Now().Add(pinSettle)
	for {
		_, pinned, err := d.imageSize(ctx, name)
		if err == nil && pinned {
			return "; pinned against the kubelet's image GC"
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Sprintf("; labelled pinned, but %s does not report it pinned over CRI, so the kubelet's image GC may still remove it (containerd 2.x reports it)", d.opts.RuntimeVersion)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pinSettle is how long CRI gets to report a pin just set.
const pinSettle = 3 * time.Second

// imageSize asks CRI for an image's size and whether it is pinned.
func (d *Daemon) imageSize(ctx context.Context, name string) (int64, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, criCallTimeout)
	defer cancel()
	resp, err := d.opts.Images.ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: name}})
	if err != nil {
		return 0, false, err
	}
	if resp.GetImage() == nil {
		return 0, false, errImageGone
	}
	return int64(resp.GetImage().GetSize()), resp.GetImage().GetPinned(), nil
}

var errImageGone = fmt.Errorf("image not on the node")

// criCallTimeout bounds one CRI image status call.
const criCallTimeout = 10 * time.Second

// pinned counts the images this daemon pinned and sums their sizes.
func (d *Daemon) pinned(ctx context.Context) (int, int64) {
	names, err := d.opts.Pins.Pinned(ctx)
	if err != nil {
		return 0, 0
	}
	var total int64
	for _, n := range names {
		if size, _, err := d.imageSize(ctx, n); err == nil {
			total += size
		}
	}
	return len(names), total
}

// keep runs until ctx ends: at every interval, and when the NodeImage's
// retention changes, it pins what the tags' owners ask to pin, unpins what
// prepull pinned and no tag asks for any more, pulls again the images of
// repull tags that disappeared from the node, and acts on purge requests.
func (d *Daemon) keep(ctx context.Context) {
	tick := time.NewTicker(d.opts.VerifyInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.verify(ctx)
		case <-d.retentionChanged:
		}
		d.reconcilePins(ctx)
		d.purge(ctx)
	}
}

// retentionKey is what of a NodeImage the keeper acts on, to wake it only
// when that changed (the NodeImage changes at every status write).
func retentionKey(ni *appsv1beta1.NodeImage) string {
	var keys []string
	for k, v := range ni.Annotations {
		if strings.HasPrefix(k, retention.RetainPrefix) || strings.HasPrefix(k, retention.PurgePrefix) {
			keys = append(keys, k+"="+v)
		}
	}
	for name, img := range ni.Spec.Images {
		for _, t := range img.Tags {
			keys = append(keys, name+":"+t.Tag)
		}
	}
	slices.Sort(keys)
	return strings.Join(keys, "\n")
}

// reconcilePins pins the succeeded tags whose owners ask for it and
// unpins the images prepull pinned that no tag asks for.
func (d *Daemon) reconcilePins(ctx context.Context) {
	if d.opts.Pins == nil {
		return
	}
	ni, err := d.ni.Get(d.opts.NodeName)
	if err != nil {
		return
	}
	logger := klog.FromContext(ctx)
	// A pinning tag keeps its pin in any phase (its pull may be pinning it
	// right now); only a succeeded one is pinned from here.
	keep, want := map[string]bool{}, map[string]retention.TagKey{}
	for k, p := range retention.Policies(ni) {
		if !p.Pin {
			continue
		}
		keep[storeName(k.Image, k.Tag)] = true
		if st, ok := d.reporter.get(k.Image, k.Tag); ok && st.Phase == appsv1beta1.ImagePhaseSucceeded {
			want[storeName(k.Image, k.Tag)] = k
		}
	}
	have, err := d.opts.Pins.Pinned(ctx)
	if err != nil {
		logger.Error(err, "Listing pinned images failed")
		return
	}
	for _, name := range have {
		if keep[name] {
			delete(want, name)
			continue
		}
		if err := d.opts.Pins.Unpin(ctx, name); err != nil {
			logger.Error(err, "Unpinning failed", "image", name)
			continue
		}
		logger.V(2).Info("Unpinned: no tag asks to keep it any more", "image", name)
	}
	for _, k := range want {
		note := d.pinOne(ctx, k.Image, k.Tag)
		d.reporter.update(k.Image, k.Tag, func(st *appsv1beta1.ImageTagStatus) {
			if st.Phase == appsv1beta1.ImagePhaseSucceeded {
				st.Message = withNote(st.Message, note)
			}
		})
	}
	d.observePins(ctx)
}

// withNote replaces the retention note (after "; ") of a message.
func withNote(msg, note string) string {
	if i := strings.Index(msg, "; "); i >= 0 {
		msg = msg[:i]
	}
	return msg + note
}

func (d *Daemon) observePins(ctx context.Context) {
	n, total := d.pinned(ctx)
	pinnedImages.Set(float64(n))
	pinnedBytesGauge.Set(float64(total))
}

// verify asks CRI, once per tag, whether each succeeded repull tag's image
// is still on the node, and pulls again the ones that are gone. Nothing is
// written to the API unless an image is gone.
func (d *Daemon) verify(ctx context.Context) {
	ni, err := d.ni.Get(d.opts.NodeName)
	if err != nil {
		return
	}
	if d.opts.ImageFS != nil {
		if u, err := d.opts.ImageFS(ctx); err == nil {
			observeImageFS(u)
		}
	}
	for k, p := range retention.Policies(ni) {
		if !p.Repull {
			continue
		}
		st, ok := d.reporter.get(k.Image, k.Tag)
		if !ok || st.Phase != appsv1beta1.ImagePhaseSucceeded {
			continue
		}
		if _, _, err := d.imageSize(ctx, storeName(k.Image, k.Tag)); err != errImageGone {
			continue
		}
		i := slices.IndexFunc(ni.Spec.Images[k.Image].Tags, func(t appsv1beta1.ImageTagSpec) bool { return t.Tag == k.Tag })
		if i < 0 {
			continue
		}
		tag := ni.Spec.Images[k.Image].Tags[i]
		imagesLost.Inc()
		klog.FromContext(ctx).Info("Image disappeared from the node after it was pulled; pulling it again", "image", imageref.Join(k.Image, k.Tag))
		d.reporter.update(k.Image, k.Tag, func(st *appsv1beta1.ImageTagStatus) {
			*st = appsv1beta1.ImageTagStatus{Tag: k.Tag, Phase: appsv1beta1.ImagePhaseWaiting, Version: tag.Version, Message: lostMessage}
		})
		img := ni.Spec.Images[k.Image]
		t := d.newTask(ctx, ni, k.Image, *img.DeepCopy(), *tag.DeepCopy())
		t.note = lostNote
		d.pool.submit(t)
	}
}

const (
	lostMessage = "the image was removed from the node after it was pulled (the kubelet's image GC, or crictl rmi); pulling it again"
	lostNote    = " (again: the image had been removed from the node)"
)

// purge removes the images of deleted jobs that asked for it, where no tag
// holds them and no container uses them; each request is acted on once
// per daemon run (a repeat after a restart finds nothing to do).
func (d *Daemon) purge(ctx context.Context) {
	ni, err := d.ni.Get(d.opts.NodeName)
	if err != nil || d.opts.Remover == nil {
		return
	}
	logger := klog.FromContext(ctx)
	for _, p := range retention.Purges(ni) {
		key := string(p.Owner) + " " + p.Image + ":" + p.Tag
		if d.purged[key] {
			continue
		}
		d.purged[key] = true
		name := storeName(p.Image, p.Tag)
		var keep []string
		for image, img := range ni.Spec.Images {
			for _, t := range img.Tags {
				keep = append(keep, storeName(image, t.Tag))
			}
		}
		removed, why, err := d.opts.Remover.RemoveUnused(ctx, name, keep)
		switch {
		case err != nil:
			logger.Error(err, "Removing a deleted job's image failed", "image", name)
		case removed:
			imagesPurged.Inc()
			logger.Info("Removed a deleted job's image (prepull.io/remove-on-delete)", "image", name)
		default:
			logger.V(2).Info("Kept a deleted job's image", "image", name, "reason", why)
		}
	}
}

// Remover removes an image from the node unless a container uses it.
type Remover interface {
	// RemoveUnused removes name and reports true, or reports why not; an
	// image that is one of keep under another name stays.
	RemoveUnused(ctx context.Context, name string, keep []string) (removed bool, why string, err error)
}

// observeImageFS records a reading of the image filesystem.
func observeImageFS(u diskbudget.Usage) {
	imageFSCapacity.Set(float64(u.Capacity))
	imageFSAvailable.Set(float64(u.Available))
	imageFSUsage.Set(u.Ratio())
}
