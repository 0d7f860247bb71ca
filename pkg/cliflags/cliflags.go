// Package cliflags gives prepull's two binaries the command line of a
// Kubernetes component: pflag (--flag), --help printed in named sections,
// and klog's flags with its deprecated file-logging ones hidden, as
// k8s.io/component-base does (which prepull does not otherwise need).
package cliflags

import (
	"errors"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/prepull/prepull/pkg/logging"
)

// Sections are a binary's flags in named groups, printed in the order the
// groups were first asked for.
type Sections struct {
	names []string
	sets  map[string]*pflag.FlagSet
}

// Section is the flag set of the named group, made on first use.
func (s *Sections) Section(name string) *pflag.FlagSet {
	if s.sets == nil {
		s.sets = map[string]*pflag.FlagSet{}
	}
	if fs, ok := s.sets[name]; ok {
		return fs
	}
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	s.sets[name] = fs
	s.names = append(s.names, name)
	return fs
}

// FlagSet is every section's flags in one set to parse, whose usage is
// header and then each section.
func (s *Sections) FlagSet(program, header string, out io.Writer) *pflag.FlagSet {
	all := pflag.NewFlagSet(program, pflag.ContinueOnError)
	all.SetOutput(out)
	for _, name := range s.names {
		all.AddFlagSet(s.sets[name])
	}
	all.Usage = func() { s.PrintUsage(out, program, header) }
	return all
}

// AddCommon adds the flags every prepull binary has, in its Logging and
// General sections: --logging-format, klog's, and --version.
func (s *Sections) AddCommon() (logFormat *string, showVersion *bool) {
	logFormat = logging.AddFlags(s.Section("Logging"))
	AddKlog(s.Section("Logging"))
	return logFormat, s.Section("General").Bool("version", false, "Print the version and exit.")
}

// MustParse parses args into fs and exits as a command line does: 0 after
// --help, 2 (naming the bad flag) on an error.
func MustParse(fs *pflag.FlagSet, args []string) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return
	case errors.Is(err, pflag.ErrHelp):
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "%v (see --help)\n", err)
	os.Exit(2)
}

// PrintUsage writes the usage: header, then each section's flags.
func (s *Sections) PrintUsage(out io.Writer, program, header string) {
	fmt.Fprintf(out, "Usage: %s [flags]\n\n%s\n", program, strings.TrimRight(header, "\n"))
	for _, name := range s.names {
		usages := s.sets[name].FlagUsagesWrapped(100)
		if usages == "" {
			continue
		}
		fmt.Fprintf(out, "\n%s flags:\n\n%s", name, usages)
	}
}

// AddKlog adds klog's flags to fs: -v and --vmodule in --help, the rest
// (file logging and stderr thresholds, which Kubernetes components deprecate:
// logs go to stderr, where the kubelet collects them) still accepted but
// hidden.
func AddKlog(fs *pflag.FlagSet) {
	gfs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(gfs)
	gfs.VisitAll(func(f *goflag.Flag) {
		fs.AddGoFlag(f)
		if f.Name != "v" && f.Name != "vmodule" {
			_ = fs.MarkHidden(f.Name)
		}
	})
}
