package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	// repoRoot is the Functions app folder (host.json, function folders).
	repoRoot string
	// handlerBin is the handler built once for the whole test binary.
	handlerBin string
)

func TestMain(m *testing.M) {
	flag.Parse()
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	repoRoot = root
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	tmp, err := os.MkdirTemp("", "spomig-e2e-handler-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	handlerBin = filepath.Join(tmp, "handler")
	cmd := exec.Command("go", "build", "-o", handlerBin, "github.com/spomig/spomig")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build the handler: %v\n%s", err, out)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}
