package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
)

func TestJSONRecords(t *testing.T) {
	var out bytes.Buffer
	logger := logr.New(&jsonSink{mu: &sync.Mutex{}, out: &out}).WithName("prepull-daemon").WithValues("node", "n1")
	logger.Info("Pull succeeded", "image", "nginx:1.25", "took", 1.5)
	logger.V(2).Info("details")
	logger.Error(errors.New("401 Unauthorized"), "Pull failed", "attempt", 3)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %s", lines[0])
	}
	for k, want := range map[string]any{"msg": "Pull succeeded", "logger": "prepull-daemon", "node": "n1", "image": "nginx:1.25", "took": 1.5, "v": 0.0} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %v in %s", k, rec[k], want, lines[0])
		}
	}
	if _, ok := rec["ts"].(float64); !ok || !strings.HasPrefix(rec["caller"].(string), "logging_test.go:") {
		t.Errorf("ts/caller: %s", lines[0])
	}
	_ = json.Unmarshal([]byte(lines[1]), &rec)
	if rec["v"] != 2.0 {
		t.Errorf("verbosity: %s", lines[1])
	}
	rec = map[string]any{}
	_ = json.Unmarshal([]byte(lines[2]), &rec)
	if rec["err"] != "401 Unauthorized" || rec["attempt"] != 3.0 {
		t.Errorf("error record: %s", lines[2])
	}
	if err := Setup("yaml"); err == nil || !strings.Contains(err.Error(), "use text or json") {
		t.Errorf("Setup(yaml) = %v", err)
	}
}
