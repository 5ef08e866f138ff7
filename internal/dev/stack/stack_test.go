package stack

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// TestStackStartsAndStopsEveryPart starts the whole local world on free ports with a freshly built
// handler, checks each part answers, and that Stop ends every process it started.
func TestStackStartsAndStopsEveryPart(t *testing.T) {
	app, _ := filepath.Abs("../../..")
	bin := filepath.Join(t.TempDir(), "handler")
	if out, err := exec.Command("go", "build", "-o", bin, app).CombinedOutput(); err != nil {
		t.Fatalf("build handler: %v\n%s", err, out)
	}
	var log logBuf
	s, err := Start(context.Background(), Options{AppDir: app, Dir: t.TempDir(), HandlerCommand: []string{bin}, Log: &log})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, log.String())
	}
	pids := []int{s.AppStorage.PID(), s.SPOStorage.PID(), s.Host.HandlerPID()}
	client := s.CA.HTTPClient()
	for name, url := range map[string]string{
		"key vault": s.KeyVault.URL() + "/_emulator/health",
		"spo":       s.SPO.URL() + "/_emulator/health",
	} {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s health: %d", name, resp.StatusCode)
		}
	}
	// The API refuses a call without the function key, before it reaches the handler.
	resp, err := http.Get(s.APIBase() + "/migrations")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API without key: %d", resp.StatusCode)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d still alive after Stop", pid)
		}
	}
}

type logBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }
