// Command images builds the prepull-controller and prepull-daemon container
// images without a Docker engine (`make images`): static Go binaries for
// linux/amd64 and linux/arm64, each image one layer on an empty base, both
// platforms in one OCI index. Every input that could vary between two builds
// of the same source (file times, owners, gzip headers, the config's creation
// time) is fixed, so the same commit always gives the same digests.
//
// Without -registry the indexes are written to an OCI layout directory
// (-out); with it they are pushed as <registry>/<name>:<tag>.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/prepull/prepull/hack/images/ociimage"
)

// image says how one binary is packaged.
type image struct {
	name string
	// user is numeric so that runAsNonRoot can verify it.
	user string
	// varRunLink makes /var/run a link to /run, as in Debian-based images:
	// the daemon's manifests must keep the service-account token (mounted at
	// /var/run/secrets/...) away from the host paths they mount, and the
	// real-cluster test proves it with this very layout.
	varRunLink bool
}

var images = []image{
	{name: "prepull-controller", user: "65532:65532"},
	// The container runtime's socket is root-owned; the manifests drop every
	// capability and forbid privilege escalation.
	{name: "prepull-daemon", user: "0:0", varRunLink: true},
}

func main() {
	registry := flag.String("registry", "", "Push to <registry>/<name>:<tag> (e.g. ghcr.io/acme). Empty: write an OCI layout to -out.")
	out := flag.String("out", "bin/images", "OCI layout directory used when -registry is empty; replaced on each run.")
	tag := flag.String("tag", "", "Image tag and version label. Empty: from `git describe --tags --always --dirty`.")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "Comma-separated os/arch list; all go into one index.")
	insecure := flag.Bool("insecure", false, "Allow a plain-HTTP registry other than localhost/127.0.0.1 (those are always plain HTTP).")
	source := flag.String("source", "https://github.com/prepull/prepull", "org.opencontainers.image.source label.")
	flag.Parse()
	if err := run(*registry, *out, *tag, *platforms, *source, *insecure); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}

func run(registry, out, tag, platformList, source string, insecure bool) error {
	revision := strings.TrimSpace(gitOutput("rev-parse", "HEAD"))
	if revision == "" {
		revision = "unknown"
	}
	if tag == "" {
		tag = strings.TrimSpace(gitOutput("describe", "--tags", "--always", "--dirty"))
		if tag == "" {
			tag = "dev"
		}
	}
	var platforms []v1.Platform
	for _, p := range strings.Split(platformList, ",") {
		osName, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok || osName != "linux" {
			return fmt.Errorf("-platforms: %q is not linux/<arch>", p)
		}
		platforms = append(platforms, v1.Platform{OS: osName, Architecture: arch})
	}
	work, err := os.MkdirTemp("", "prepull-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	labels := map[string]string{
		"org.opencontainers.image.source":   source,
		"org.opencontainers.image.revision": revision,
		"org.opencontainers.image.version":  tag,
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
	var lay layout.Path
	if registry == "" {
		if err := os.RemoveAll(out); err != nil {
			return err
		}
		if lay, err = layout.Write(out, empty.Index); err != nil {
			return fmt.Errorf("creating OCI layout %s: %w", out, err)
		}
	}
	for _, img := range images {
		idx, err := buildIndex(work, img, platforms, labels, tag, revision)
		if err != nil {
			return err
		}
		digest, err := idx.Digest()
		if err != nil {
			return err
		}
		if registry == "" {
			ref := img.name + ":" + tag
			if err := lay.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
				return fmt.Errorf("writing %s to %s: %w", ref, out, err)
			}
			fmt.Printf("%s:%s@%s (OCI layout %s)\n", img.name, tag, digest, out)
			continue
		}
		var opts []name.Option
		if insecure {
			opts = append(opts, name.Insecure)
		}
		ref, err := name.ParseReference(strings.TrimSuffix(registry, "/")+"/"+img.name+":"+tag, opts...)
		if err != nil {
			return fmt.Errorf("-registry %q: %w", registry, err)
		}
		// Credentials as `docker login` (or $DOCKER_CONFIG) stored them.
		if err := remote.WriteIndex(ref, idx, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		fmt.Printf("%s@%s\n", ref, digest)
	}
	return nil
}

func buildIndex(work string, img image, platforms []v1.Platform, labels map[string]string, tag, revision string) (v1.ImageIndex, error) {
	built := map[*v1.Platform]v1.Image{}
	var order []*v1.Platform
	for i := range platforms {
		p := &platforms[i]
		binary, err := goBuild(work, img.name, p.Architecture, tag, revision)
		if err != nil {
			return nil, err
		}
		built[p], err = ociimage.Build(ociimage.Spec{Binary: binary, Name: img.name, User: img.user, Platform: *p, Labels: labels, VarRunLink: img.varRunLink})
		if err != nil {
			return nil, fmt.Errorf("packaging %s for %s/%s: %w", img.name, p.OS, p.Architecture, err)
		}
		order = append(order, p)
	}
	return ociimage.Index(built, order), nil
}

// goBuild builds a static binary of ./cmd/<name> for linux/<arch>.
func goBuild(work, name, arch, tag, revision string) (string, error) {
	out := filepath.Join(work, arch, name)
	ldflags := fmt.Sprintf("-s -w -X github.com/prepull/prepull/pkg/version.Version=%s -X github.com/prepull/prepull/pkg/version.Revision=%s", tag, revision)
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, "./cmd/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS=-mod=vendor")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s for linux/%s: %w\n%s", name, arch, err, output)
	}
	return out, nil
}

func gitOutput(args ...string) string {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}
