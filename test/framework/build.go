package framework

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// BuildBinary builds one of the repository's commands (e.g.
// "./cmd/prepull-daemon") into dir and returns its path.
//
// With PREPULL_RACE_BINARIES=1 (make e2e does so) it builds them with the
// race detector; Cluster.Races finds its reports in the processes' logs.
func BuildBinary(dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	if os.Getenv("PREPULL_RACE_BINARIES") != "1" {
		return goBuild(out, pkg)
	}
	cmd := exec.Command("go", "build", "-race", "-trimpath", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=vendor", "CGO_ENABLED=1")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s with -race: %w\n%s", pkg, err, output)
	}
	return out, nil
}

// BuildStatic builds a command of this repository as a static linux binary
// for this machine's architecture, for packaging into an image.
func BuildStatic(dir, pkg string) (string, error) {
	return goBuild(filepath.Join(dir, "static", filepath.Base(pkg)), pkg)
}

// goBuild builds every binary the tests run one way: static and -trimpath,
// as the images are (hack/images) and as make test compiles everything
// (its GOFLAGS and CGO_ENABLED), so all of them share one build cache and a
// cold run compiles the dependency tree once for this architecture.
func goBuild(out, pkg string) (string, error) {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=vendor", "CGO_ENABLED=0", "GOOS=linux")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, output)
	}
	return out, nil
}

var (
	cacheMu  sync.Mutex
	cacheDir string
	cached   = map[string]string{}
)

// CachedBinary is BuildBinary done once per test binary: every cluster a
// test package starts shares the build. The binaries live in a temporary
// directory that RunTests removes at the end.
func CachedBinary(pkg string) (string, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if path, ok := cached[pkg]; ok {
		return path, nil
	}
	if cacheDir == "" {
		dir, err := os.MkdirTemp("", "prepull-bin-")
		if err != nil {
			return "", err
		}
		cacheDir = dir
	}
	path, err := BuildBinary(cacheDir, pkg)
	if err != nil {
		return "", err
	}
	cached[pkg] = path
	return path, nil
}

// removeCachedBinaries deletes what CachedBinary built.
func removeCachedBinaries() {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if cacheDir != "" {
		_ = os.RemoveAll(cacheDir)
	}
	cacheDir, cached = "", map[string]string{}
}
