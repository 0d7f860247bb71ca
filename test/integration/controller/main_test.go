// Package controller tests prepull-controller in-process against a real
// kube-apiserver, with a small helper playing the node daemons.
package controller

import (
	"os"
	"testing"

	"github.com/prepull/prepull/test/framework"
)

func TestMain(m *testing.M) {
	os.Exit(framework.RunTests(m))
}
