package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/spomig/spomig/internal/dev/kvemu"
)

// The test binary doubles as the kvemu command when KVEMU_TEST_MAIN is set.
func TestMain(m *testing.M) {
	if os.Getenv("KVEMU_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func waitReady(t *testing.T, path string, exited <-chan error) Ready {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			var r Ready
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("ready file: %v", err)
			}
			return r
		}
		select {
		case err := <-exited:
			t.Fatalf("kvemu exited early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("kvemu did not become ready")
	return Ready{}
}

// clientFromBundle trusts the CA bundle file, as SSL_CERT_FILE would.
func clientFromBundle(t *testing.T, r Ready) *azsecrets.Client {
	t.Helper()
	pem, err := os.ReadFile(r.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("bundle holds no certificates")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c, err := azsecrets.NewClient(r.URL, &kvemu.Credential{}, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: tr}}, DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func start(t *testing.T, data, ready, pid string) (*exec.Cmd, <-chan error, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-data", data, "-ready-file", ready, "-pid-file", pid, "-tenant", "t-1")
	cmd.Env = append(os.Environ(), "KVEMU_TEST_MAIN=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() }) // no-op once it has exited
	return cmd, exited, &out
}

func TestCommandServesPersistsAndStopsOnSIGTERM(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	data, ready, pid := filepath.Join(root, "kv"), filepath.Join(root, "run", "kvemu.ready"), filepath.Join(root, "run", "kvemu.pid")

	cmd, exited, out := start(t, data, ready, pid)
	r := waitReady(t, ready, exited)
	if !strings.HasPrefix(r.URL, "https://127.0.0.1:") || r.CABundle != filepath.Join(root, "tls", "ca-bundle.pem") || r.PID != cmd.Process.Pid {
		t.Fatalf("ready %+v", r)
	}
	if b, err := os.ReadFile(pid); err != nil || strings.TrimSpace(string(b)) == "" {
		t.Fatalf("pid file: %v", err)
	}
	c := clientFromBundle(t, r)
	if _, err := c.SetSecret(ctx, "survivor", azsecrets.SetSecretParameters{Value: to.Ptr("still-here")}, nil); err != nil {
		t.Fatal(err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("kvemu did not stop on SIGTERM")
	}
	if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("ready file left behind")
	}
	if _, err := os.Stat(pid); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("pid file left behind")
	}
	if !strings.Contains(out.String(), "kvemu: vault URL "+r.URL) || !strings.Contains(out.String(), "SSL_CERT_FILE="+r.CABundle) {
		t.Fatalf("output:\n%s", out)
	}
	if strings.Contains(out.String(), "still-here") {
		t.Fatal("secret value in the output")
	}

	// Restart on the same folder: the secret is there, on a new port, with the same CA.
	_, exited2, _ := start(t, data, ready, pid)
	r2 := waitReady(t, ready, exited2)
	got, err := clientFromBundle(t, r2).GetSecret(ctx, "survivor", "", nil)
	if err != nil || *got.Value != "still-here" {
		t.Fatalf("after restart: %v", err)
	}
}

func TestRunFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-allow", ":get"}, &out, &out); err == nil {
		t.Fatal("bad -allow accepted")
	}
	if err := run(context.Background(), []string{"-log-level", "loud"}, &out, &out); err == nil {
		t.Fatal("bad -log-level accepted")
	}
	var a allowFlag
	if err := a.Set("oid-1:get,list"); err != nil || a[0].Identity != "oid-1" || len(a[0].Permissions) != 2 {
		t.Fatalf("%v %+v", err, a)
	}
}
