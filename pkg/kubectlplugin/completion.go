package kubectlplugin

import (
	"context"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var subcommands = []string{"warm", "status", "nodes", "why", "ungate", "completion"}

// Complete answers kubectl's plugin completion (kubectl runs
// kubectl_complete-prepull with the words typed so far; the last is the
// one being completed): subcommands, then job names for status and why.
// It prints one candidate per line and cobra's directive ":4" (no file
// completion).
func Complete(ctx context.Context, words []string, std IO) int {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	var out []string
	if len(words) == 1 {
		for _, s := range subcommands {
			if strings.HasPrefix(s, cur) {
				out = append(out, s)
			}
		}
	} else if words[0] == "status" || words[0] == "why" {
		var g globals
		fs := flags(words[0], "", "", IO{Out: discard{}, Err: discard{}}, &g)
		_ = fs.Parse(words[1 : len(words)-1])
		if c, err := g.connect(); err == nil && fs.NArg() == 0 {
			if jobs, err := c.prepull.AppsV1beta1().ImagePullJobs(c.namespace).List(ctx, metav1.ListOptions{}); err == nil {
				for _, j := range jobs.Items {
					if strings.HasPrefix(j.Name, cur) {
						out = append(out, j.Name)
					}
				}
			}
		}
	} else if words[0] == "completion" && len(words) == 2 {
		for _, s := range []string{"bash", "zsh"} {
			if strings.HasPrefix(s, cur) {
				out = append(out, s)
			}
		}
	}
	for _, o := range out {
		fmt.Fprintln(std.Out, o)
	}
	fmt.Fprintln(std.Out, ":4")
	return ExitOK
}

// completion prints a shell completion script for the kubectl-prepull
// binary called directly; through kubectl, kubectl_complete-prepull does it.
func completion(_ context.Context, args []string, std IO) error {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		return usageError{fmt.Errorf("name a shell: kubectl prepull completion bash|zsh")}
	}
	script := `_kubectl_prepull() {
  local words=("${COMP_WORDS[@]:1:COMP_CWORD}")
  COMPREPLY=($(kubectl-prepull __complete "${words[@]}" 2>/dev/null | grep -v '^:'))
}
complete -F _kubectl_prepull kubectl-prepull
`
	if args[0] == "zsh" {
		script = "autoload -U +X bashcompinit && bashcompinit\n" + script
	}
	fmt.Fprint(std.Out, script)
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
