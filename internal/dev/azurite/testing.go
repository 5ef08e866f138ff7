package azurite

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
)

var shared struct {
	mu      sync.Mutex
	srv     *Server
	err     error
	enabled bool
}

// RunMain runs a package's tests with one shared Azurite that is started on first use (Shared) and
// stopped by PID after the tests. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(azurite.RunMain(m)) }
func RunMain(m *testing.M) int {
	shared.mu.Lock()
	shared.enabled = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	if shared.srv != nil {
		shared.srv.Stop()
		shared.srv = nil
	}
	shared.mu.Unlock()
	return code
}

// Shared returns the package's shared Azurite, starting it on first use. The package must use RunMain in
// TestMain, so that the process is stopped after the tests. Tests isolate themselves by using their own
// container, queue and table names (see UniqueName).
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.enabled {
		tb.Fatal("azurite.Shared needs TestMain to call azurite.RunMain(m)")
	}
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = Start(context.Background(), Options{})
	}
	if shared.err != nil {
		tb.Fatalf("start azurite: %v", shared.err)
	}
	return shared.srv
}

// New starts a dedicated Azurite for one test and stops it when the test ends.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := Start(context.Background(), opts)
	if err != nil {
		tb.Fatalf("start azurite: %v", err)
	}
	tb.Cleanup(func() { s.Stop() })
	return s
}

var uniq struct {
	sync.Mutex
	n int
}

// UniqueName returns a storage-safe name (lower case letters, digits, '-', 3..63 chars) unique in this process.
func UniqueName(prefix string) string {
	uniq.Lock()
	uniq.n++
	n := uniq.n
	uniq.Unlock()
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), n)
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	return name
}
