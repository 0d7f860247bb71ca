package kubectlplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	appsv1beta1 "github.com/prepull/prepull/pkg/apis/apps/v1beta1"
	"github.com/prepull/prepull/pkg/imageref"
	"github.com/prepull/prepull/pkg/nodetags"
)

// IO is where a command writes, and whether stdout is a terminal (the live
// view redraws in place there, and prints plain lines otherwise).
type IO struct {
	Out, Err io.Writer
	Terminal bool
	// Width reads the terminal's width in columns (0: unknown); the live
	// view reads it at every frame, so a resized window is followed.
	Width func() int
	// Interval is how often the live view redraws; zero means 500ms.
	Interval time.Duration
}

// Exit codes.
const (
	ExitOK      = 0
	ExitFailed  = 1 // the job finished with failed nodes
	ExitUsage   = 2 // bad input
	ExitProblem = 3 // the cluster could not be read or written
)

type usageError struct{ error }

const usage = `kubectl prepull: pre-pull images onto nodes with prepull (OpenKruise's image-pulling API).

Commands:
  warm IMAGE...   create a job that pulls the images onto nodes (--wait follows it)
  status [JOB]    a job's live progress per node, or every job when none is named
  nodes [IMAGE]   which nodes have which images
  why JOB         the failed or stuck nodes of a job, with the daemon's message and Events
  ungate POD...|--workload KIND/NAME|--all   remove the prepull.io/images scheduling gate by hand
  completion bash|zsh   shell completion

Run "kubectl prepull COMMAND --help" for a command's flags and examples.
`

// Run runs one command line (the words after "kubectl prepull") and
// returns the exit code.
func Run(ctx context.Context, args []string, std IO) int {
	args = commandFirst(args)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(std.Out, usage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmds := map[string]func(context.Context, []string, IO) error{
		"warm": warm, "status": status, "nodes": nodes, "why": why, "ungate": ungate, "completion": completion,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(std.Err, "kubectl prepull: unknown command %q\n\n%s", args[0], usage)
		return ExitUsage
	}
	err := cmd(ctx, args[1:], std)
	var ue usageError
	var jf jobFailed
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, pflag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(std.Err, "kubectl prepull %s: %v\n", args[0], err)
		return ExitUsage
	case errors.As(err, &jf):
		fmt.Fprintf(std.Err, "kubectl prepull %s: %v\n", args[0], err)
		return ExitFailed
	}
	fmt.Fprintf(std.Err, "kubectl prepull %s: %v\n", args[0], err)
	return ExitProblem
}

type jobFailed struct{ error }

// valueFlags are the global flags that take a value as the next word.
var valueFlags = map[string]bool{"--kubeconfig": true, "--context": true, "--namespace": true, "-n": true, "--output": true, "-o": true}

// commandFirst moves the subcommand to the front, so global flags may come
// before it as kubectl users type them: `kubectl prepull -n team status`,
// `kubectl prepull --kubeconfig F warm nginx`. The flags are then parsed by
// the subcommand, which knows them all.
func commandFirst(args []string) []string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return args
		case valueFlags[a]:
			i++ // its value
		case strings.HasPrefix(a, "-"):
		default:
			if i == 0 {
				return args
			}
			out := append([]string{a}, args[:i]...)
			return append(out, args[i+1:]...)
		}
	}
	return args
}

func flags(name, use, examples string, std IO, g *globals) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(std.Err)
	g.bind(fs)
	fs.Usage = func() {
		fmt.Fprintf(std.Out, "Usage: kubectl prepull %s\n\nExamples:\n%s\nFlags:\n%s", use, examples, fs.FlagUsages())
	}
	return fs
}

func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}

// warmFlags are warm's flags.
type warmFlags struct {
	nodes, secrets                     []string
	selector, podSelector, parallelism string
	name                               string
	wait                               bool
}

// warm creates an ImagePullJob (one image) or an ImageListPullJob.
func warm(ctx context.Context, args []string, std IO) error {
	var g globals
	var f warmFlags
	fs := flags("warm", "warm IMAGE... [flags]", `  kubectl prepull warm nginx:1.25 --wait
  kubectl prepull warm registry.example.com/ml/model:v3 --selector gpu=true --parallelism 25% --secret regcred --wait
  kubectl prepull warm redis:7 busybox:1.36 --nodes node-1,node-2
`, std, &g)
	fs.StringSliceVar(&f.nodes, "nodes", nil, "Pull on these nodes only (comma-separated names).")
	fs.StringVarP(&f.selector, "selector", "l", "", "Pull on the nodes with these labels, e.g. zone=a,gpu!=false.")
	fs.StringVar(&f.podSelector, "pod-selector", "", "Pull on the nodes that run pods of the namespace with these labels.")
	fs.StringVar(&f.parallelism, "parallelism", "", "Nodes pulling at once: a number or a percentage such as 25% (default 1).")
	fs.StringSliceVar(&f.secrets, "secret", nil, "Pull secret in the namespace (repeatable).")
	fs.StringVar(&f.name, "name", "", "Job name (default: generated, warm-...).")
	fs.BoolVar(&f.wait, "wait", false, "Follow the job until it finishes; exit 0 only if every node succeeded.")
	if err := parse(fs, args); err != nil {
		return err
	}
	images := fs.Args()
	if len(images) == 0 {
		return usageError{errors.New("name at least one image, e.g. kubectl prepull warm nginx:1.25")}
	}
	for _, im := range images {
		if _, err := imageref.Parse(im); err != nil {
			return usageError{err}
		}
	}
	tmpl, err := f.template()
	if err != nil {
		return err
	}
	c, err := g.connect()
	if err != nil {
		return err
	}
	meta := metav1.ObjectMeta{Name: f.name, Namespace: c.namespace}
	if f.name == "" {
		meta.GenerateName = "warm-"
	}
	if len(images) > 1 {
		list, err := c.prepull.AppsV1beta1().ImageListPullJobs(c.namespace).Create(ctx, &appsv1beta1.ImageListPullJob{
			ObjectMeta: meta, Spec: appsv1beta1.ImageListPullJobSpec{Images: images, ImagePullJobTemplate: tmpl},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating the ImageListPullJob: %w", err)
		}
		fmt.Fprintf(std.Out, "imagelistpulljob.apps.kruise.io/%s created (%d images)\n", list.Name, len(images))
		if f.wait {
			return waitList(ctx, c, list.Name, std)
		}
		return nil
	}
	job, err := c.prepull.AppsV1beta1().ImagePullJobs(c.namespace).Create(ctx, &appsv1beta1.ImagePullJob{
		ObjectMeta: meta, Spec: appsv1beta1.ImagePullJobSpec{Image: images[0], ImagePullJobTemplate: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the ImagePullJob: %w", err)
	}
	fmt.Fprintf(std.Out, "imagepulljob.apps.kruise.io/%s created\n", job.Name)
	if f.wait {
		return follow(ctx, c, job.Namespace, job.Name, std)
	}
	return nil
}

// template is the job template the flags ask for; at most one of the
// three ways of choosing nodes.
func (f warmFlags) template() (appsv1beta1.ImagePullJobTemplate, error) {
	var tmpl appsv1beta1.ImagePullJobTemplate
	set := 0
	for _, s := range []bool{len(f.nodes) > 0, f.selector != "", f.podSelector != ""} {
		if s {
			set++
		}
	}
	if set > 1 {
		return tmpl, usageError{errors.New("use one of --nodes, --selector and --pod-selector")}
	}
	switch {
	case len(f.nodes) > 0:
		tmpl.Selector = &appsv1beta1.ImagePullJobNodeSelector{Names: f.nodes}
	case f.selector != "":
		ls, err := metav1.ParseToLabelSelector(f.selector)
		if err != nil {
			return tmpl, usageError{fmt.Errorf("--selector %q: %w", f.selector, err)}
		}
		tmpl.Selector = &appsv1beta1.ImagePullJobNodeSelector{LabelSelector: *ls}
	case f.podSelector != "":
		ls, err := metav1.ParseToLabelSelector(f.podSelector)
		if err != nil {
			return tmpl, usageError{fmt.Errorf("--pod-selector %q: %w", f.podSelector, err)}
		}
		tmpl.PodSelector = &appsv1beta1.ImagePullJobPodSelector{LabelSelector: *ls}
	}
	if f.parallelism != "" {
		p := intstr.Parse(f.parallelism)
		tmpl.Parallelism = &p
	}
	tmpl.PullSecrets = f.secrets
	return tmpl, nil
}

// waitList follows each child of a list job in turn.
func waitList(ctx context.Context, c *clients, name string, std IO) error {
	for {
		l, err := c.prepull.AppsV1beta1().ImageListPullJobs(c.namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Status.CompletionTime != nil {
			fmt.Fprintf(std.Out, "%s: %d of %d images pulled everywhere\n", name, l.Status.Succeeded, l.Status.Desired)
			if len(l.Status.FailedImageStatuses) > 0 {
				for _, f := range l.Status.FailedImageStatuses {
					fmt.Fprintf(std.Out, "  %s: %s\n", f.Name, f.Message)
				}
				return jobFailed{fmt.Errorf("%d image(s) failed on some nodes", len(l.Status.FailedImageStatuses))}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval(std)):
		}
	}
}

func interval(std IO) time.Duration {
	if std.Interval > 0 {
		return std.Interval
	}
	return 500 * time.Millisecond
}

// status lists jobs, or follows one live.
func status(ctx context.Context, args []string, std IO) error {
	var g globals
	fs := flags("status", "status [JOB] [flags]", `  kubectl prepull status              # every job of the namespace
  kubectl prepull status warm-x7k2p    # one job, live, until it finishes
  kubectl prepull status warm-x7k2p -o json
`, std, &g)
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := g.connect()
	if err != nil {
		return err
	}
	if fs.NArg() == 0 {
		ns := c.namespace
		if g.allNamespaces {
			ns = ""
		}
		jobs, err := c.prepull.AppsV1beta1().ImagePullJobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if g.output != "" {
			return printObject(std.Out, g.output, jobs)
		}
		fmt.Fprintf(std.Out, "%-40s %-6s %-6s %-9s %-6s %s\n", "JOB", "TOTAL", "ACTIVE", "SUCCEEDED", "FAILED", "MESSAGE")
		for _, j := range jobs.Items {
			fmt.Fprintf(std.Out, "%-40s %-6d %-6d %-9d %-6d %s\n", j.Namespace+"/"+j.Name, j.Status.Desired, j.Status.Active, j.Status.Succeeded, j.Status.Failed, j.Status.Message)
		}
		return nil
	}
	name := fs.Arg(0)
	if g.output == "json" || g.output == "yaml" {
		job, rows, err := snapshot(ctx, c, c.namespace, name)
		if err != nil {
			return err
		}
		return printObject(std.Out, g.output, map[string]any{"job": job.Name, "namespace": job.Namespace, "image": job.Spec.Image, "status": job.Status, "nodes": rows})
	}
	return follow(ctx, c, c.namespace, name, std)
}

func snapshot(ctx context.Context, c *clients, ns, name string) (*appsv1beta1.ImagePullJob, []NodeRow, error) {
	job, err := c.prepull.AppsV1beta1().ImagePullJobs(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, usageError{fmt.Errorf("no ImagePullJob %q in namespace %s (kubectl prepull status lists them)", name, ns)}
	}
	if err != nil {
		return nil, nil, err
	}
	list, err := c.prepull.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	nis := make([]*appsv1beta1.NodeImage, len(list.Items))
	for i := range list.Items {
		nis[i] = &list.Items[i]
	}
	rows, err := JobRows(job, nis, time.Now())
	return job, rows, err
}

// follow draws a job until it finishes or ctx ends: redrawn in place on a
// terminal, as changed lines otherwise. The exit says whether every node
// succeeded.
func follow(ctx context.Context, c *clients, ns, name string, std IO) error {
	var drawn int
	var last string
	for {
		job, rows, err := snapshot(ctx, c, ns, name)
		if err != nil {
			return err
		}
		width := 0
		if std.Terminal {
			width = 80
			if std.Width != nil {
				if w := std.Width(); w > 0 {
					width = w
				}
			}
		}
		lines := Render(job, rows, width)
		text := strings.Join(lines, "\n")
		switch {
		case std.Terminal:
			// Every line fits on one row, so the frame took exactly drawn
			// rows: go back up over them, redraw, and clear whatever is
			// left below (a longer earlier frame).
			var b strings.Builder
			if drawn > 0 {
				fmt.Fprintf(&b, "\r\x1b[%dA", drawn)
			}
			for _, l := range lines {
				b.WriteString("\x1b[2K" + l + "\n")
			}
			b.WriteString("\x1b[J")
			drawn = len(lines)
			fmt.Fprint(std.Out, b.String())
		case text != last:
			fmt.Fprintln(std.Out, text)
		}
		last = text
		if Finished(job) {
			if job.Status.Failed > 0 {
				return jobFailed{fmt.Errorf("%d of %d node(s) failed; kubectl prepull why %s", job.Status.Failed, job.Status.Desired, name)}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval(std)):
		}
	}
}

// nodes shows which nodes have which images.
func nodes(ctx context.Context, args []string, std IO) error {
	var g globals
	fs := flags("nodes", "nodes [IMAGE] [flags]", `  kubectl prepull nodes               # every image on every node
  kubectl prepull nodes nginx:1.25    # where nginx:1.25 is
`, std, &g)
	if err := parse(fs, args); err != nil {
		return err
	}
	var want *imageref.Reference
	if fs.NArg() > 0 {
		r, err := imageref.Parse(fs.Arg(0))
		if err != nil {
			return usageError{err}
		}
		want = &r
	}
	c, err := g.connect()
	if err != nil {
		return err
	}
	list, err := c.prepull.AppsV1beta1().NodeImages().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	type entry struct {
		Node    string `json:"node"`
		Image   string `json:"image"`
		Phase   string `json:"phase"`
		Message string `json:"message,omitempty"`
	}
	var entries []entry
	counts := map[string]int{}
	for _, ni := range list.Items {
		for name, img := range ni.Spec.Images {
			for _, t := range img.Tags {
				if want != nil && (want.Name != name || want.Tag != t.Tag) {
					continue
				}
				e := entry{Node: ni.Name, Image: imageref.Join(name, t.Tag), Phase: string(appsv1beta1.ImagePhaseWaiting)}
				if st := nodetags.CurrentStatus(&ni.Status, name, &t); st != nil {
					e.Phase, e.Message = string(st.Phase), st.Message
				}
				counts[e.Phase]++
				entries = append(entries, e)
			}
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Node != entries[j].Node {
			return entries[i].Node < entries[j].Node
		}
		return entries[i].Image < entries[j].Image
	})
	if g.output == "json" || g.output == "yaml" {
		return printObject(std.Out, g.output, entries)
	}
	fmt.Fprintf(std.Out, "%-24s %-60s %s\n", "NODE", "IMAGE", "STATE")
	for _, e := range entries {
		line := fmt.Sprintf("%-24s %-60s %s", e.Node, e.Image, e.Phase)
		if g.output == "wide" && e.Message != "" {
			line += "  " + e.Message
		}
		fmt.Fprintln(std.Out, line)
	}
	withTags := map[string]bool{}
	for _, e := range entries {
		withTags[e.Node] = true
	}
	fmt.Fprintf(std.Out, "%d node(s), %d image tag(s): %d pulled, %d pulling, %d waiting, %d failed\n", len(withTags), len(entries),
		counts["Succeeded"], counts["Pulling"], counts["Waiting"], counts["Failed"])
	return nil
}

// why explains a job's failed and stuck nodes.
func why(ctx context.Context, args []string, std IO) error {
	var g globals
	fs := flags("why", "why JOB [flags]", `  kubectl prepull why warm-x7k2p
`, std, &g)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("name one job, e.g. kubectl prepull why warm-x7k2p")}
	}
	c, err := g.connect()
	if err != nil {
		return err
	}
	job, rows, err := snapshot(ctx, c, c.namespace, fs.Arg(0))
	if err != nil {
		return err
	}
	var bad []NodeRow
	for _, r := range rows {
		if r.Phase != string(appsv1beta1.ImagePhaseSucceeded) {
			bad = append(bad, r)
		}
	}
	events, err := c.kube.CoreV1().Events(job.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + job.Name})
	if err != nil {
		return err
	}
	sort.Slice(events.Items, func(i, j int) bool { return eventTime(events.Items[i]).Before(eventTime(events.Items[j])) })
	if g.output == "json" || g.output == "yaml" {
		return printObject(std.Out, g.output, map[string]any{"job": job.Name, "message": job.Status.Message, "nodes": bad})
	}
	fmt.Fprintf(std.Out, "%s/%s (%s): %s\n", job.Namespace, job.Name, job.Spec.Image, job.Status.Message)
	if len(bad) == 0 {
		fmt.Fprintln(std.Out, "every node that answered has the image; nothing failed or waits")
	}
	for _, r := range bad {
		msg := r.Message
		if msg == "" {
			msg = "(no message from the node's daemon yet)"
		}
		fmt.Fprintf(std.Out, "  %-20s %-9s %s\n", r.Node, r.Phase, msg)
	}
	if len(events.Items) > 0 {
		fmt.Fprintln(std.Out, "Events:")
		for _, e := range events.Items {
			fmt.Fprintf(std.Out, "  %-7s %-20s %s\n", e.Type, e.Reason, e.Message)
		}
	}
	return nil
}

func eventTime(e corev1.Event) time.Time {
	if !e.LastTimestamp.IsZero() {
		return e.LastTimestamp.Time
	}
	return e.EventTime.Time
}

func printObject(out io.Writer, format string, v any) error {
	switch format {
	case "json":
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(out, string(data))
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		fmt.Fprint(out, string(data))
	default:
		return usageError{fmt.Errorf("-o %q: use json or yaml here", format)}
	}
	return nil
}
