// Command pause waits for a signal and exits: the sandbox (pause) image of
// the real-cluster test's nodes, and the workload image its pods run, built
// from source because nothing can be pulled from the internet here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
