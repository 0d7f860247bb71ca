package framework

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildBinary builds one of the repository's commands (e.g.
// "./cmd/prepull-daemon") into dir and returns its path.
func BuildBinary(dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=vendor")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, output)
	}
	return out, nil
}

// BuildStatic builds a command of this repository as a static linux binary
// for this machine's architecture, for packaging into an image.
func BuildStatic(dir, pkg string) (string, error) {
	out := filepath.Join(dir, "static", filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=vendor", "CGO_ENABLED=0", "GOOS=linux")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, output)
	}
	return out, nil
}
