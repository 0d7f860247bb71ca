// Package kubectlplugin is `kubectl prepull`: warm images on nodes, follow a
// job live, see which nodes have which images, and why a node failed. The
// binary in cmd/kubectl-prepull only hands it the command line and the
// terminal; everything it does is here.
package kubectlplugin

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/prepull/prepull/pkg/generated/clientset/versioned"
)

// globals are kubectl's usual flags.
type globals struct {
	kubeconfig, context, namespace, output string
	allNamespaces                          bool
}

func (g *globals) bind(fs *pflag.FlagSet) {
	fs.StringVar(&g.kubeconfig, "kubeconfig", "", "Path to the kubeconfig file (default $KUBECONFIG or ~/.kube/config).")
	fs.StringVar(&g.context, "context", "", "The kubeconfig context to use.")
	fs.StringVarP(&g.namespace, "namespace", "n", "", "The namespace (default: the context's).")
	fs.BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "Across all namespaces.")
	fs.StringVarP(&g.output, "output", "o", "", "Output format: json, yaml or wide (default: a table or live view).")
}

// clients are what a command talks to.
type clients struct {
	prepull   versioned.Interface
	kube      kubernetes.Interface
	namespace string
}

func (g *globals) connect() (*clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: g.context}
	if g.namespace != "" {
		overrides.Context.Namespace = g.namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-prepull"
	p, err := versioned.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{prepull: p, kube: k, namespace: ns}, nil
}
