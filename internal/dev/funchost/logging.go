package funchost

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// ConsoleHandler is a slog.Handler that prints like the Functions host console: "[2026-12-04T10:00:00.123Z] msg",
// followed by any attributes as key=value.
type ConsoleHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	level slog.Leveler
	attrs []slog.Attr
}

var _ slog.Handler = (*ConsoleHandler)(nil)

// NewConsoleHandler returns a ConsoleHandler writing to w records at level or above (nil: Info).
func NewConsoleHandler(w io.Writer, level slog.Leveler) *ConsoleHandler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &ConsoleHandler{mu: &sync.Mutex{}, w: w, level: level}
}

func (c *ConsoleHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= c.level.Level() }

func (c *ConsoleHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	fmt.Fprintf(&b, "[%s] ", t.UTC().Format("2006-01-02T15:04:05.000Z"))
	if r.Level >= slog.LevelWarn {
		b.WriteString(r.Level.String() + ": ")
	}
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range c.attrs {
		add(a)
	}
	r.Attrs(add)
	b.WriteString("\n")
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := io.WriteString(c.w, b.String())
	return err
}

func (c *ConsoleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *c
	n.attrs = append(append([]slog.Attr{}, c.attrs...), attrs...)
	return &n
}

// WithGroup is not supported by this simple handler; attributes stay flat.
func (c *ConsoleHandler) WithGroup(string) slog.Handler { return c }
