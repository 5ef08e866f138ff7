package kvemu

import "testing"

// StartTest starts a listening emulator (Start) for a test and closes it when the test ends.
func StartTest(tb testing.TB, opts Options) *Server {
	tb.Helper()
	srv, err := Start(opts)
	if err != nil {
		tb.Fatalf("kvemu: start: %v", err)
	}
	tb.Cleanup(func() { srv.Close() })
	return srv
}
