// Package memimages is an in-memory CRI image service for benchmarks: the
// hollow nodes of test/bench pull from it in-process, and a real
// prepull-daemon can reach it over a unix socket. It keeps no layers, only
// which images are present, so the benchmark measures prepull and the API
// server rather than a registry. It never stands in for containerd in a
// test that checks pulling works.
package memimages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Service answers PullImage after Delay and remembers the image.
type Service struct {
	// Delay is how long each pull takes; zero pulls at once.
	Delay time.Duration

	mu      sync.Mutex
	present map[string]string
	pulls   int64
}

// New returns a service whose pulls take delay.
func New(delay time.Duration) *Service {
	return &Service{Delay: delay, present: map[string]string{}}
}

// Pulls is how many pulls completed.
func (s *Service) Pulls() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pulls
}

// delay is how long a pull of image takes: a tag "sleep-<duration>" (e.g.
// "app:sleep-200ms") says so for that image, so one fleet can serve
// scenarios with different pull times; otherwise Delay.
func (s *Service) delay(image string) time.Duration {
	if i := strings.LastIndex(image, ":sleep-"); i >= 0 && !strings.Contains(image[i:], "/") {
		if d, err := time.ParseDuration(image[i+len(":sleep-"):]); err == nil {
			return d
		}
	}
	return s.Delay
}

// PullImage waits its delay (or until ctx ends) and makes the image
// present. The call options are there to satisfy puller.ImageService.
func (s *Service) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest, _ ...grpc.CallOption) (*runtimeapi.PullImageResponse, error) {
	if d := s.delay(req.GetImage().GetImage()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	sum := sha256.Sum256([]byte(req.GetImage().GetImage()))
	id := "sha256:" + hex.EncodeToString(sum[:])
	s.mu.Lock()
	s.present[req.GetImage().GetImage()] = id
	s.pulls++
	s.mu.Unlock()
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

// ImageStatus reports whether the image was pulled.
func (s *Service) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.present[req.GetImage().GetImage()]; ok {
		return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: id, RepoTags: []string{req.GetImage().GetImage()}}}, nil
	}
	return &runtimeapi.ImageStatusResponse{}, nil
}

// server adapts Service to the gRPC server interfaces, whose methods take
// no call options.
type server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer
	s *Service
}

func (v server) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "memimages", RuntimeVersion: "0", RuntimeApiVersion: "v1"}, nil
}

func (v server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	return v.s.PullImage(ctx, req)
}

func (v server) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return v.s.ImageStatus(ctx, req)
}

func (v server) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{}, nil
}

// Serve answers CRI on a unix socket at path until the returned stop is
// called; the endpoint is "unix://"+path.
func (s *Service) Serve(path string) (stop func(), err error) {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, server{s: s})
	runtimeapi.RegisterImageServiceServer(srv, server{s: s})
	go func() { _ = srv.Serve(l) }()
	return func() { srv.Stop(); _ = os.Remove(path) }, nil
}
