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
