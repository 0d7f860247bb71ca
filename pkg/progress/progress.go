// Package progress reads how far a containerd pull has got, in bytes, from
// containerd's content service: the image's manifest (fetched first, and
// labelled with its registry and repository) lists the layers and their
// sizes; committed layers count whole, in-flight ones by their written
// offset. Other runtimes have no such service, and their pulls report 0
// then 100.
package progress

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/prepull/prepull/pkg/cri"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/pullwatch"
)

// Namespace is where the CRI plugin keeps Kubernetes' images.
const Namespace = "k8s.io"

// labelPrefix starts the label containerd puts on every blob it fetched,
// naming the registry; its value lists the repositories.
const labelPrefix = "containerd.io/distribution.source."

// Tracker reads pull progress from one containerd.
type Tracker struct {
	conn    *grpc.ClientConn
	content contentapi.ContentClient

	mu        sync.Mutex
	manifests map[string]*manifest // by digest; manifests never change
}

type manifest struct {
	MediaType string  `json:"mediaType"`
	Layers    []layer `json:"layers"`
	Manifests []layer `json:"manifests"`
}

type layer struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Dial connects to containerd's API socket (unix:///... or a path).
func Dial(ctx context.Context, address string) (*Tracker, error) {
	conn, err := cri.DialUnix(address)
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	t := &Tracker{conn: conn, content: contentapi.NewContentClient(conn), manifests: map[string]*manifest{}}
	cctx, cancel := context.WithTimeout(t.ns(ctx), 5*time.Second)
	defer cancel()
	if _, err := t.content.ListStatuses(cctx, &contentapi.ListStatusesRequest{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("containerd content service at %s: %w", address, err)
	}
	return t, nil
}

// Close closes the connection.
func (t *Tracker) Close() error { return t.conn.Close() }

func (t *Tracker) ns(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", Namespace)
}

// Progress returns how many of image's layer bytes are present, of how
// many, or false while the manifest is not known yet. since is when the
// pull started: a repository's manifests written before it belong to
// earlier pulls.
func (t *Tracker) Progress(ctx context.Context, image string, since time.Time) (pullwatch.Bytes, bool) {
	ctx = t.ns(ctx)
	st, ok := t.state(ctx, image, since)
	if !ok {
		return pullwatch.Bytes{}, false
	}
	return sum(st.layers, func(l layer) int64 {
		if off, moving := st.offsets[l.Digest]; moving {
			return off
		}
		if st.committed[l.Digest] || t.exists(ctx, l.Digest) {
			return l.Size
		}
		return 0
	})
}

// sum adds the layers' sizes and their bytes present (done answers per
// layer). The sizes are what the registry declared: a negative size, or
// sizes whose sum overflows, make the progress unknown rather than a
// negative or wrapped figure in the status.
func sum(layers []layer, done func(layer) int64) (pullwatch.Bytes, bool) {
	var b pullwatch.Bytes
	for _, l := range layers {
		if l.Size < 0 || b.Total > math.MaxInt64-l.Size {
			return pullwatch.Bytes{}, false
		}
		b.Total += l.Size
		b.Done += min(max(done(l), 0), l.Size)
	}
	if b.Total == 0 {
		return pullwatch.Bytes{}, false
	}
	return b, true
}

// pullState is what the content store holds of one pull.
type pullState struct {
	layers    []layer
	offsets   map[string]int64  // in-flight layer digests: bytes written
	refs      map[string]string // in-flight layer digests: their ingest ref
	committed map[string]bool   // blobs labelled with the image's registry
}

// state finds the manifest of image's pull (ctx carries the namespace).
func (t *Tracker) state(ctx context.Context, image string, since time.Time) (*pullState, bool) {
	host, repo := imageref.Repository(image)
	// containerd 1.6 labels blobs with the registry's hostname only; later
	// releases keep the port. Either label will do.
	keys := []string{labelPrefix + host}
	if h, _, err := net.SplitHostPort(host); err == nil {
		keys = append(keys, labelPrefix+h)
	}
	var filters []string
	for _, k := range keys {
		filters = append(filters, fmt.Sprintf("labels.%q", k))
	}
	infos, err := t.list(ctx, filters...)
	if err != nil {
		return nil, false
	}
	statuses, err := t.content.ListStatuses(ctx, &contentapi.ListStatusesRequest{})
	if err != nil {
		return nil, false
	}
	st := &pullState{offsets: map[string]int64{}, refs: map[string]string{}, committed: map[string]bool{}}
	for _, s := range statuses.GetStatuses() {
		if _, dgst, ok := strings.Cut(s.GetRef(), "-"); ok {
			st.offsets[dgst] = s.GetOffset()
			st.refs[dgst] = s.GetRef()
		}
	}
	var best *manifest
	var bestScore int64 = -1
	for _, info := range infos {
		st.committed[info.GetDigest()] = true
	}
	for _, info := range infos {
		labelled := false
		for _, k := range keys {
			labelled = labelled || hasRepo(info.GetLabels()[k], repo)
		}
		if !labelled || info.GetSize() > 4<<20 {
			continue
		}
		m := t.manifest(ctx, info.GetDigest())
		if m == nil || len(m.Layers) == 0 {
			continue
		}
		// Prefer the manifest whose layers are moving now, then the newest.
		var score int64
		for _, l := range m.Layers {
			if _, moving := st.offsets[l.Digest]; moving {
				score += 1 << 40
			}
		}
		if info.GetUpdatedAt() != nil && !info.GetUpdatedAt().AsTime().Before(since.Add(-time.Second)) {
			score += info.GetUpdatedAt().AsTime().Unix()
		}
		if score > bestScore {
			best, bestScore = m, score
		}
	}
	if best == nil {
		return nil, false
	}
	st.layers = best.Layers
	return st, true
}

// exists says a blob is committed (a layer may not carry the repository
// label yet).
func (t *Tracker) exists(ctx context.Context, digest string) bool {
	_, err := t.content.Info(ctx, &contentapi.InfoRequest{Digest: digest})
	return err == nil
}

func (t *Tracker) list(ctx context.Context, filters ...string) ([]*contentapi.Info, error) {
	stream, err := t.content.List(ctx, &contentapi.ListContentRequest{Filters: filters})
	if err != nil {
		return nil, err
	}
	var out []*contentapi.Info
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetInfo()...)
	}
}

// manifest reads and caches a blob that parses as an image manifest; other
// blobs (configs, indexes) are cached as empty.
func (t *Tracker) manifest(ctx context.Context, digest string) *manifest {
	t.mu.Lock()
	m, ok := t.manifests[digest]
	t.mu.Unlock()
	if ok {
		return m
	}
	stream, err := t.content.Read(ctx, &contentapi.ReadContentRequest{Digest: digest})
	if err != nil {
		return nil
	}
	var data []byte
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil
		}
		data = append(data, resp.GetData()...)
	}
	m = &manifest{}
	if json.Unmarshal(data, m) != nil {
		m = &manifest{}
	}
	t.mu.Lock()
	t.manifests[digest] = m
	t.mu.Unlock()
	return m
}

func hasRepo(value, repo string) bool {
	for _, r := range strings.Split(value, ",") {
		if r == repo {
			return true
		}
	}
	return false
}
