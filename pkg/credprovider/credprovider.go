// Package credprovider runs the kubelet's credential provider exec plugins
// (CredentialProviderConfig, kubelet.config.k8s.io/v1; the plugins speak
// credentialprovider.kubelet.k8s.io/v1), so prepull-daemon pulls from ECR,
// Artifact Registry or ACR without pull secrets, as the kubelet on the same
// node does. Configuration, matching and caching follow the kubelet: a
// provider runs only for images its matchImages cover; its answer is
// cached per image, per registry or globally, as the answer says, for its
// cacheDuration (or the provider's defaultCacheDuration). Credentials never
// leave this package but as credentials.Auth values whose Source names the
// provider, never the secret.
package credprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	kubeletconfigv1 "k8s.io/kubelet/config/v1"
	credentialproviderv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
	"sigs.k8s.io/yaml"

	"github.com/prepull/prepull/pkg/credentials"
	"github.com/prepull/prepull/pkg/imageref"
)

// The API versions this package speaks.
const (
	ConfigAPIVersion = "kubelet.config.k8s.io/v1"
	PluginAPIVersion = "credentialprovider.kubelet.k8s.io/v1"
)

// DefaultTimeout bounds one run of a plugin, as the kubelet's does.
const DefaultTimeout = time.Minute

// Providers are the configured plugins, in the config's order.
type Providers struct {
	list []*provider
	// Timeout bounds one plugin run; tests shorten it.
	Timeout time.Duration
	// Now is the clock of the cache; tests set it.
	Now func() time.Time
}

type provider struct {
	cfg  kubeletconfigv1.CredentialProvider
	path string
	env  []string

	mu    sync.Mutex
	cache map[string]cached
	// keyType is the cacheKeyType of the plugin's last answer: calls for
	// images that share that key wait for one run rather than each
	// starting its own; inFlight holds the runs going on, failed the
	// recent failures (a failing plugin is not run again for every
	// attempt of every task).
	keyType  credentialproviderv1.PluginCacheKeyType
	inFlight map[string]*flight
	failed   map[string]failure
}

// flight is one run of the plugin that callers with the same key share.
type flight struct {
	done  chan struct{}
	auths map[string]credentialproviderv1.AuthConfig
	err   error
}

type failure struct {
	err     error
	expires time.Time
}

// MaxOutput bounds what a plugin's answer may be; MaxStderr what of its
// stderr is kept for the log.
const (
	MaxOutput = 1 << 20
	MaxStderr = 64 << 10
)

// NegativeCacheDuration is how long a plugin's failure answers for its key
// before the plugin runs again.
const NegativeCacheDuration = 10 * time.Second

type cached struct {
	auths   map[string]credentialproviderv1.AuthConfig
	expires time.Time
}

// Load reads a CredentialProviderConfig (YAML or JSON) and checks it as the
// kubelet does: unique names that are plain file names of executables in
// binDir, at least one valid matchImages pattern, a defaultCacheDuration,
// and the supported plugin API version. Every problem is reported with the
// provider and the field.
func Load(configPath, binDir string) (*Providers, error) {
	data, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("reading --image-credential-provider-config: %w", err)
	}
	var cfg kubeletconfigv1.CredentialProviderConfig
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s is not a CredentialProviderConfig: %w", configPath, err)
	}
	if cfg.APIVersion != ConfigAPIVersion || cfg.Kind != "CredentialProviderConfig" {
		return nil, fmt.Errorf("%s: apiVersion %q kind %q: want apiVersion %s, kind CredentialProviderConfig", configPath, cfg.APIVersion, cfg.Kind, ConfigAPIVersion)
	}
	if len(cfg.Providers) == 0 {
		return nil, fmt.Errorf("%s: providers is empty", configPath)
	}
	ps := &Providers{Timeout: DefaultTimeout, Now: time.Now}
	seen := map[string]bool{}
	var errs []error
	for i, c := range cfg.Providers {
		field := fmt.Sprintf("%s: providers[%d]", configPath, i)
		switch {
		case c.Name == "":
			errs = append(errs, fmt.Errorf("%s.name is required", field))
			continue
		case c.Name != filepath.Base(c.Name) || c.Name == "." || c.Name == "..":
			errs = append(errs, fmt.Errorf("%s.name %q must be a file name in --image-credential-provider-bin-dir, not a path", field, c.Name))
			continue
		case seen[c.Name]:
			errs = append(errs, fmt.Errorf("%s.name %q is used twice", field, c.Name))
			continue
		}
		seen[c.Name] = true
		field += " (" + c.Name + ")"
		if len(c.MatchImages) == 0 {
			errs = append(errs, fmt.Errorf("%s.matchImages is required", field))
		}
		for _, m := range c.MatchImages {
			if err := validPattern(m); err != nil {
				errs = append(errs, fmt.Errorf("%s.matchImages %q: %w", field, m, err))
			}
		}
		if c.DefaultCacheDuration == nil {
			errs = append(errs, fmt.Errorf("%s.defaultCacheDuration is required", field))
		} else if c.DefaultCacheDuration.Duration < 0 {
			errs = append(errs, fmt.Errorf("%s.defaultCacheDuration must not be negative", field))
		}
		if c.APIVersion != PluginAPIVersion {
			errs = append(errs, fmt.Errorf("%s.apiVersion %q is not supported: use %s", field, c.APIVersion, PluginAPIVersion))
		}
		if c.TokenAttributes != nil {
			errs = append(errs, fmt.Errorf("%s.tokenAttributes: service-account tokens for image pulls are bound to pods, and prepull pulls for no pod; remove it or use another provider entry for prepull", field))
		}
		path := filepath.Join(binDir, c.Name)
		if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%s: no executable %s in --image-credential-provider-bin-dir", field, path))
		}
		env := os.Environ()
		for _, e := range c.Env {
			env = append(env, e.Name+"="+e.Value)
		}
		ps.list = append(ps.list, &provider{cfg: c, path: path, env: env, cache: map[string]cached{}, inFlight: map[string]*flight{}, failed: map[string]failure{}})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ps, nil
}

// validPattern checks a matchImages entry: a host (globs allowed per
// label), optional port and path.
func validPattern(p string) error {
	if p == "" || strings.ContainsAny(p, " \t") || strings.Contains(p, "://") {
		return errors.New("want a registry host with optional port and path, e.g. *.dkr.ecr.*.amazonaws.com or registry.io:5000/team")
	}
	host, _, _ := strings.Cut(p, "/")
	if strings.Contains(host, ":") {
		_, port, _ := strings.Cut(host, ":")
		if port == "" || strings.ContainsAny(port, "*?[") {
			return errors.New("a port must be a number; globs are allowed only in the host's labels")
		}
	}
	return nil
}

// Lookup returns the credentials the matching providers give for image,
// in the config's order, and the providers' failures, each naming its
// provider ("credential provider X failed: ..."). A failure of one provider
// does not hide another's credentials.
func (ps *Providers) Lookup(ctx context.Context, image string) ([]credentials.Auth, error) {
	if ps == nil {
		return nil, nil
	}
	var out []credentials.Auth
	var errs []error
	for _, p := range ps.list {
		if !p.matches(image) {
			continue
		}
		auths, err := p.credentials(ctx, ps, image)
		if err != nil {
			errs = append(errs, fmt.Errorf("credential provider %s failed: %w", p.cfg.Name, err))
			continue
		}
		var k credentials.Keyring
		for pattern, a := range auths {
			k.AddAuth(pattern, credentials.Auth{Source: "credential provider " + p.cfg.Name + ":" + pattern, Username: a.Username, Password: a.Password})
		}
		out = append(out, k.Lookup(image)...)
	}
	return out, errors.Join(errs...)
}

func (p *provider) matches(image string) bool {
	for _, m := range p.cfg.MatchImages {
		if credentials.Matches(m, image) {
			return true
		}
	}
	return false
}

// credentials answers from the cache, or runs the plugin: once per key at
// a time, callers with the same key waiting for that run, and a failure
// answers for its key for NegativeCacheDuration.
func (p *provider) credentials(ctx context.Context, ps *Providers, image string) (map[string]credentialproviderv1.AuthConfig, error) {
	now := ps.Now()
	host, _ := imageref.Repository(image)
	p.mu.Lock()
	for _, key := range []string{"image:" + image, "registry:" + host, "global"} {
		if c, ok := p.cache[key]; ok {
			if now.Before(c.expires) {
				p.mu.Unlock()
				return c.auths, nil
			}
			delete(p.cache, key)
		}
	}
	key := cacheKey(p.keyType, image, host)
	if f, ok := p.failed[key]; ok {
		if now.Before(f.expires) {
			p.mu.Unlock()
			return nil, f.err
		}
		delete(p.failed, key)
	}
	if f, ok := p.inFlight[key]; ok {
		p.mu.Unlock()
		select {
		case <-f.done:
			return f.auths, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	p.inFlight[key] = f
	p.mu.Unlock()

	resp, err := p.exec(ctx, ps.Timeout, image)
	p.mu.Lock()
	delete(p.inFlight, key)
	if err != nil {
		f.err = err
		if ctx.Err() == nil {
			p.failed[key] = failure{err: err, expires: now.Add(NegativeCacheDuration)}
		}
	} else {
		f.auths = resp.Auth
		p.keyType = resp.CacheKeyType
		ttl := p.cfg.DefaultCacheDuration.Duration
		if resp.CacheDuration != nil {
			ttl = resp.CacheDuration.Duration
		}
		if ttl > 0 {
			p.cache[cacheKey(resp.CacheKeyType, image, host)] = cached{auths: resp.Auth, expires: now.Add(ttl)}
		}
	}
	p.mu.Unlock()
	close(f.done)
	return f.auths, f.err
}

// cacheKey is where an answer of keyType for image is kept; Image when
// the plugin has not answered yet.
func cacheKey(keyType credentialproviderv1.PluginCacheKeyType, image, host string) string {
	switch keyType {
	case credentialproviderv1.RegistryPluginCacheKeyType:
		return "registry:" + host
	case credentialproviderv1.GlobalPluginCacheKeyType:
		return "global"
	}
	return "image:" + image
}

// capped keeps the first max bytes written. Past them it keeps nothing
// more and, when it has a stop, stops the writer (the plugin) at once.
type capped struct {
	buf      bytes.Buffer
	max      int
	overflow bool
	stop     func()
}

var errTooLong = errors.New("output too long")

func (c *capped) Write(b []byte) (int, error) {
	room := c.max - c.buf.Len()
	c.buf.Write(b[:max(0, min(room, len(b)))])
	if len(b) <= room {
		return len(b), nil
	}
	c.overflow = true
	if c.stop != nil {
		c.stop()
		return 0, errTooLong
	}
	return len(b), nil
}

// exec runs the plugin once with the request on stdin and reads its answer.
func (p *provider) exec(ctx context.Context, timeout time.Duration, image string) (*credentialproviderv1.CredentialProviderResponse, error) {
	req, err := json.Marshal(credentialproviderv1.CredentialProviderRequest{
		TypeMeta: typeMeta("CredentialProviderRequest", p.cfg.APIVersion),
		Image:    image,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.path, p.cfg.Args...)
	cmd.Env = p.env
	cmd.Stdin = bytes.NewReader(req)
	// Output is bounded: a plugin that floods must not fill the daemon's
	// memory. Its stderr may hold anything (a token in a debug line), so
	// it goes to the log only, never into a status or an Event.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	stdout, stderr := &capped{max: MaxOutput, stop: stop}, &capped{max: MaxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// A plugin that forks and leaves a child holding stdout must not hang us.
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if stderr.buf.Len() > 0 {
		klog.FromContext(ctx).Info("Credential provider plugin wrote to stderr", "provider", p.cfg.Name, "image", image, "stderr", firstLine(stderr.buf.String()))
	}
	switch {
	case stdout.overflow:
		return nil, fmt.Errorf("its answer is larger than %d bytes; it was stopped", MaxOutput)
	case ctx.Err() == context.DeadlineExceeded:
		return nil, fmt.Errorf("no answer within %s", timeout)
	case err != nil:
		return nil, fmt.Errorf("%v (its stderr is in prepull-daemon's log)", err)
	}
	var resp credentialproviderv1.CredentialProviderResponse
	if err := json.Unmarshal(stdout.buf.Bytes(), &resp); err != nil {
		// The output may hold a credential: say only where it broke.
		return nil, fmt.Errorf("its answer is not a CredentialProviderResponse (invalid JSON: %s)", jsonError(err))
	}
	if resp.APIVersion != p.cfg.APIVersion || resp.Kind != "CredentialProviderResponse" {
		return nil, fmt.Errorf("it answered apiVersion %q kind %q, want apiVersion %s kind CredentialProviderResponse", resp.APIVersion, resp.Kind, p.cfg.APIVersion)
	}
	switch resp.CacheKeyType {
	case credentialproviderv1.ImagePluginCacheKeyType, credentialproviderv1.RegistryPluginCacheKeyType, credentialproviderv1.GlobalPluginCacheKeyType:
	default:
		return nil, fmt.Errorf("it answered cacheKeyType %q, want Image, Registry or Global", resp.CacheKeyType)
	}
	if resp.CacheDuration != nil && resp.CacheDuration.Duration < 0 {
		return nil, errors.New("it answered a negative cacheDuration")
	}
	return &resp, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 256 {
		s = s[:256] + "..."
	}
	if s == "" {
		return "(no output on stderr)"
	}
	return s
}

func jsonError(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Sprintf("field %s has the wrong type", typ.Field)
	}
	return "unreadable"
}

func typeMeta(kind, apiVersion string) metav1.TypeMeta {
	return metav1.TypeMeta{Kind: kind, APIVersion: apiVersion}
}
