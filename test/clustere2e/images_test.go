package clustere2e

import (
	"archive/tar"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/prepull/prepull/test/framework"
)

// TestImagesReproducible builds both images for both platforms twice into
// OCI layouts: the digests must match, and each image must be what the
// manifests rely on.
func TestImagesReproducible(t *testing.T) {
	build := func() v1.ImageIndex {
		out := filepath.Join(t.TempDir(), "layout")
		cmd := exec.Command("go", "run", "./hack/images", "-out", out, "-tag", "v0.0.0-test", "-platforms", "linux/amd64,linux/arm64")
		cmd.Dir = framework.RepoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("hack/images: %v\n%s", err, b)
		}
		idx, err := layout.ImageIndexFromPath(out)
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	first, second := build(), build()
	m1, err := first.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := second.IndexManifest()
	if len(m1.Manifests) != 2 || len(m2.Manifests) != 2 {
		t.Fatalf("want 2 images in each layout, got %d and %d", len(m1.Manifests), len(m2.Manifests))
	}
	for i, d := range m1.Manifests {
		ref := d.Annotations["org.opencontainers.image.ref.name"]
		if d.Digest != m2.Manifests[i].Digest {
			t.Errorf("%s: digest %s then %s: the build is not reproducible", ref, d.Digest, m2.Manifests[i].Digest)
		}
		idx, err := first.ImageIndex(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var platforms []string
		for _, pd := range im.Manifests {
			platforms = append(platforms, pd.Platform.OS+"/"+pd.Platform.Architecture)
			img, err := idx.Image(pd.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			size, _ := img.Size()
			layers, _ := img.Layers()
			var compressed int64
			for _, l := range layers {
				s, _ := l.Size()
				compressed += s
			}
			t.Logf("%s %s/%s: index %s, image %s, %.1f MiB compressed", ref, pd.Platform.OS, pd.Platform.Architecture, d.Digest, pd.Digest, float64(compressed+size)/(1<<20))
			for _, label := range []string{"org.opencontainers.image.source", "org.opencontainers.image.revision", "org.opencontainers.image.version"} {
				if cfg.Config.Labels[label] == "" {
					t.Errorf("%s: no %s label", ref, label)
				}
			}
			if cfg.Architecture != pd.Platform.Architecture {
				t.Errorf("%s: config architecture %s in the %s entry", ref, cfg.Architecture, pd.Platform.Architecture)
			}
			files := layerFiles(t, layers)
			switch {
			case strings.HasPrefix(ref, "prepull-controller"):
				if cfg.Config.User != "65532:65532" {
					t.Errorf("%s: user %q, want the numeric non-root 65532:65532", ref, cfg.Config.User)
				}
			case strings.HasPrefix(ref, "prepull-daemon"):
				// The Debian-like link the daemon's mount layout is proven
				// against on the real cluster.
				if files["var/run"] != "../run" {
					t.Errorf("%s: /var/run is %q, want a link to ../run", ref, files["var/run"])
				}
			}
		}
		if strings.Join(platforms, ",") != "linux/amd64,linux/arm64" {
			t.Errorf("%s: platforms %v", ref, platforms)
		}
	}
}

// layerFiles maps each path in the layers to its link target ("" for files).
func layerFiles(t *testing.T, layers []v1.Layer) map[string]string {
	files := map[string]string{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimSuffix(h.Name, "/")] = h.Linkname
		}
		rc.Close()
	}
	return files
}
