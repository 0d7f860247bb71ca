//go:build tools

// Package tools records the commands this module builds so `go mod tidy`
// keeps their dependencies: containerd 2.x, its runc shim and ctr, for the
// tests that run prepull against the containerd releases clusters run today
// (Debian ships only 1.6).
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
