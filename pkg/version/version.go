// Package version holds what the build stamped into the binaries: `make
// images` and `make build` set both through -ldflags -X.
package version

var (
	// Version is the release, e.g. v0.3.0, or "dev" for an unstamped build.
	Version = "dev"
	// Revision is the source commit the binary was built from.
	Revision = "unknown"
)
