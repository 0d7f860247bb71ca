// Package registryhold is how a registry's "too many requests" (HTTP 429)
// reaches every node that pulls from it: the node that got it holds its
// own pulls from that registry for the time the registry asked
// (Retry-After) and says so in its tag's message; the controller reads the
// message from the NodeImage and publishes the hold in one ConfigMap that
// every daemon watches, so the other nodes hold back too, and the
// controller hands out no new pulls from that registry meanwhile.
package registryhold

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ConfigMapName is the ConfigMap, in the daemon namespace, that holds the
// registries' holds; DataKey its one key (registry hosts with a port are
// no valid ConfigMap keys).
const (
	ConfigMapName = "prepull-registry-holds"
	DataKey       = "holds.json"
)

// Bounds of a hold: a registry's Retry-After beyond MaxWait is not taken
// at its word (a typo or a hostile answer must not stop pulls for a day).
const (
	MinWait     = time.Second
	MaxWait     = 10 * time.Minute
	DefaultWait = 30 * time.Second
)

// Hold is one registry's request to slow down.
type Hold struct {
	Until time.Time `json:"until"`
	// Node is the node that got the 429, for messages.
	Node string `json:"node,omitempty"`
}

// Holds are the holds by registry host.
type Holds map[string]Hold

// Decode reads a ConfigMap's holds; a value it cannot read is an error (the
// caller logs it and keeps what it has).
func Decode(data map[string]string) (Holds, error) {
	raw, ok := data[DataKey]
	if !ok || strings.TrimSpace(raw) == "" {
		return Holds{}, nil
	}
	var h Holds
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		return nil, fmt.Errorf("ConfigMap %s key %s is not JSON of registry holds: %w", ConfigMapName, DataKey, err)
	}
	return h, nil
}

// Encode is the ConfigMap data for the holds still running at now.
func (h Holds) Encode(now time.Time) (map[string]string, error) {
	live := Holds{}
	for host, hold := range h {
		if hold.Until.After(now) {
			live[host] = Hold{Until: ceilSecond(hold.Until), Node: hold.Node}
		}
	}
	b, err := json.Marshal(live)
	if err != nil {
		return nil, err
	}
	return map[string]string{DataKey: string(b)}, nil
}

// ceilSecond rounds t up to the second, as holds are written (RFC 3339):
// rounding down would let nodes back early, and rounding anything but
// idempotently would make a hold the daemons and the controller pass
// around grow each time round.
func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second).UTC()
	}
	return t.UTC()
}

// Merge takes in other's holds that end later than h's, and says whether
// any did.
func (h Holds) Merge(other Holds) bool {
	changed := false
	for host, o := range other {
		if cur, ok := h[host]; !ok || o.Until.After(cur.Until) {
			h[host] = o
			changed = true
		}
	}
	return changed
}

// Equal says two sets of holds end at the same seconds.
func (h Holds) Equal(other Holds) bool {
	if len(h) != len(other) {
		return false
	}
	for host, a := range h {
		b, ok := other[host]
		if !ok || !a.Until.Truncate(time.Second).Equal(b.Until.Truncate(time.Second)) {
			return false
		}
	}
	return true
}

// Active is the hold of host running at now, if any.
func (h Holds) Active(host string, now time.Time) (Hold, bool) {
	hold, ok := h[host]
	if !ok || !hold.Until.After(now) {
		return Hold{}, false
	}
	return hold, true
}

// Next is the earliest end of a hold after now, zero if none runs.
func (h Holds) Next(now time.Time) time.Time {
	var next time.Time
	for _, hold := range h {
		if hold.Until.After(now) && (next.IsZero() || hold.Until.Before(next)) {
			next = hold.Until
		}
	}
	return next
}

// Gate is a daemon's holds, fed by its own 429s and by the ConfigMap.
type Gate struct {
	mu    sync.Mutex
	holds Holds
}

// Hold extends host's hold to until, and says whether it did.
func (g *Gate) Hold(host string, hold Hold) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds == nil {
		g.holds = Holds{}
	}
	return g.holds.Merge(Holds{host: hold})
}

// Take merges the published holds in.
func (g *Gate) Take(h Holds) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds == nil {
		g.holds = Holds{}
	}
	g.holds.Merge(h)
}

// Active is host's running hold.
func (g *Gate) Active(host string, now time.Time) (Hold, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holds.Active(host, now)
}

// throttled matches what containerd and CRI-O put in a pull error when
// the registry answered 429 (the status line, or the registry's error code).
var throttled = regexp.MustCompile(`(?i)\b429 too many requests\b|\btoomanyrequests\b|status code 429\b`)

// urlIn finds the request URL containerd puts in its error.
var urlIn = regexp.MustCompile(`https?://[^\s"',;]+`)

// Throttled says a pull error is a registry's 429, and returns the URL of
// the request that got it when the error names one (to ask it for its
// Retry-After).
func Throttled(msg string) (url string, ok bool) {
	if !throttled.MatchString(msg) {
		return "", false
	}
	u := urlIn.FindString(msg)
	return strings.TrimRight(u, ".:)"), true
}

// RetryAfter reads a Retry-After header: delay seconds or an HTTP date.
// The result is bounded to [MinWait, MaxWait]; false when the value is
// neither.
func RetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		d = time.Duration(min(n, int64(MaxWait/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, MinWait), MaxWait), true
}

// MessagePrefix starts every tag message about a hold; the controller
// looks for it.
const MessagePrefix = "registry throttled: "

// Message is the tag message while a pull waits for host's hold.
func Message(host string, hold Hold) string {
	return fmt.Sprintf("%s%s answered 429 Too Many Requests (to node %s); pulls from it on every node wait until %s",
		MessagePrefix, host, hold.Node, ceilSecond(hold.Until).Format(time.RFC3339))
}

var messageRE = regexp.MustCompile(`^` + regexp.QuoteMeta(MessagePrefix) + `(\S+) answered 429 Too Many Requests \(to node (\S*)\); pulls from it on every node wait until (\S+)$`)

// ParseMessage reads a hold back from a tag message.
func ParseMessage(msg string) (string, Hold, bool) {
	m := messageRE.FindStringSubmatch(msg)
	if m == nil {
		return "", Hold{}, false
	}
	until, err := time.Parse(time.RFC3339, m[3])
	if err != nil {
		return "", Hold{}, false
	}
	return m[1], Hold{Until: until, Node: m[2]}, true
}

// Hosts lists the hosts held at now, sorted, for logs.
func (h Holds) Hosts(now time.Time) []string {
	var out []string
	for host, hold := range h {
		if hold.Until.After(now) {
			out = append(out, host)
		}
	}
	sort.Strings(out)
	return out
}
