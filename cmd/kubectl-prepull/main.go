// Command kubectl-prepull is the `kubectl prepull` plugin (on PATH, kubectl
// finds it). Linked or copied as kubectl_complete-prepull it answers
// kubectl's shell completion for the plugin. The logic is in
// pkg/kubectlplugin.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/prepull/prepull/pkg/kubectlplugin"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	std := kubectlplugin.IO{Out: os.Stdout, Err: os.Stderr, Terminal: term.IsTerminal(int(os.Stdout.Fd())),
		Width: func() int {
			w, _, err := term.GetSize(int(os.Stdout.Fd()))
			if err != nil {
				return 0
			}
			return w
		}}
	args := os.Args[1:]
	switch {
	case strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl_complete-"):
		os.Exit(kubectlplugin.Complete(ctx, args, std))
	case len(args) > 0 && args[0] == "__complete":
		os.Exit(kubectlplugin.Complete(ctx, args[1:], std))
	}
	os.Exit(kubectlplugin.Run(ctx, args, std))
}
