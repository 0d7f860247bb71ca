// Package framework runs a real etcd and kube-apiserver for integration
// tests, with prepull's CRDs installed.
//
// The binaries come from hack/build-controlplane.sh, which builds them from
// pinned Go modules into a cache outside the repository; Start looks for them
// there (or in $PREPULL_CONTROLPLANE_BIN) and says how to build them when
// they are missing.
package framework

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubernetesVersion is the release the control plane is built from; it keys
// the binary cache. Keep it in step with hack/tools/controlplane/go.mod.
const KubernetesVersion = "v1.37.2"

// BinDir is where hack/build-controlplane.sh puts etcd, kube-apiserver and
// kubectl.
func BinDir() string {
	return cachedBinDir("PREPULL_CONTROLPLANE_BIN", "controlplane", KubernetesVersion)
}

// cachedBinDir is where a hack/build-*.sh script caches the binaries of
// one version of what, as the script computes it: $env when set, else
// under $XDG_CACHE_HOME (or ~/.cache)/prepull.
func cachedBinDir(env, what, version string) string {
	if dir := os.Getenv(env); dir != "" {
		return dir
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "prepull", what, version, "bin")
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// Config reaches the apiserver as a member of system:masters.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for kubectl.
	Kubeconfig string
	// Dir holds the data, certificates and logs; it is removed by Stop.
	Dir string

	// CAFile holds the apiserver's serving CA; SAKeyFile its service-account
	// signing key (kube-controller-manager needs both).
	CAFile, SAKeyFile string

	opts     ControlPlaneOptions
	procs    []*process
	stopOnce sync.Once
	// The apiserver's command line, to start it again as it was.
	apiserverPath string
	apiserverArgs []string
	apiserverRuns int
}

// ControlPlaneOptions turn the test control plane into one a real cluster
// can join. The zero value is the plain one the integration tests use.
type ControlPlaneOptions struct {
	// AdvertiseAddress is the address the apiserver serves on (all
	// addresses, with this one in its certificate) and publishes for the
	// kubernetes Service. Empty: 127.0.0.1 only, no Service endpoints.
	AdvertiseAddress string
	// Tokens are extra bearer tokens, e.g. for kubelets (system:node:<name>
	// in system:nodes) and kube-controller-manager.
	Tokens []Token
	// RealCluster enables what pods on real kubelets need: Node
	// authorization, the NodeRestriction and ServiceAccount admission
	// plugins.
	RealCluster bool
}

// Token is one line of the apiserver's token file.
type Token struct {
	Token, User string
	Groups      []string
}

type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// Start launches etcd and kube-apiserver on free loopback ports under a new
// temporary directory and waits until the apiserver is ready. The caller
// must call Stop, which also runs if ctx is cancelled.
func Start(ctx context.Context) (*ControlPlane, error) {
	return StartWithOptions(ctx, ControlPlaneOptions{})
}

// StartWithOptions is Start for a control plane shaped by opts.
func StartWithOptions(ctx context.Context, opts ControlPlaneOptions) (*ControlPlane, error) {
	bin := BinDir()
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return nil, fmt.Errorf("control plane binary %s not found in %s: run hack/build-controlplane.sh (or `make controlplane`) first: %w", name, bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "prepull-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("creating control plane directory: %w", err)
	}
	cp := &ControlPlane{Dir: dir, opts: opts}
	if err := cp.start(ctx, bin); err != nil {
		logs := cp.Logs()
		cp.Stop()
		return nil, fmt.Errorf("%w\n%s", err, logs)
	}
	go func() {
		<-ctx.Done()
		cp.Stop()
	}()
	return cp, nil
}

func (cp *ControlPlane) start(ctx context.Context, bin string) error {
	// A port picked free may be taken before the server binds it; a new
	// pick on each try makes that race harmless.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var etcdURL string
		etcdURL, err = cp.startEtcd(bin, attempt)
		if err != nil {
			continue
		}
		if err = cp.startAPIServer(ctx, bin, etcdURL, attempt); err == nil {
			return nil
		}
		cp.stopProcesses()
	}
	return err
}

func (cp *ControlPlane) startEtcd(bin string, attempt int) (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	p, err := cp.launch(fmt.Sprintf("etcd-%d", attempt), filepath.Join(bin, "etcd"),
		"--name", "prepull-test",
		"--data-dir", filepath.Join(cp.Dir, fmt.Sprintf("etcd-%d", attempt)),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "prepull-test="+peer,
		"--unsafe-no-fsync",
		"--log-level", "warn",
	)
	if err != nil {
		return "", err
	}
	err = waitFor(30*time.Second, p, func() bool {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return "", fmt.Errorf("etcd did not become healthy: %w", err)
	}
	return client, nil
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, bin, etcdURL string, attempt int) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	certDir := filepath.Join(cp.Dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return fmt.Errorf("creating cert dir: %w", err)
	}
	token, err := RandomToken()
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(cp.Dir, "tokens.csv")
	tokens := token + ",prepull-admin,prepull-admin,system:masters\n"
	for _, t := range cp.opts.Tokens {
		tokens += fmt.Sprintf("%s,%s,%s,%q\n", t.Token, t.User, t.User, strings.Join(t.Groups, ","))
	}
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return fmt.Errorf("writing token file: %w", err)
	}
	saKey := filepath.Join(cp.Dir, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return err
	}
	bind, advertise := "127.0.0.1", "127.0.0.1"
	extra := []string{"--endpoint-reconciler-type", "none", "--disable-admission-plugins", "ServiceAccount", "--authorization-mode", "RBAC"}
	if a := cp.opts.AdvertiseAddress; a != "" {
		bind, advertise = "0.0.0.0", a
		extra = []string{"--kubelet-preferred-address-types", "InternalIP"}
	}
	if cp.opts.RealCluster {
		extra = append(extra, "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction")
	}
	host := "https://" + net.JoinHostPort(advertise, strconv.Itoa(ports[0]))
	cp.apiserverPath = filepath.Join(bin, "kube-apiserver")
	cp.apiserverArgs = append([]string{
		"--etcd-servers", etcdURL,
		"--bind-address", bind,
		"--advertise-address", advertise,
		"--secure-port", strconv.Itoa(ports[0]),
		"--cert-dir", certDir,
		"--token-auth-file", tokenFile,
		"--service-account-issuer", "https://prepull.test",
		"--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--v", "1",
	}, extra...)
	p, err := cp.launch(fmt.Sprintf("kube-apiserver-%d", attempt), cp.apiserverPath, cp.apiserverArgs...)
	if err != nil {
		return err
	}
	cp.apiserverRuns = attempt + 1
	caFile := filepath.Join(certDir, "apiserver.crt")
	var ca []byte
	err = waitFor(60*time.Second, p, func() bool {
		if ca == nil {
			if ca, _ = os.ReadFile(caFile); len(ca) == 0 {
				ca = nil
				return false
			}
		}
		cfg := &rest.Config{Host: host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
		client, err := rest.HTTPClientFor(cfg)
		if err != nil {
			return false
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver did not become ready: %w", err)
	}
	cp.Config = &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             200,
		Burst:           400,
	}
	cp.CAFile, cp.SAKeyFile = caFile, saKey
	cp.Kubeconfig = filepath.Join(cp.Dir, "kubeconfig")
	return WriteKubeconfig(cp.Kubeconfig, host, token, ca)
}

// launch starts a binary with its output in a log file under Dir. Children
// get SIGKILL if the test process dies, so no server outlives a crashed test.
func (cp *ControlPlane) launch(name, path string, args ...string) (*process, error) {
	logPath := filepath.Join(cp.Dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	cp.procs = append(cp.procs, p)
	return p, nil
}

// waitFor polls ready until it holds, the process exits or the deadline
// passes.
func waitFor(timeout time.Duration, p *process, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", p.name, timeout)
		}
	}
}

// StopAPIServer stops kube-apiserver (etcd keeps running and keeps the
// data), so clients see the API unreachable until StartAPIServer.
func (cp *ControlPlane) StopAPIServer() {
	for _, p := range cp.procs {
		if strings.HasPrefix(p.name, "kube-apiserver-") && !exited(p) {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
				<-p.done
			}
		}
	}
}

// StartAPIServer starts kube-apiserver again with the command line it
// first had: same address, certificates, tokens and etcd, so every client
// and kubeconfig made before keeps working. It waits until it is ready.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	if cp.Pid("kube-apiserver") != 0 {
		return fmt.Errorf("kube-apiserver is already running")
	}
	name := fmt.Sprintf("kube-apiserver-%d", cp.apiserverRuns)
	cp.apiserverRuns++
	p, err := cp.launch(name, cp.apiserverPath, cp.apiserverArgs...)
	if err != nil {
		return err
	}
	// The address was ours a moment ago; a few tries ride out a socket
	// still in TIME_WAIT.
	return cp.waitForOK(ctx, 90*time.Second, p, "/readyz")
}

// waitForOK polls path on the apiserver as admin until it answers 200,
// p exits or timeout passes.
func (cp *ControlPlane) waitForOK(ctx context.Context, timeout time.Duration, p *process, path string) error {
	client, err := rest.HTTPClientFor(cp.Config)
	if err != nil {
		return err
	}
	return waitFor(timeout, p, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cp.Config.Host+path, nil)
		req.Header.Set("Authorization", "Bearer "+cp.Config.BearerToken)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// StartControllerManager runs kube-controller-manager with the controllers
// a real cluster has that prepull's objects meet: namespace (so deleted
// namespaces finish), serviceaccount and its tokens, and the garbage
// collector. It needs the node binaries (hack/build-controlplane.sh node)
// and stops with the control plane.
func (cp *ControlPlane) StartControllerManager(ctx context.Context) error {
	bin := filepath.Join(BinDir(), "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("kube-controller-manager not found: run `hack/build-controlplane.sh node` first: %w", err)
	}
	p, err := cp.launch("kube-controller-manager-0", bin,
		"--kubeconfig", cp.Kubeconfig, "--authentication-kubeconfig", cp.Kubeconfig, "--authorization-kubeconfig", cp.Kubeconfig,
		"--controllers", "namespace-controller,serviceaccount-controller,serviceaccount-token-controller,garbage-collector-controller,root-ca-certificate-publisher-controller",
		"--service-account-private-key-file", cp.SAKeyFile, "--root-ca-file", cp.CAFile,
		"--leader-elect=false", "--secure-port=0", "--v=1")
	if err != nil {
		return err
	}
	// Ready when the serviceaccount controller made default's account.
	return cp.waitForOK(ctx, 60*time.Second, p, "/api/v1/namespaces/default/serviceaccounts/default")
}

// Pid is the process ID of the running server named name ("etcd" or
// "kube-apiserver"), or 0 when none runs.
func (cp *ControlPlane) Pid(name string) int {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		if strings.HasPrefix(p.name, name+"-") && !exited(p) {
			return p.cmd.Process.Pid
		}
	}
	return 0
}

func exited(p *process) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Logs returns the tail of every process log, for failure reports.
func (cp *ControlPlane) Logs() string {
	var out string
	for _, p := range cp.procs {
		data, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		if len(data) > 8000 {
			data = data[len(data)-8000:]
		}
		out += fmt.Sprintf("----- %s (%s) -----\n%s\n", p.name, p.log, data)
	}
	return out
}

func (cp *ControlPlane) stopProcesses() {
	// The apiserver goes first so it does not log etcd errors on the way down.
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	cp.procs = nil
}

// Stop ends the servers and removes Dir. It is safe to call more than once.
func (cp *ControlPlane) Stop() {
	cp.stopOnce.Do(func() {
		cp.stopProcesses()
		_ = os.RemoveAll(cp.Dir)
	})
}

// FreeAddress is a 127.0.0.1 address with a port free right now, for a
// process's metrics or health endpoint.
func FreeAddress() (string, error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(ports[0]), nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func RandomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generating service account key: %w", err)
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("writing service account key: %w", err)
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig that reaches host with a bearer token.
func WriteKubeconfig(path, host, token string, ca []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["prepull"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca}
	cfg.AuthInfos["prepull-admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["prepull"] = &clientcmdapi.Context{Cluster: "prepull", AuthInfo: "prepull-admin"}
	cfg.CurrentContext = "prepull"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}
