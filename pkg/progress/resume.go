package progress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A CRI pull holds what it downloads under a lease of its own, which
// containerd deletes when the pull fails or is cancelled; its garbage
// collector then removes the half-written layers and even the layers it
// had finished, so a retry would download everything again. A Hold is a
// lease of prepull's that takes in each layer of the pull as it appears
// (the finished blob, or the in-flight ingest), so that a retry finds them:
// containerd resumes an ingest it finds with a ranged read.

// holdExpiry bounds how long a hold can outlive a daemon that died
// without releasing it: containerd's collector then drops the lease.
const holdExpiry = 6 * time.Hour

// Hold keeps one image's downloaded bytes between pull attempts.
type Hold struct {
	t      *Tracker
	leases leasesapi.LeasesClient
	image  string
	id     string
	mu     sync.Mutex
	held   map[string]bool // resource type/id already in the lease
}

// Hold starts keeping image's bytes: it creates (or, after a daemon
// restart, takes over) the image's lease.
func (t *Tracker) Hold(ctx context.Context, image string) (*Hold, error) {
	sum := sha256.Sum256([]byte(image))
	h := &Hold{t: t, leases: leasesapi.NewLeasesClient(t.conn), image: image, id: "prepull.io/resume-" + hex.EncodeToString(sum[:8]), held: map[string]bool{}}
	_, err := h.leases.Create(t.ns(ctx), &leasesapi.CreateRequest{ID: h.id, Labels: map[string]string{
		"containerd.io/gc.expire": time.Now().Add(holdExpiry).UTC().Format(time.RFC3339),
		"prepull.io/image":        truncateLabel(image),
	}})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return nil, fmt.Errorf("creating lease %s to keep %s's downloaded layers: %w", h.id, image, err)
	}
	return h, nil
}

// Keep adds the pull's layers seen now to the lease: finished blobs and
// in-flight ingests. Errors are left to the next sample.
func (h *Hold) Keep(ctx context.Context, since time.Time) {
	ctx = h.t.ns(ctx)
	st, ok := h.t.state(ctx, h.image, since)
	if !ok {
		return
	}
	for _, l := range st.layers {
		if ref, moving := st.refs[l.Digest]; moving {
			h.add(ctx, "ingests", ref)
		} else if st.committed[l.Digest] || h.t.exists(ctx, l.Digest) {
			h.add(ctx, "content", l.Digest)
		}
	}
}

func (h *Hold) add(ctx context.Context, kind, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held[kind+"/"+id] {
		return
	}
	_, err := h.leases.AddResource(ctx, &leasesapi.AddResourceRequest{ID: h.id, Resource: &leasesapi.Resource{ID: id, Type: kind}})
	if err == nil {
		h.held[kind+"/"+id] = true
	}
}

// Release ends the hold: the image is in (its own references keep its
// layers) or the pull is over for good.
func (h *Hold) Release(ctx context.Context) error {
	_, err := h.leases.Delete(h.t.ns(ctx), &leasesapi.DeleteRequest{ID: h.id})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("deleting lease %s: %w", h.id, err)
	}
	return nil
}

// truncateLabel keeps a label value within containerd's 4 KiB limit.
func truncateLabel(v string) string {
	if len(v) > 1024 {
		return v[:1024]
	}
	return v
}
