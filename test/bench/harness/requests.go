package harness

import (
	"bufio"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/rest"
)

// Requests counts API requests by "VERB resource" (resource with its
// subresource, e.g. "PATCH nodeimages/status"), from the API server's
// apiserver_request_total.
type Requests map[string]float64

// writeVerbs are the verbs that change state.
var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true, "DELETECOLLECTION": true, "APPLY": true}

func readRequests(ctx context.Context, rc rest.Interface) (Requests, error) {
	body, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's /metrics: %w", err)
	}
	out := Requests{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if key, v, ok := storeCount(line); ok {
			out[key] += v
			continue
		}
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		end := strings.LastIndex(rest, "} ")
		if end < 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[end+2:], 64)
		if err != nil {
			continue
		}
		labels := parseLabels(rest[:end])
		key := labels["verb"] + " " + labels["resource"]
		if labels["resource"] == "" {
			key = labels["verb"] + " (non-resource)"
		}
		if sub := labels["subresource"]; sub != "" && labels["resource"] != "" {
			key += "/" + sub
		}
		// Refused writes cost the server too; show them apart.
		if code := labels["code"]; code == "409" {
			key += " (409 conflict)"
		} else if code != "" && code[0] != '2' {
			key += " (" + code + ")"
		}
		out[key] += v
	}
	return out, sc.Err()
}

// storeCount reads the API server's own work behind the requests: its
// etcd requests by operation ("etcd update nodeimages": a patch applied
// to a watch-cache copy that turned out stale is applied again, each
// attempt an update; "etcd get nodeimages": a fresh read after a patch
// failed on such a copy) and the watchers it dropped as unresponsive
// ("dropped watchers nodeimages"), which stalls its event dispatch, and
// how long its watch cache took to take in each event ("watch lag
// nodeimages le=0.5": a histogram bucket, counted per delivered event).
func storeCount(line string) (string, float64, bool) {
	var kind, rest string
	if r, ok := strings.CutPrefix(line, "etcd_requests_total{"); ok {
		kind, rest = "etcd", r
	} else if r, ok := strings.CutPrefix(line, "apiserver_terminated_watchers_total{"); ok {
		kind, rest = "dropped watchers", r
	} else if r, ok := strings.CutPrefix(line, "apiserver_watch_events_dispatch_duration_seconds_bucket{"); ok {
		kind, rest = "watch lag", r
	} else {
		return "", 0, false
	}
	end := strings.LastIndex(rest, "} ")
	if end < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(rest[end+2:], 64)
	if err != nil {
		return "", 0, false
	}
	labels := parseLabels(rest[:end])
	switch kind {
	case "etcd":
		return "etcd " + labels["operation"] + " " + labels["resource"], v, true
	case "watch lag":
		// Only the wait from decoding an etcd event to the watch cache
		// holding it: while it lasts, patches meet the older copy.
		if labels["stage"] != "storage_to_cache" {
			return "", 0, false
		}
		return kind + " " + labels["resource"] + " le=" + labels["le"], v, true
	}
	return kind + " " + labels["resource"], v, true
}

// parseLabels reads `a="x",b="y"` (label values here hold no quotes).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		k, r, ok := strings.Cut(s, `="`)
		if !ok {
			break
		}
		v, r2, _ := strings.Cut(r, `"`)
		out[k] = v
		s = strings.TrimPrefix(r2, ",")
	}
	return out
}

// Sub is r minus before, leaving out keys that did not grow.
func (r Requests) Sub(before Requests) Requests {
	out := Requests{}
	for k, v := range r {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// Writes is the requests that change state, except the API server's own
// lease renewals (prepull writes no Lease with leader election off, as
// the benchmark runs it).
func (r Requests) Writes() Requests {
	out := Requests{}
	for k, v := range r {
		verb, resource, _ := strings.Cut(k, " ")
		if writeVerbs[verb] && !strings.HasPrefix(resource, "leases") {
			out[k] = v
		}
	}
	return out
}

// Total sums every count.
func (r Requests) Total() float64 {
	var t float64
	for _, v := range r {
		t += v
	}
	return t
}

// Keys are the keys, sorted.
func (r Requests) Keys() []string {
	var keys []string
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
