// Package peers stands in, for the waves benchmark, for a registry with a
// limited egress and a peer-to-peer mirror in front of it (Spegel's kind):
// a node's pull asks the mirror, which serves the image from a node that
// already holds it, or else passes the registry's answer through. Both are
// real HTTP servers on 127.0.0.1 and count the bytes they serve; the
// hollow nodes' image service downloads every byte. It keeps no content.
package peers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Config sizes the stand-ins.
type Config struct {
	// ImageBytes is every image's size.
	ImageBytes int64
	// RegistryBytesPerSecond is the registry's egress, shared by all its
	// downloads; PeerBytesPerSecond each peer download's own rate.
	RegistryBytesPerSecond, PeerBytesPerSecond int64
}

// Swarm is the registry, the mirror and what each node holds.
type Swarm struct {
	cfg                        Config
	registry, mirror           *http.Server
	registryURL, mirrorURL     string
	registryBytes, mirrorBytes atomic.Int64
	egress                     *rate.Limiter

	mu      sync.Mutex
	holders map[string]map[string]bool // image -> nodes that pulled it
}

const chunk = 64 << 10

var zeros = make([]byte, chunk)

// Start serves the registry and the mirror until Stop.
func Start(cfg Config) (*Swarm, error) {
	s := &Swarm{cfg: cfg, holders: map[string]map[string]bool{},
		egress: rate.NewLimiter(rate.Limit(cfg.RegistryBytesPerSecond), chunk)}
	var err error
	if s.registry, s.registryURL, err = serve(http.HandlerFunc(s.serveRegistry)); err != nil {
		return nil, err
	}
	if s.mirror, s.mirrorURL, err = serve(http.HandlerFunc(s.serveMirror)); err != nil {
		_ = s.registry.Close()
		return nil, err
	}
	return s, nil
}

func serve(h http.Handler) (*http.Server, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv, "http://" + l.Addr().String(), nil
}

// Stop ends both servers.
func (s *Swarm) Stop() {
	_ = s.registry.Close()
	_ = s.mirror.Close()
}

// RegistryBytes and MirrorBytes are the bytes each served so far (the
// mirror's count leaves out what it passed through from the registry).
func (s *Swarm) RegistryBytes() int64 { return s.registryBytes.Load() }
func (s *Swarm) MirrorBytes() int64   { return s.mirrorBytes.Load() }

// send writes n bytes, each chunk after wait allows it.
func send(ctx context.Context, w io.Writer, n int64, wait func(context.Context, int) error, count *atomic.Int64) {
	for n > 0 {
		c := int(min(n, chunk))
		if err := wait(ctx, c); err != nil {
			return
		}
		m, err := w.Write(zeros[:c])
		count.Add(int64(m))
		if err != nil {
			return
		}
		n -= int64(m)
	}
}

func (s *Swarm) serveRegistry(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Length", fmt.Sprint(s.cfg.ImageBytes))
	send(req.Context(), w, s.cfg.ImageBytes, s.egress.WaitN, &s.registryBytes)
}

// serveMirror serves /<image>?node=<asking node>: from a peer when another
// node holds the image, else from the registry.
func (s *Swarm) serveMirror(w http.ResponseWriter, req *http.Request) {
	image := strings.TrimPrefix(req.URL.Path, "/")
	node := req.URL.Query().Get("node")
	s.mu.Lock()
	peer := false
	for n := range s.holders[image] {
		if n != node {
			peer = true
			break
		}
	}
	s.mu.Unlock()
	if peer {
		// Each peer download has its own rate: peers serve in parallel.
		own := rate.NewLimiter(rate.Limit(s.cfg.PeerBytesPerSecond), chunk)
		w.Header().Set("Content-Length", fmt.Sprint(s.cfg.ImageBytes))
		send(req.Context(), w, s.cfg.ImageBytes, own.WaitN, &s.mirrorBytes)
		return
	}
	up, err := http.NewRequestWithContext(req.Context(), http.MethodGet, s.registryURL+"/"+url.PathEscape(image), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := http.DefaultClient.Do(up)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Length", resp.Header.Get("Content-Length"))
	_, _ = io.Copy(w, resp.Body)
}

// Images is one node's image service: a pull downloads the image through
// the mirror, and then the node holds it (and serves it to its peers).
func (s *Swarm) Images(node string) *NodeImages {
	return &NodeImages{s: s, node: node, present: map[string]string{}}
}

// NodeImages is a node's CRI image service (puller.ImageService).
type NodeImages struct {
	s    *Swarm
	node string

	mu      sync.Mutex
	present map[string]string
}

// PullImage downloads the image in full through the mirror.
func (n *NodeImages) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest, _ ...grpc.CallOption) (*runtimeapi.PullImageResponse, error) {
	image := req.GetImage().GetImage()
	get, err := http.NewRequestWithContext(ctx, http.MethodGet, n.s.mirrorURL+"/"+url.PathEscape(image)+"?node="+url.QueryEscape(n.node), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(get)
	if err != nil {
		return nil, fmt.Errorf("pulling %s through the mirror: %w", image, err)
	}
	defer resp.Body.Close()
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != n.s.cfg.ImageBytes {
		return nil, fmt.Errorf("pulling %s through the mirror: %d of %d bytes: %v", image, got, n.s.cfg.ImageBytes, err)
	}
	sum := sha256.Sum256([]byte(image))
	id := "sha256:" + hex.EncodeToString(sum[:])
	n.mu.Lock()
	n.present[image] = id
	n.mu.Unlock()
	n.s.mu.Lock()
	if n.s.holders[image] == nil {
		n.s.holders[image] = map[string]bool{}
	}
	n.s.holders[image][n.node] = true
	n.s.mu.Unlock()
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

// ImageStatus reports whether the node pulled the image.
func (n *NodeImages) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if id, ok := n.present[req.GetImage().GetImage()]; ok {
		return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: id, RepoTags: []string{req.GetImage().GetImage()}}}, nil
	}
	return &runtimeapi.ImageStatusResponse{}, nil
}
