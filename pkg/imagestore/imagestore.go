// Package imagestore pins and unpins images in containerd's image store,
// the one thing CRI cannot do: CRI has no pin call, and the kubelet's image
// GC skips only images CRI reports pinned. containerd reports an image
// pinned when one of its names in the k8s.io namespace carries the label
// io.cri-containerd.pinned=pinned; containerd 2.x (and late 1.7 releases)
// see such a label set through the images API at once, 1.6 never does.
//
// An image this package pins also carries prepull's own label, so an
// unpin never removes a pin someone else set (containerd's pinned_images
// config, an operator with ctr), and the pins survive a daemon restart.
package imagestore

import (
	"context"
	"fmt"
	"time"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/prepull/prepull/pkg/cri"
)

const (
	// Namespace is where the CRI plugin keeps Kubernetes' images.
	Namespace = "k8s.io"
	// CRIPinnedLabel is the label containerd's CRI plugin reads as "pinned".
	CRIPinnedLabel = "io.cri-containerd.pinned"
	criPinnedValue = "pinned"
	// OwnLabel marks a pin prepull set, and so may remove.
	OwnLabel = "prepull.io/pinned"
)

// callTimeout bounds each call: containerd answers these from its
// metadata database in milliseconds, and a hung runtime must not hold the
// daemon.
const callTimeout = 10 * time.Second

// Store is containerd's image store, namespace k8s.io.
type Store struct {
	conn   *grpc.ClientConn
	images imagesapi.ImagesClient
}

// Dial connects to containerd's API socket (unix:///... or a path) and
// checks that its images service answers.
func Dial(ctx context.Context, address string) (*Store, error) {
	conn, err := cri.DialUnix(address)
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	s := &Store{conn: conn, images: imagesapi.NewImagesClient(conn)}
	if _, err := s.Pinned(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("containerd images service at %s: %w", address, err)
	}
	return s, nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.conn.Close() }

func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", Namespace), cancel
}

// ErrNotFound is returned when containerd has no image of that name.
var ErrNotFound = fmt.Errorf("image not found in containerd's %s namespace", Namespace)

// Pin labels the image name (e.g. docker.io/library/nginx:1.25) pinned.
func (s *Store) Pin(ctx context.Context, name string) error {
	return s.setLabels(ctx, name, map[string]string{CRIPinnedLabel: criPinnedValue, OwnLabel: "true"})
}

// Unpin removes the pin from the image name if prepull set it; a pin
// someone else set stays. An image already gone is no error.
func (s *Store) Unpin(ctx context.Context, name string) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	got, err := s.images.Get(cctx, &imagesapi.GetImageRequest{Name: name})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading image %s from containerd: %w", name, err)
	}
	if got.GetImage().GetLabels()[OwnLabel] != "true" {
		return nil
	}
	err = s.setLabels(ctx, name, nil)
	if err == ErrNotFound {
		return nil
	}
	return err
}

// setLabels sets (or, absent from labels, removes) prepull's and CRI's pin
// labels on name, leaving its other labels alone. The update carries the
// image as read: containerd 2.4 crashes on an update without a target.
func (s *Store) setLabels(ctx context.Context, name string, labels map[string]string) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	got, err := s.images.Get(cctx, &imagesapi.GetImageRequest{Name: name})
	if status.Code(err) == codes.NotFound {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("reading image %s from containerd: %w", name, err)
	}
	img := got.GetImage()
	if img == nil || img.GetTarget() == nil {
		return ErrNotFound
	}
	img.Labels = labels
	_, err = s.images.Update(cctx, &imagesapi.UpdateImageRequest{
		Image:      img,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels." + CRIPinnedLabel, "labels." + OwnLabel}},
	})
	if status.Code(err) == codes.NotFound {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("labelling image %s in containerd: %w", name, err)
	}
	return nil
}

// Pinned lists the names of the images prepull pinned.
func (s *Store) Pinned(ctx context.Context) ([]string, error) {
	cctx, cancel := s.call(ctx)
	defer cancel()
	resp, err := s.images.List(cctx, &imagesapi.ListImagesRequest{Filters: []string{fmt.Sprintf("labels.%q==true", OwnLabel)}})
	if err != nil {
		return nil, fmt.Errorf("listing pinned images in containerd: %w", err)
	}
	var out []string
	for _, img := range resp.GetImages() {
		out = append(out, img.GetName())
	}
	return out, nil
}
