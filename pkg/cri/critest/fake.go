// Package critest is a fake CRI runtime on a real unix socket, for unit
// tests of code that talks CRI. It never stands in for a real runtime in
// integration or end-to-end tests.
package critest

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PullFunc decides a pull's outcome; it may block until ctx ends.
type PullFunc func(ctx context.Context, req *runtimeapi.PullImageRequest) (string, error)

// Runtime is the fake runtime. Its fields may be set before Start.
type Runtime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	// Pull decides each PullImage; nil succeeds at once.
	Pull PullFunc

	mu       sync.Mutex
	present  map[string]string
	pulls    []*runtimeapi.PullImageRequest
	inFlight int
	maxIn    int
	order    []string
	Endpoint string
}

// Start serves the fake on a socket in a temporary directory until the
// test ends.
func Start(t testing.TB, pull PullFunc) *Runtime {
	t.Helper()
	r := &Runtime{Pull: pull, present: map[string]string{}}
	// Unix socket paths are short; t.TempDir can be too long.
	dir, err := shortTempDir()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, r)
	runtimeapi.RegisterImageServiceServer(srv, r)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Stop(); removeAll(dir) })
	r.Endpoint = "unix://" + sock
	return r
}

// AddImage makes an image present.
func (r *Runtime) AddImage(image, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.present[image] = id
}

// Pulls returns the PullImage requests received so far.
func (r *Runtime) Pulls() []*runtimeapi.PullImageRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*runtimeapi.PullImageRequest(nil), r.pulls...)
}

// MaxInFlight is the most pulls that ran at once.
func (r *Runtime) MaxInFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxIn
}

// Order lists images in the order their pulls started.
func (r *Runtime) Order() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.order...)
}

func (r *Runtime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake", RuntimeVersion: "0", RuntimeApiVersion: "v1"}, nil
}

func (r *Runtime) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{}, nil
}

func (r *Runtime) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id, ok := r.present[req.Image.Image]; ok {
		return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: id, RepoTags: []string{req.Image.Image}}}, nil
	}
	return &runtimeapi.ImageStatusResponse{}, nil
}

func (r *Runtime) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	r.mu.Lock()
	r.pulls = append(r.pulls, req)
	r.order = append(r.order, req.Image.Image)
	r.inFlight++
	r.maxIn = max(r.maxIn, r.inFlight)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
	}()
	id := "sha256:" + time.Now().Format("20060102150405.000000000")
	if r.Pull != nil {
		var err error
		if id, err = r.Pull(ctx, req); err != nil {
			return nil, err
		}
	}
	r.AddImage(req.Image.Image, id)
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

// Block waits for ctx and reports its end as a runtime would.
func Block(ctx context.Context) error {
	<-ctx.Done()
	return status.FromContextError(ctx.Err()).Err()
}

// Errorf is a gRPC error as a runtime returns it.
func Errorf(code codes.Code, format string, args ...any) error {
	return status.Errorf(code, format, args...)
}
