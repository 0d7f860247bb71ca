// Package logging sets up both binaries' log format: klog's text (the
// default) or JSON lines, selected with --logging-format as in Kubernetes
// components. The JSON records have the same shape as component-base's
// JSON format ({"ts":..., "caller":..., "msg":..., "v":..., key/values})
// without pulling its logging stack into the daemon's binary.
package logging

import (
	"encoding/json"
	"fmt"
	"github.com/spf13/pflag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// AddFlags registers --logging-format on fs and returns its value.
func AddFlags(fs *pflag.FlagSet) *string {
	return fs.String("logging-format", "text", "Log format: text (klog) or json (one JSON object per line, as Kubernetes components write with --logging-format=json).")
}

// Setup applies the format; call it after the flags are parsed.
func Setup(format string) error {
	switch format {
	case "text", "":
		return nil
	case "json":
		klog.SetLogger(logr.New(&jsonSink{out: os.Stderr}))
		return nil
	}
	return fmt.Errorf("--logging-format %q: use text or json", format)
}

// jsonSink writes one JSON object per record. Verbosity is klog's -v, which
// klog checks before a record reaches the sink.
type jsonSink struct {
	mu     *sync.Mutex
	out    io.Writer
	name   string
	values []any
	depth  int
}

func (s *jsonSink) Init(info logr.RuntimeInfo) {
	if s.mu == nil {
		s.mu = &sync.Mutex{}
	}
	// logr's own frames between the caller and the sink.
	s.depth += info.CallDepth
}

func (s *jsonSink) Enabled(int) bool { return true }

func (s *jsonSink) Info(level int, msg string, kv ...any) {
	s.write(level, msg, nil, kv)
}

func (s *jsonSink) Error(err error, msg string, kv ...any) {
	s.write(0, msg, err, kv)
}

func (s *jsonSink) write(level int, msg string, err error, kv []any) {
	buf := make([]byte, 0, 256)
	buf = append(buf, `{"ts":`...)
	buf = strconv.AppendFloat(buf, float64(time.Now().UnixNano())/1e9, 'f', 6, 64)
	if _, file, line, ok := runtime.Caller(s.depth + 2); ok {
		buf = append(buf, `,"caller":`...)
		buf = appendJSON(buf, filepath.Base(file)+":"+strconv.Itoa(line))
	}
	if s.name != "" {
		buf = append(buf, `,"logger":`...)
		buf = appendJSON(buf, s.name)
	}
	buf = append(buf, `,"msg":`...)
	buf = appendJSON(buf, msg)
	buf = append(buf, `,"v":`...)
	buf = strconv.AppendInt(buf, int64(level), 10)
	if err != nil {
		buf = append(buf, `,"err":`...)
		buf = appendJSON(buf, err.Error())
	}
	for _, pairs := range [][]any{s.values, kv} {
		for i := 0; i+1 < len(pairs); i += 2 {
			key, ok := pairs[i].(string)
			if !ok {
				key = fmt.Sprint(pairs[i])
			}
			buf = append(buf, ',')
			buf = appendJSON(buf, key)
			buf = append(buf, ':')
			buf = appendJSON(buf, value(pairs[i+1]))
		}
	}
	buf = append(buf, '}', '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = s.out.Write(buf)
}

// value makes errors and Stringers readable rather than "{}".
func value(v any) any {
	switch v := v.(type) {
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	}
	return v
}

func appendJSON(buf []byte, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		data, _ = json.Marshal(fmt.Sprintf("%+v", v))
	}
	return append(buf, data...)
}

func (s *jsonSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.values = append(append([]any{}, s.values...), kv...)
	return &c
}

func (s *jsonSink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		name = c.name + "/" + name
	}
	c.name = name
	return &c
}

func (s *jsonSink) WithCallDepth(depth int) logr.LogSink {
	c := *s
	c.depth += depth
	return &c
}
