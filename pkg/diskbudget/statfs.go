package diskbudget

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Statfs reads the filesystem holding path, as the kubelet reads the
// image filesystem: capacity is all blocks, available those an
// unprivileged writer may use.
func Statfs(path string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, fmt.Errorf("reading the image filesystem at %s (mount it into the daemon's pod read-only, or set --image-fs-path): %w", path, err)
	}
	bsize := int64(st.Bsize)
	return Usage{Path: path, Capacity: int64(st.Blocks) * bsize, Available: int64(st.Bavail) * bsize}, nil
}
