// Package capture keeps what a test saw — log lines, response bodies — and the secrets that must never
// be in them, in forms that a leak may take. It imports nothing of the project, so that any package's
// tests can use it, the internal tests of vault, kvemu and spoemu included (they cannot import testenv,
// which imports those packages).
package capture

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
)

// Buffer keeps log output; it is safe for concurrent writers. The zero value is ready to use.
// Cost: it holds everything written to it in memory.
type Buffer struct {
	// Tee, when set, receives every write too (e.g. a capture of the whole suite); its answer is Write's.
	Tee io.Writer

	mu    sync.Mutex
	buf   bytes.Buffer
	lines int
}

var _ io.Writer = (*Buffer)(nil)

// Write keeps p (and passes it to Tee).
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	b.lines += bytes.Count(p, []byte("\n"))
	b.mu.Unlock()
	if b.Tee != nil {
		return b.Tee.Write(p)
	}
	return len(p), nil
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Bytes is a copy of everything written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// Lines is the number of lines written so far.
func (b *Buffer) Lines() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lines
}

// Records decodes the JSON log lines whose "msg" is msg.
func (b *Buffer) Records(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range bytes.Split(b.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// Logger is a JSON logger of every level that writes to b.
func (b *Buffer) Logger() *slog.Logger { return JSONLogger(b) }

// JSONLogger is a JSON logger of every level (debug included) that writes to w.
func JSONLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
