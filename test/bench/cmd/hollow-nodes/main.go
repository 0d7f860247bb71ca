// Command hollow-nodes runs many prepull daemons in one process against an
// in-memory image service, for `make bench` (see test/bench/hollow).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/prepull/prepull/pkg/daemon"
	"github.com/prepull/prepull/test/bench/hollow"
)

func main() {
	fs := flag.NewFlagSet("hollow-nodes", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig file.")
	prefix := fs.String("node-prefix", "hollow-", "Node names are this prefix and a five-digit number.")
	from := fs.Int("from", 0, "First node number (inclusive).")
	to := fs.Int("to", 0, "Last node number (exclusive).")
	readyAddr := fs.String("ready-address", "", "Address of /readyz (200 when every daemon has read its NodeImage); empty: none.")
	var o hollow.Options
	fs.DurationVar(&o.PullDelay, "pull-delay", 0, "How long each pull takes.")
	fs.StringVar(&o.DaemonNamespace, "daemon-namespace", "prepull-system", "Namespace whose secrets the daemons read.")
	fs.IntVar(&o.MaxConcurrent, "max-concurrent-pulls", 3, "Pulls at once per node.")
	fs.DurationVar(&o.StatusInterval, "status-interval", daemon.DefaultStatusInterval, "Least time between two status writes per node (the daemon's default).")
	fs.IntVar(&o.NodesPerConnection, "nodes-per-connection", 100, "Daemons sharing one connection to the API server.")
	qps := fs.Float64("kube-api-qps", 10, "Each daemon's queries per second (the daemon's default).")
	fs.IntVar(&o.Burst, "kube-api-burst", 20, "Each daemon's burst (the daemon's default).")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	o.QPS = float32(*qps)
	for i := *from; i < *to; i++ {
		o.Nodes = append(o.Nodes, hollow.NodeName(*prefix, i))
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hollow-nodes:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fleet, err := hollow.Start(ctx, cfg, o)
	if err != nil {
		klog.ErrorS(err, "Hollow nodes failed to start")
		os.Exit(1)
	}
	if *readyAddr != "" {
		// 200 once every daemon has read its NodeImage: only then does
		// a benchmark's clock mean what it says.
		mux := http.NewServeMux()
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			synced, total := fleet.Synced()
			if synced < total {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			fmt.Fprintf(w, "%d/%d synced\n", synced, total)
		})
		srv := &http.Server{Addr: *readyAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.ListenAndServe() }()
		defer srv.Close()
	}
	if err := fleet.Wait(); err != nil {
		klog.ErrorS(err, "Hollow nodes failed")
		os.Exit(1)
	}
}
