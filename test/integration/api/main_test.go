// Package api tests prepull's API as served by a real kube-apiserver: CRD
// admission rules, defaults, both versions, and the generated clients.
package api

import (
	"os"
	"testing"

	"github.com/prepull/prepull/test/framework"
)

func TestMain(m *testing.M) {
	os.Exit(framework.RunTests(m))
}
