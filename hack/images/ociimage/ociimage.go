// Package ociimage builds single-binary OCI images reproducibly: one layer
// on an empty base, with every time, owner and compression header fixed, so
// the same binary always gives the same digest. `make images` uses it for
// prepull's images, the real-cluster test for its pause and workload images.
package ociimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec says how to package one binary.
type Spec struct {
	// Binary is the file to package; it becomes /<Name> and the entrypoint.
	Binary, Name string
	// User is the config's user; keep it numeric so runAsNonRoot can check it.
	User     string
	Platform v1.Platform
	Labels   map[string]string
	// VarRunLink adds /run and a /var/run -> ../run link, as Debian-based
	// images have.
	VarRunLink bool
}

var epoch = time.Unix(0, 0).UTC()

// Build returns the image described by s.
func Build(s Spec) (v1.Image, error) {
	layer, err := rootfs(s)
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = s.Platform.OS, s.Platform.Architecture, s.Platform.Variant
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/" + s.Name}
	cfg.Config.User = s.User
	cfg.Config.Labels = s.Labels
	cfg.Config.Env = []string{"PATH=/"}
	return mutate.ConfigFile(img, cfg)
}

// Index puts images (one per platform) into one OCI index.
func Index(images map[*v1.Platform]v1.Image, order []*v1.Platform) v1.ImageIndex {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range order {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: images[p], Descriptor: v1.Descriptor{Platform: p}})
	}
	return idx
}

func rootfs(s Spec) (v1.Layer, error) {
	data, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, err
	}
	entries := []*tar.Header{{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}}
	if s.VarRunLink {
		entries = append(entries,
			&tar.Header{Name: "run/", Typeflag: tar.TypeDir, Mode: 0o755},
			&tar.Header{Name: "var/", Typeflag: tar.TypeDir, Mode: 0o755},
			&tar.Header{Name: "var/run", Typeflag: tar.TypeSymlink, Linkname: "../run", Mode: 0o777})
	}
	entries = append(entries, &tar.Header{Name: path.Clean(s.Name), Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		h.ModTime, h.Format = epoch, tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	content := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(content)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
