package imageref

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"sigs.k8s.io/yaml"
)

func TestParse(t *testing.T) {
	const hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		in      string
		want    Reference
		wantErr bool
	}{
		{in: "nginx", want: Reference{"nginx", "latest"}},
		{in: "nginx:1.9.1", want: Reference{"nginx", "1.9.1"}},
		{in: "library/nginx:1.25", want: Reference{"library/nginx", "1.25"}},
		{in: "registry.example.com/team/app:v1", want: Reference{"registry.example.com/team/app", "v1"}},
		{in: "127.0.0.1:5000/app", want: Reference{"127.0.0.1:5000/app", "latest"}},
		{in: "localhost:5000/a/b:c_d-e.f", want: Reference{"localhost:5000/a/b", "c_d-e.f"}},
		{in: "app@sha256:" + hex, want: Reference{"app", "sha256:" + hex}},
		{in: "app:v1@sha256:" + hex, want: Reference{"app", "sha256:" + hex}},
		{in: "r.io:443/x@sha256:" + hex, want: Reference{"r.io:443/x", "sha256:" + hex}},
		{in: "", wantErr: true},
		{in: "Nginx", wantErr: true},
		{in: "nginx:", wantErr: true},
		{in: "nginx:bad tag", wantErr: true},
		{in: "nginx@sha256:abc", wantErr: true},
		{in: "nginx@sha512:" + hex + hex, wantErr: true},
		{in: "nginx:.hidden", wantErr: true},
		{in: "/nginx", wantErr: true},
		{in: "nginx@sha256:" + hex[:63], wantErr: true},
		{in: "nginx@sha256:" + strings.ToUpper(hex), wantErr: true},
		{in: strings.Repeat("a", 256), wantErr: true},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if c.wantErr {
			if err == nil {
				t.Errorf("Parse(%q) = %+v, want error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestJoin(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := map[[2]string]string{
		{"nginx", "1.25"}:             "nginx:1.25",
		{"r.io:5000/app", "latest"}:   "r.io:5000/app:latest",
		{"r.io:5000/app", d}:          "r.io:5000/app@" + d,
		{"registry.example.com/x", d}: "registry.example.com/x@" + d,
	}
	for in, want := range cases {
		if got := Join(in[0], in[1]); got != want {
			t.Errorf("Join(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
		r, err := Parse(want)
		if err != nil || r.Name != in[0] || r.Tag != in[1] {
			t.Errorf("Parse(Join(%q, %q)) = %+v, %v", in[0], in[1], r, err)
		}
	}
}

func TestRepository(t *testing.T) {
	cases := map[string][2]string{
		"nginx:1.25":                 {"docker.io", "library/nginx"},
		"team/app":                   {"docker.io", "team/app"},
		"127.0.0.1:5000/app:v1":      {"127.0.0.1:5000", "app"},
		"registry.example.com/a/b:1": {"registry.example.com", "a/b"},
		"localhost/x:1":              {"localhost", "x"},
		"docker.io/nginx":            {"docker.io", "library/nginx"},
		"index.docker.io/nginx:1":    {"docker.io", "library/nginx"},
		"docker.io/library/nginx":    {"docker.io", "library/nginx"},
		"index.docker.io/team/app":   {"docker.io", "team/app"},
	}
	for in, want := range cases {
		if h, p := Repository(in); h != want[0] || p != want[1] {
			t.Errorf("Repository(%q) = %q, %q; want %q", in, h, p, want)
		}
	}
}

// The CRDs' image rules, in Go, for the fuzz test.
var (
	patternRE = regexp.MustCompile(Pattern)
	// imageID is what admission refuses besides Pattern: a bare 64-hex
	// string reads as an image ID, not a name.
	imageID = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

// admissible reports whether the CRDs' rules accept ref as an image.
func admissible(ref string) bool {
	if !patternRE.MatchString(ref) || imageID.MatchString(ref) {
		return false
	}
	name := ref
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	return len(name)+pathAdjust(ref) <= MaxNameLength
}

// pathAdjust mirrors the CRDs' rule for turning a reference's name into
// the repository path a runtime checks against the limit: without the
// registry host, and with library/ for a Docker Hub image named in one
// component (nginx, docker.io/nginx).
func pathAdjust(ref string) int {
	first, _, found := strings.Cut(ref, "/")
	switch {
	case !found:
		return len("library/")
	// A first component with "_" is no host name, whatever else it holds
	// (a.b_c/app): the whole name is the path.
	case (!strings.ContainsAny(first, ".:ABCDEFGHIJKLMNOPQRSTUVWXYZ") || strings.Contains(first, "_")) && first != "localhost":
		return 0 // no registry host: the whole name is the path
	case strings.Count(ref, "/") == 1 && (first == "docker.io" || first == "index.docker.io"):
		return len("library/") - len(first) - 1
	}
	return -len(first) - 1
}

// The CRDs check images with Pattern: what admission accepts, Parse must.
func TestCRDsUsePattern(t *testing.T) {
	for _, f := range []string{"apps.kruise.io_imagepulljobs.yaml", "apps.kruise.io_imagelistpulljobs.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "artifacts", "crds", f))
		if err != nil {
			t.Fatal(err)
		}
		var crd any
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatal(err)
		}
		rules := strings.Join(collectRules(crd), "\n")
		if n := strings.Count(rules, ".matches('"+Pattern+"')"); n != 2 {
			t.Errorf("%s: the image rule uses imageref.Pattern %d times, want once per version (2): keep the marker in step with Pattern", f, n)
		}
		if n := strings.Count(rules, fmt.Sprintf(".size() - 1) <= %d", MaxNameLength)); n != 2 {
			t.Errorf("%s: the name length rule (<= %d) appears %d times, want 2", f, MaxNameLength, n)
		}
	}
}

func collectRules(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "rule" {
				out = append(out, s)
			}
			out = append(out, collectRules(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, collectRules(x)...)
		}
	}
	return out
}

// FuzzParse: nothing panics, every reference admission accepts parses and
// survives a round trip through Join, and the normalised repository agrees
// with distribution/reference.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"nginx", "nginx:1.25", "docker.io/nginx", "index.docker.io/library/nginx:1",
		"r.io:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "localhost:5000", "a:b@c:d", "[::1]:5000/x"} {
		f.Add(s)
	}
	// Names at the edges of the repository path limit, where the CRD
	// rule's reckoning of the path is exact or off by one.
	for _, prefix := range []string{"", "team/", "docker.io/", "index.docker.io/", "localhost/", "r.io/"} {
		for _, extra := range []int{-1, 0, 1} {
			n := MaxNameLength - len(prefix) - pathAdjust(prefix+"x") + extra
			f.Add(prefix + strings.Repeat("a", n) + ":v1")
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if admissible(s) {
			if err != nil {
				t.Fatalf("admission accepts %q but Parse fails: %v", s, err)
			}
			back, err := Parse(r.String())
			if err != nil || back != r {
				t.Fatalf("Parse(%q) = %+v; Parse(%q) = %+v, %v", s, r, r.String(), back, err)
			}
		}
		if err != nil {
			return
		}
		if patternRE.MatchString(s) && !imageID.MatchString(s) && !admissible(s) {
			t.Fatalf("admission refuses %q for its length, but a runtime accepts it", s)
		}
		host, path := Repository(s)
		named, nerr := reference.ParseNormalizedNamed(s)
		if nerr != nil {
			t.Fatalf("Parse accepts %q, distribution does not: %v", s, nerr)
		}
		if host != reference.Domain(named) || path != reference.Path(named) {
			t.Fatalf("Repository(%q) = %s, %s; distribution says %s, %s", s, host, path, reference.Domain(named), reference.Path(named))
		}
	})
}

func TestNormalize(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a", 64)
	for in, want := range map[string]string{
		"nginx":                                 "docker.io/library/nginx:latest",
		"nginx:1.25":                            "docker.io/library/nginx:1.25",
		"docker.io/library/nginx:1.25":          "docker.io/library/nginx:1.25",
		"index.docker.io/library/nginx:1.25":    "docker.io/library/nginx:1.25",
		"registry.example:5000/team/app":        "registry.example:5000/team/app:latest",
		"registry.example/team/app:2@" + digest: "registry.example/team/app@" + digest,
		"registry.example/team/app@" + digest:   "registry.example/team/app@" + digest,
		"Not A Reference":                       "Not A Reference",
	} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}
