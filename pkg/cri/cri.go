// Package cri connects to a node's container runtime over the CRI v1 gRPC
// API, finding the socket among the usual paths when none is given.
package cri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultEndpoints are tried in order when no endpoint is configured:
// containerd, CRI-O, cri-dockerd.
var DefaultEndpoints = []string{
	"unix:///run/containerd/containerd.sock",
	"unix:///var/run/containerd/containerd.sock",
	"unix:///run/crio/crio.sock",
	"unix:///var/run/crio/crio.sock",
	"unix:///run/cri-dockerd.sock",
	"unix:///var/run/cri-dockerd.sock",
}

// maxMsgSize matches kubelet's limit for CRI messages.
const maxMsgSize = 16 * 1024 * 1024

// Runtime is a connected CRI runtime.
type Runtime struct {
	Endpoint string
	Conn     *grpc.ClientConn
	Images   runtimeapi.ImageServiceClient
	Runtime  runtimeapi.RuntimeServiceClient
	// Name and Version come from the runtime's Version call, e.g.
	// "containerd" and "1.6.20".
	Name, Version string
}

// Close closes the connection.
func (r *Runtime) Close() error { return r.Conn.Close() }

// Connect dials endpoint and checks that it answers CRI v1 Version and
// ImageFsInfo, so a socket of something else fails here and not at the
// first pull.
func Connect(ctx context.Context, endpoint string) (*Runtime, error) {
	path, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok {
		return nil, fmt.Errorf("runtime endpoint %q: only unix:// sockets are supported", endpoint)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("runtime endpoint %s: %w", endpoint, err)
	}
	conn, err := DialUnix(path, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
		grpc.WithUnaryInterceptor(callDeadline))
	if err != nil {
		return nil, fmt.Errorf("runtime endpoint %s: %w", endpoint, err)
	}
	r := &Runtime{Endpoint: endpoint, Conn: conn, Images: runtimeapi.NewImageServiceClient(conn), Runtime: runtimeapi.NewRuntimeServiceClient(conn)}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := r.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("runtime endpoint %s does not answer CRI v1 Version: %w", endpoint, err)
	}
	if _, err := r.Images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("runtime endpoint %s does not answer CRI v1 ImageFsInfo: %w", endpoint, err)
	}
	r.Name, r.Version = v.RuntimeName, v.RuntimeVersion
	return r, nil
}

// CallTimeout bounds every CRI call but PullImage, whose bounds are the
// task's (timeout, deadline, stall): a runtime that stops answering (a
// wedged containerd) then fails the call, and the pull retries, instead
// of holding its pull slot for ever.
const CallTimeout = 2 * time.Minute

// pullImage is the one call CallTimeout leaves alone.
const pullImage = runtimeapi.ImageService_PullImage_FullMethodName

// callDeadline gives a call without a deadline of its own CallTimeout.
func callDeadline(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if _, ok := ctx.Deadline(); !ok && method != pullImage {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CallTimeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// DialUnix is a gRPC client of a unix socket (a path, or unix:///path):
// the CRI runtime's, or containerd's own API (byte progress, pinning).
func DialUnix(address string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	path := strings.TrimPrefix(address, "unix://")
	return grpc.NewClient("passthrough:///"+path, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}),
	}, opts...)...)
}

// Probe connects to the first of endpoints that answers, and otherwise
// fails with what each one said.
func Probe(ctx context.Context, endpoints []string) (*Runtime, error) {
	var errs []error
	for _, ep := range endpoints {
		r, err := Connect(ctx, ep)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no CRI runtime found; tried %s; set --runtime-endpoint: %w", strings.Join(endpoints, ", "), errors.Join(errs...))
}

// RemoveUnused removes the image name from the node unless a container
// (running or not: the kubelet counts both as using it) uses it, or one of
// the images named in keep is the same image (removing by name removes the
// image with all its names). It reports whether it removed it, and
// otherwise why not.
func (r *Runtime) RemoveUnused(ctx context.Context, name string, keep []string) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := r.imageID(ctx, name)
	if err != nil || id == "" {
		return false, "not on the node", err
	}
	for _, k := range keep {
		if other, err := r.imageID(ctx, k); err == nil && other == id {
			return false, "the same image is held by the tag " + k, nil
		}
	}
	cs, err := r.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return false, "", fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range cs.GetContainers() {
		if c.GetImageRef() == id || c.GetImage().GetImage() == id {
			return false, "container " + c.GetMetadata().GetName() + " (" + c.GetId() + ") uses it", nil
		}
	}
	if _, err := r.Images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: name}}); err != nil {
		return false, "", fmt.Errorf("removing image %s: %w", name, err)
	}
	return true, "", nil
}

func (r *Runtime) imageID(ctx context.Context, name string) (string, error) {
	st, err := r.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: name}})
	if err != nil {
		return "", fmt.Errorf("image status of %s: %w", name, err)
	}
	return st.GetImage().GetId(), nil
}

// ImageFSPath is the mountpoint of the filesystem the runtime stores
// images on, as its CRI ImageFsInfo reports it.
func (r *Runtime) ImageFSPath(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := r.Images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return "", fmt.Errorf("CRI ImageFsInfo: %w", err)
	}
	for _, fs := range info.GetImageFilesystems() {
		if p := fs.GetFsId().GetMountpoint(); p != "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("CRI ImageFsInfo names no image filesystem mountpoint")
}
