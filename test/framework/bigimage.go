package framework

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PushLarge pushes an image of layers gzip layers, each one file of
// layerSize random (incompressible) bytes, as repo:tag, and returns the
// layers' compressed bytes in all. Each layer is built once, in memory, as
// gzip of stored blocks: random bytes do not compress, so any level gives
// the same size, and this one costs no CPU to write or to unpack
// (go-containerregistry's random images compress each layer twice at the
// default level: minutes for gigabytes).
func (r *Registry) PushLarge(repo, tag string, layers int, layerSize int64) (int64, error) {
	img := empty.Image
	var total int64
	for i := range layers {
		l, err := randomLayer(layerSize, uint64(i)+1)
		if err != nil {
			return 0, err
		}
		total += int64(len(l.compressed))
		// The registry runs in this process: the layer goes straight into
		// its store, and the push finds it there (its HEAD answers) instead
		// of sending gigabytes over loopback to be hashed and copied again.
		r.blobs.mu.Lock()
		r.blobs.m[l.digest] = l.compressed
		r.blobs.mu.Unlock()
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return 0, err
		}
	}
	ref, err := name.ParseReference(fmt.Sprintf("%s/%s:%s", r.Host, repo, tag), name.Insecure)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	saved := r.BytesPerSecond.Swap(0)
	defer r.BytesPerSecond.Store(saved)
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password})); err != nil {
		return 0, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return total, nil
}

// staticLayer is a gzip layer held in memory with its digests.
type staticLayer struct {
	compressed     []byte
	digest, diffID v1.Hash
}

func randomLayer(size int64, seed uint64) (*staticLayer, error) {
	var buf bytes.Buffer
	buf.Grow(int(size + size/100 + 4096))
	uncompressed := sha256.New()
	zw, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(io.MultiWriter(zw, uncompressed))
	if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data-%d", seed), Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'p', 'r', 'e', 'p', 'u', 'l', 'l'})
	if _, err := io.CopyN(tw, rng, size); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	l := &staticLayer{compressed: buf.Bytes()}
	l.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(l.compressed))}
	l.diffID = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", uncompressed.Sum(nil))}
	return l, nil
}

func (l *staticLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *staticLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *staticLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *staticLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("a test layer is pushed compressed only")
}
func (l *staticLayer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *staticLayer) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }
