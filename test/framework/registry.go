package framework

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/prepull/prepull/hack/images/ociimage"
)

// Registry is a real OCI registry (go-containerregistry's pkg/registry) on
// 127.0.0.1 with basic auth, serving over plain HTTP.
type Registry struct {
	// Host is 127.0.0.1:<port>.
	Host               string
	Username, Password string
	// BytesPerSecond throttles blob downloads when > 0, so pulls take long
	// enough to watch their progress.
	BytesPerSecond atomic.Int64
	// Stall makes blob downloads hang until the client gives up.
	Stall atomic.Bool
	// BlobBytes counts the blob bytes served, RangedGets the blob GETs
	// that asked for a range (a client resuming a download).
	BlobBytes, RangedGets atomic.Int64
	blobs                 *memBlobs
	// cuts are the repositories whose first download of each blob stops
	// after some bytes (CutBlobs).
	cuts    sync.Map // repository -> *cut
	srv     *http.Server
	handler http.Handler

	mu sync.Mutex
	// layersInFlight counts, per Host header, the layer downloads running
	// (blobs over layerBytes, so not configs); maxLayers the most at once.
	layersInFlight, maxLayers map[string]int
	// throttle holds, per repository, the 429 window (Throttle);
	// gets logs each blob GET of a repository.
	throttle map[string]*throttleWindow
	gets     map[string][]BlobGet
}

// layerBytes tells layers from image configs (a few hundred bytes).
const layerBytes = 4 << 10

// BlobGet is one blob GET the registry answered.
type BlobGet struct {
	At     time.Time
	Status int
}

type throttleWindow struct {
	length time.Duration
	start  time.Time // zero until the first blob request
	status int       // what the window answers
}

// Throttle makes the registry answer every blob request of repo with 429
// Too Many Requests and a Retry-After (the seconds left, rounded up) for
// window from the first such request on; then it serves them again.
func (r *Registry) Throttle(repo string, window time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.throttle[repo] = &throttleWindow{length: window, status: http.StatusTooManyRequests}
}

// FailBlobs makes the registry answer every blob request of repo with
// status (a 5xx: a registry or its storage backend failing) for window
// from the first such request on; then it serves them again.
func (r *Registry) FailBlobs(repo string, window time.Duration, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.throttle[repo] = &throttleWindow{length: window, status: status}
}

// BlobGets are the blob GETs of repo so far, in order.
func (r *Registry) BlobGets(repo string) []BlobGet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]BlobGet(nil), r.gets[repo]...)
}

// MaxLayerDownloads is the most layer downloads that ran at once for
// clients that named the registry host (the Host header, e.g.
// localhost:5000 or 127.0.0.1:5000).
func (r *Registry) MaxLayerDownloads(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxLayers[host]
}

// throttled429 answers a blob request of a throttled (or failing)
// repository and reports whether it did.
func (r *Registry) throttled429(w http.ResponseWriter, req *http.Request, repo string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	tw, ok := r.throttle[repo]
	if !ok {
		if req.Method == http.MethodGet {
			r.gets[repo] = append(r.gets[repo], BlobGet{At: time.Now(), Status: http.StatusOK})
		}
		return false
	}
	now := time.Now()
	if tw.start.IsZero() {
		tw.start = now
	}
	left := tw.start.Add(tw.length).Sub(now)
	if left <= 0 {
		if req.Method == http.MethodGet {
			r.gets[repo] = append(r.gets[repo], BlobGet{At: now, Status: http.StatusOK})
		}
		return false
	}
	if req.Method == http.MethodGet {
		r.gets[repo] = append(r.gets[repo], BlobGet{At: now, Status: tw.status})
	}
	if tw.status != http.StatusTooManyRequests {
		http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"backend storage unavailable"}]}`, tw.status)
		return true
	}
	w.Header().Set("Retry-After", fmt.Sprint(int((left+time.Second-1)/time.Second)))
	http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
	return true
}

// layerStarted counts a layer download of the client's host until done is
// called.
func (r *Registry) layerStarted(req *http.Request) (done func()) {
	h, err := v1.NewHash(req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:])
	if err != nil {
		return func() {}
	}
	if data, ok := r.blobs.get(h); !ok || len(data) < layerBytes {
		return func() {}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.layersInFlight[req.Host]++
	r.maxLayers[req.Host] = max(r.maxLayers[req.Host], r.layersInFlight[req.Host])
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.layersInFlight[req.Host]--
	}
}

type cut struct {
	after int64
	done  sync.Map // blob path -> true once cut
}

// CutBlobs makes the first whole-blob download of each blob of repo send
// after bytes and then hang, sending nothing more, until the client gives
// up: a registry or link that stops mid-blob. Later downloads of the blob
// are served in full.
func (r *Registry) CutBlobs(repo string, after int64) {
	r.cuts.Store(repo, &cut{after: after})
}

// cutAfter says how many bytes this blob GET may send before it hangs, or
// -1 for all of them.
func (r *Registry) cutAfter(req *http.Request) int64 {
	if req.Header.Get("Range") != "" {
		return -1
	}
	repo, _, ok := strings.Cut(strings.TrimPrefix(req.URL.Path, "/v2/"), "/blobs/")
	if !ok {
		return -1
	}
	c, ok := r.cuts.Load(repo)
	if !ok {
		return -1
	}
	if _, seen := c.(*cut).done.LoadOrStore(req.URL.Path, true); seen {
		return -1
	}
	return c.(*cut).after
}

// StartRegistry serves a registry until Stop.
func StartRegistry(username, password string) (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: l.Addr().String(), Username: username, Password: password,
		layersInFlight: map[string]int{}, maxLayers: map[string]int{}, throttle: map[string]*throttleWindow{}, gets: map[string][]BlobGet{}}
	r.blobs = &memBlobs{m: map[v1.Hash][]byte{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(r.blobs))
	r.handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Repositories under public/ are pullable anonymously, like a public
		// mirror; everything else needs the credentials.
		anonymous := strings.HasPrefix(req.URL.Path, "/v2/public/") && (req.Method == http.MethodGet || req.Method == http.MethodHead)
		if u, p, ok := req.BasicAuth(); !anonymous && (!ok || u != r.Username || p != r.Password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="prepull-test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if repo, _, ok := strings.Cut(strings.TrimPrefix(req.URL.Path, "/v2/"), "/blobs/"); ok && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
			if r.throttled429(w, req, repo) {
				return
			}
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			defer r.layerStarted(req)()
			if r.Stall.Load() {
				<-req.Context().Done()
				return
			}
			w = &counted{ResponseWriter: w, n: &r.BlobBytes, cut: r.cutAfter(req), ctx: req.Context()}
			if bps := r.BytesPerSecond.Load(); bps > 0 {
				w = &throttled{ResponseWriter: w, bps: bps}
			}
			if req.Header.Get("Range") != "" {
				r.RangedGets.Add(1)
				// go-containerregistry's registry refuses ranges (416);
				// real registries serve them, and containerd asks for one
				// when it resumes a download (say, after a restart).
				r.serveRange(w, req)
				return
			}
		}
		inner.ServeHTTP(w, req)
	})
	r.serve(l)
	return r, nil
}

func (r *Registry) serve(l net.Listener) {
	r.srv = &http.Server{Handler: r.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(l) }()
}

// Stop ends the registry; its images stay for Start.
func (r *Registry) Stop() { _ = r.srv.Close() }

// Start serves the registry again on the same address with the same
// images, after Stop.
func (r *Registry) Start() error {
	l, err := net.Listen("tcp", r.Host)
	if err != nil {
		return fmt.Errorf("listening on %s again: %w", r.Host, err)
	}
	r.serve(l)
	return nil
}

// PushRandom pushes an image of layers random layers of layerSize bytes
// each as repo:tag and returns its digest.
func (r *Registry) PushRandom(repo, tag string, layers int, layerSize int64) (v1.Hash, error) {
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		return v1.Hash{}, err
	}
	ref, err := name.ParseReference(fmt.Sprintf("%s/%s:%s", r.Host, repo, tag), name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	saved := r.BytesPerSecond.Swap(0)
	defer r.BytesPerSecond.Store(saved)
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password})); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return img.Digest()
}

// PushLyingSizes pushes an image of layers random layers whose manifest
// declares the sizes size gives (from each layer's index and real size),
// as a broken or hostile registry may, and returns the manifest's digest.
func (r *Registry) PushLyingSizes(repo, tag string, layers int, layerSize int64, size func(i int, real int64) int64) (v1.Hash, error) {
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		return v1.Hash{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	auth := remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password})
	honest, err := name.ParseReference(fmt.Sprintf("%s/%s:%s-honest", r.Host, repo, tag), name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	// The layers and config go up with an honest manifest under another
	// tag; the lying manifest then names them.
	if err := remote.Write(honest, img, remote.WithContext(ctx), auth); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", honest, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Hash{}, err
	}
	m = m.DeepCopy()
	for i := range m.Layers {
		m.Layers[i].Size = size(i, m.Layers[i].Size)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, err
	}
	ref, err := name.ParseReference(fmt.Sprintf("%s/%s:%s", r.Host, repo, tag), name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(ref, rawManifest{raw: raw, mediaType: m.MediaType}, remote.WithContext(ctx), auth); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing the lying manifest %s: %w", ref, err)
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	return h, err
}

// rawManifest is a manifest pushed as its bytes are.
type rawManifest struct {
	raw       []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

// PushBinary packages a static linux binary as a one-layer image (the
// binary is its entrypoint) and pushes it as repoTag.
func (r *Registry) PushBinary(ctx context.Context, repoTag, binary string) error {
	return r.PushBinaryPadded(ctx, repoTag, binary, 0)
}

// PushBinaryPadded is PushBinary with a layer of padBytes random bytes on
// top, so images of one binary differ and take a chosen time to pull.
func (r *Registry) PushBinaryPadded(ctx context.Context, repoTag, binary string, padBytes int64) error {
	img, err := ociimage.Build(ociimage.Spec{Binary: binary, Name: filepath.Base(binary), User: "0:0",
		Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}})
	if err != nil {
		return err
	}
	if padBytes > 0 {
		pad, err := random.Layer(padBytes, types.OCILayer)
		if err != nil {
			return err
		}
		if img, err = mutate.AppendLayers(img, pad); err != nil {
			return err
		}
	}
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password})); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}

// throttled writes at most bps bytes per second.
type throttled struct {
	http.ResponseWriter
	bps int64
}

func (t *throttled) Write(p []byte) (int, error) {
	written := 0
	chunk := int(max(t.bps/20, 1))
	for len(p) > 0 {
		n := min(chunk, len(p))
		m, err := t.ResponseWriter.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		if f, ok := t.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[n:]
		time.Sleep(time.Duration(int64(n) * int64(time.Second) / t.bps))
	}
	return written, nil
}

// counted counts the bytes written, and once cut of them are written (cut
// >= 0) sends nothing more until the request ends.
type counted struct {
	http.ResponseWriter
	n   *atomic.Int64
	cut int64
	ctx context.Context
}

func (c *counted) Write(p []byte) (int, error) {
	if c.cut >= 0 && int64(len(p)) > c.cut {
		p = p[:c.cut]
	}
	m, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(m))
	if c.cut >= 0 {
		c.cut -= int64(m)
		if c.cut == 0 {
			if f, ok := c.ResponseWriter.(http.Flusher); ok {
				f.Flush()
			}
			<-c.ctx.Done()
			return m, c.ctx.Err()
		}
	}
	return m, err
}

func (c *counted) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// serveRange answers a ranged blob GET from the blob in memory.
func (r *Registry) serveRange(w http.ResponseWriter, req *http.Request) {
	h, err := v1.NewHash(req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	data, ok := r.blobs.get(h)
	if !ok {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", h.String())
	http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(data))
}

// memBlobs keeps the registry's blobs in memory, where a ranged read can
// serve them without a copy.
type memBlobs struct {
	mu sync.Mutex
	m  map[v1.Hash][]byte
}

func (b *memBlobs) get(h v1.Hash) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, ok := b.m[h]
	return data, ok
}

func (b *memBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	data, ok := b.get(h)
	if !ok {
		return nil, errBlobNotFound
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (b *memBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	data, ok := b.get(h)
	if !ok {
		return 0, errBlobNotFound
	}
	return int64(len(data)), nil
}

func (b *memBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[h] = data
	return nil
}

// errBlobNotFound is the registry package's own not-found error, which it
// answers with a 404.
var errBlobNotFound = registry.ErrNotFound
