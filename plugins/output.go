package plugins

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/internal/printable"
	"github.com/pullwise/pullwise/sdk"
)

// stderrKept is how much of a call's stderr is kept for a fault message: the
// head, where a crashing runtime says why, before its stack dump.
const stderrKept = 4 << 10

// output takes what an instance writes to stdout, stderr and the log import
// and logs it line by line under the module's name. Each call may log at
// most limit bytes; a module that floods is cut off with one warning and
// costs the host no more than counting the bytes.
type output struct {
	logger hclog.Logger
	limit  int

	mu      sync.Mutex
	used    int
	dropped int
	partial map[string][]byte // unterminated line per stream
	stderr  []byte            // first stderrKept bytes of stderr this call
}

func newOutput(l hclog.Logger, limit int) *output {
	return &output{logger: l, limit: limit, partial: map[string][]byte{}}
}

// reset starts a new call's budget, reporting what the last call dropped.
func (o *output) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushLocked()
	o.used, o.dropped = 0, 0
	o.stderr = o.stderr[:0]
}

func (o *output) flushLocked() {
	for name, p := range o.partial {
		if len(p) > 0 {
			o.logger.Info(printable.String(string(p)), "stream", name)
		}
		delete(o.partial, name)
	}
	if o.dropped > 0 {
		o.logger.Warn("module output over the per-call limit was dropped", "limit_bytes", o.limit, "dropped_bytes", o.dropped)
		o.dropped = 0
	}
}

// crash summarises what this call wrote to stderr for a fault message: the
// lines a crashing runtime leads with (Go's "panic:", "fatal error:",
// "runtime:"), else the last line kept. The full text is in the log.
func (o *output) crash() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushLocked()
	var keep []string
	var last string
	for _, line := range strings.Split(string(o.stderr), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		last = line
		for _, p := range []string{"panic:", "fatal error:", "runtime:"} {
			if strings.HasPrefix(line, p) {
				keep = append(keep, line)
			}
		}
	}
	if len(keep) == 0 && last != "" {
		keep = []string{last}
	}
	return printable.String(strings.Join(keep, "; "))
}

func (o *output) stream(name string) io.Writer { return streamWriter{o, name} }

type streamWriter struct {
	o    *output
	name string
}

func (w streamWriter) Write(p []byte) (int, error) {
	o := w.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if w.name == "stderr" {
		o.stderr = append(o.stderr, p[:min(len(p), stderrKept-len(o.stderr))]...)
	}
	keep := min(len(p), max(o.limit-o.used, 0))
	o.used += keep
	o.dropped += len(p) - keep
	buf := append(o.partial[w.name], p[:keep]...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		o.logger.Info(printable.String(string(buf[:i])), "stream", w.name)
		buf = buf[i+1:]
	}
	o.partial[w.name] = append([]byte(nil), buf...)
	// Report everything as written: a module must not see an error and
	// retry, which would only flood more.
	return len(p), nil
}

func (o *output) log(level sdk.Level, msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.used+len(msg) > o.limit {
		o.dropped += len(msg)
		return
	}
	o.used += len(msg)
	msg = printable.String(msg) // a module's text must not forge log lines or drive a terminal
	switch level {
	case sdk.LevelDebug:
		o.logger.Debug(msg)
	case sdk.LevelInfo:
		o.logger.Info(msg)
	case sdk.LevelWarn:
		o.logger.Warn(msg)
	case sdk.LevelError:
		o.logger.Error(msg)
	default:
		o.logger.Info(msg, "level", fmt.Sprint(level))
	}
}
