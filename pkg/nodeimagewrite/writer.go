// Package nodeimagewrite is the one way prepull writes a NodeImage: the
// ImagePullJob controller its tags, the NodeImage controller its
// housekeeping, the daemon its status. A write starts from the freshest
// copy the writer knows (the cache's, or what its own last write returned
// when the cache lags), sends a JSON patch whose preconditions are the
// entries it changes (so writers of other entries pass), and on a conflict
// builds the patch again from a fresh read, the last attempts with the
// whole object as precondition. The decisions (which tags, which
// statuses) stay with the callers and nodetags; this package only writes.
package nodeimagewrite

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
	"github.com/prepull/prepull/pkg/nodetags"
	"github.com/prepull/prepull/pkg/ownwrites"
)

const (
	// Attempts bounds the writes of one change, fresh reads after
	// conflicts and retries of refused entries included.
	Attempts = 5
	// wholeFrom is the first attempt whose precondition is the whole
	// object: a fresh read that is still stale twice in a row means the
	// entry tests cannot tell (see nodetags.Whole).
	wholeFrom = 3
)

// Client reads and patches NodeImages. The daemon's narrow REST client
// fits it as it is; Clientset adapts the generated clientset.
type Client interface {
	Get(ctx context.Context, name string) (*appsv1beta1.NodeImage, error)
	Patch(ctx context.Context, name string, patch *nodetags.Patch, subresource string) (*appsv1beta1.NodeImage, error)
}

// Clientset adapts the generated clientset to Client.
func Clientset(c versioned.Interface) Client { return clientset{c} }

type clientset struct{ c versioned.Interface }

func (c clientset) Get(ctx context.Context, name string) (*appsv1beta1.NodeImage, error) {
	return c.c.AppsV1beta1().NodeImages().Get(ctx, name, metav1.GetOptions{})
}

func (c clientset) Patch(ctx context.Context, name string, patch *nodetags.Patch, subresource string) (*appsv1beta1.NodeImage, error) {
	var sub []string
	if subresource != "" {
		sub = []string{subresource}
	}
	return c.c.AppsV1beta1().NodeImages().Patch(ctx, name, patch.Type, patch.Data, metav1.PatchOptions{}, sub...)
}

// Build makes one attempt's patch from ni with the precondition given;
// nil means there is nothing to write. It may run once per attempt, each
// time on a newer copy.
type Build func(ni *appsv1beta1.NodeImage, pre nodetags.Precondition) (*nodetags.Patch, error)

// Writer writes NodeImages for one writer (a controller or a daemon). It
// is safe for concurrent use across NodeImages; the callers keep to one
// write per NodeImage at a time.
type Writer struct {
	Client Client
	// Observe hears each write's outcome (nil: written), for the
	// callers' metrics; nil hears nothing.
	Observe func(err error)
	own     ownwrites.Cache[*appsv1beta1.NodeImage]
}

// Freshest is ni, or what this writer's own last write of it returned
// when that is newer (the cache has not caught up with it yet: writing
// from the older copy would only conflict with ourselves).
func (w *Writer) Freshest(ni *appsv1beta1.NodeImage) *appsv1beta1.NodeImage {
	return w.own.Freshest(ni.Name, ni)
}

// Wrote reports whether ni is what this writer's own last write of it
// returned (while the writer still remembers that write).
func (w *Writer) Wrote(ni *appsv1beta1.NodeImage) bool { return w.own.Is(ni.Name, ni) }

// Forget drops what the writer remembers of a NodeImage that is gone.
func (w *Writer) Forget(name string) { w.own.Forget(name) }

// Write patches ni (its spec, or the subresource named) with what build
// makes of it, and returns the NodeImage as written (nil when nothing was
// written or it is gone). absorb, when set, may take a refused write's
// error in hand (the daemon drops the entries the apiserver refused) and
// ask for another attempt on the same copy.
func (w *Writer) Write(ctx context.Context, ni *appsv1beta1.NodeImage, subresource string, build Build, absorb func(error) bool) (*appsv1beta1.NodeImage, error) {
	name := ni.Name
	ni = w.Freshest(ni)
	for attempt := 1; ; attempt++ {
		pre := nodetags.Entries
		if attempt >= wholeFrom {
			pre = nodetags.Whole
		}
		patch, err := build(ni, pre)
		if err != nil || patch == nil {
			return nil, err
		}
		written, err := w.Client.Patch(ctx, name, patch, subresource)
		err = nodetags.AsConflict(err, name)
		if w.Observe != nil {
			w.Observe(err)
		}
		switch {
		case err == nil:
			w.own.Remember(name, written)
			return written, nil
		case apierrors.IsNotFound(err):
			return nil, nil
		case attempt < Attempts && absorb != nil && absorb(err):
			continue
		case attempt < Attempts && apierrors.IsConflict(err):
			klog.FromContext(ctx).V(4).Info("NodeImage changed under us, retrying from a fresh read", "nodeImage", name, "attempt", attempt)
			fresh, err := w.Client.Get(ctx, name)
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("reading NodeImage %s after a conflict: %w", name, err)
			}
			ni = fresh
		default:
			return nil, fmt.Errorf("writing NodeImage %s%s after %d attempt(s): %w", name, suffix(subresource), attempt, err)
		}
	}
}

func suffix(subresource string) string {
	if subresource == "" {
		return ""
	}
	return " " + subresource
}
