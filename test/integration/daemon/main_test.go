// Package daemon tests prepull-daemon, built from this tree and run as a
// process, pulling real images through a real containerd from a real
// registry on 127.0.0.1, against the real apiserver.
package daemon

import (
	"context"
	"fmt"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/prepull/prepull/test/framework"
)

const (
	daemonNS     = "prepull-system"
	registryUser = "prepull"
	registryPass = "s3cret"
)

var (
	// runtimes are containerd 2.x (first: what clusters run; newEnv's
	// default) and Debian's 1.6, each with its own root and socket.
	runtimes  []*framework.Containerd
	reg       *framework.Registry
	daemonBin string
)

func TestMain(m *testing.M) {
	os.Exit(framework.RunTestsWith(m, func(ctx context.Context, cp *framework.ControlPlane) (func(), error) {
		var stops []func()
		teardown := func() {
			for i := len(stops) - 1; i >= 0; i-- {
				stops[i]()
			}
		}
		binDir, err := os.MkdirTemp("", "prepull-bin-")
		if err != nil {
			return teardown, err
		}
		stops = append(stops, func() { os.RemoveAll(binDir) })
		if daemonBin, err = framework.BuildBinary(binDir, "./cmd/prepull-daemon"); err != nil {
			return teardown, err
		}
		if reg, err = framework.StartRegistry(registryUser, registryPass); err != nil {
			return teardown, err
		}
		stops = append(stops, reg.Stop)
		for _, v2 := range []bool{true, false} {
			ctd, err := framework.StartContainerdWith(ctx, framework.ContainerdOptions{V2: v2})
			if err != nil {
				return teardown, err
			}
			stops = append(stops, ctd.Stop)
			if err := ctd.TrustRegistry(reg.Host); err != nil {
				return teardown, err
			}
			runtimes = append(runtimes, ctd)
		}
		kube := kubernetes.NewForConfigOrDie(cp.Config)
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: daemonNS}}, metav1.CreateOptions{}); err != nil {
			return teardown, fmt.Errorf("creating daemon namespace: %w", err)
		}
		return teardown, nil
	}))
}
