package functions

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Logs written through the logger of an invocation go both to the process's structured log (stdout, which
// the host captures) and to the response's Logs array (which the host writes to the function's logger and
// Application Insights). NewLogHandler builds the handler that does both.

type logSink struct {
	mu    sync.Mutex
	lines []string
}

// maxLogLines bounds the Logs array of one response: a runaway loop must not build a huge response.
const maxLogLines = 500

func (s *logSink) add(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(s.lines) < maxLogLines:
		s.lines = append(s.lines, line)
	case len(s.lines) == maxLogLines:
		s.lines = append(s.lines, "… further log lines omitted (see the handler's own log)")
	}
}

func (s *logSink) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.lines
	s.lines = nil
	if out == nil {
		out = []string{}
	}
	return out
}

type sinkKey struct{}

func withSink(ctx context.Context, s *logSink) context.Context {
	return context.WithValue(ctx, sinkKey{}, s)
}

// NewLogHandler wraps base so that records logged with a context of an invocation are also collected
// for that invocation's response Logs.
func NewLogHandler(base slog.Handler) slog.Handler { return &teeHandler{base: base} }

type teeHandler struct {
	base  slog.Handler
	attrs []slog.Attr
	group string
}

var _ slog.Handler = (*teeHandler)(nil)

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.base.Enabled(ctx, l) }

func (h *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if s, ok := ctx.Value(sinkKey{}).(*logSink); ok && s != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
		write := func(a slog.Attr) bool {
			if a.Key == "invocation_id" || a.Key == "function" {
				return true
			}
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		}
		for _, a := range h.attrs {
			write(a)
		}
		r.Attrs(write)
		s.add(b.String())
	}
	return h.base.Handle(ctx, r)
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &teeHandler{base: h.base.WithAttrs(as), attrs: append(append([]slog.Attr(nil), h.attrs...), as...), group: h.group}
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	return &teeHandler{base: h.base.WithGroup(name), attrs: h.attrs, group: name}
}
