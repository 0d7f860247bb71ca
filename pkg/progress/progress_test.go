package progress

import "testing"

func TestHasRepo(t *testing.T) {
	if !hasRepo("a,b/c", "b/c") || hasRepo("a,b/c", "b") || hasRepo("", "a") {
		t.Error("hasRepo matches wrongly")
	}
}
