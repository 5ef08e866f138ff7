package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestHandlerAnswersReadinessAtOnce builds the real handler, starts it with nothing but the port (as the
// host does before any settings matter) and measures the time from process start to the first answer of
// GET /. The figure is logged, not asserted: machines are noisy.
func TestHandlerAnswersReadinessAtOnce(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "handler")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	cmd := exec.Command(bin)
	cmd.Env = []string{"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port), "PATH=" + os.Getenv("PATH")}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	var first time.Duration
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			first = time.Since(start)
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("handler did not answer GET / within the host's 30 s")
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("GET / answered %v after process start", first)

	// A warm ping, like the host's periodic latency check.
	t0 := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Logf("warm GET / took %v", time.Since(t0))

	// An invocation without settings fails with a clear, specific message (not a crash).
	resp, err = http.Post(url+"SubmitQueueTrigger", "application/json", strings.NewReader(`{"Data":{"message":"\"x\""},"Metadata":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Logs []string }
	_ = json.NewDecoder(resp.Body).Decode(&env)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(strings.Join(env.Logs, " "), "SPOMIG_KEYVAULT_URL is missing") {
		t.Fatalf("invocation without settings: %d %q", resp.StatusCode, env.Logs)
	}

	// Graceful shutdown on SIGTERM.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("handler exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("handler did not stop on SIGTERM")
	}
}

func TestHandlerWithoutPortSaysSo(t *testing.T) {
	out, err := exec.Command("go", "run", ".").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FUNCTIONS_CUSTOMHANDLER_PORT is missing") {
		t.Fatalf("want a clear error, got %v: %s", err, out)
	}
}

// TestAppLayoutMatchesSchemas validates host.json and each function.json against SchemaStore's schemas
// (../shared/schemas). function.json's bindings are validated one by one against bindingBase plus the
// definition of their type, as the schemas' README advises.
func TestAppLayoutMatchesSchemas(t *testing.T) {
	schemaDir := os.Getenv("SPOMIG_SCHEMAS")
	if schemaDir == "" {
		schemaDir = filepath.Join("..", "shared", "schemas")
	}
	if _, err := os.Stat(schemaDir); err != nil {
		schemaDir = filepath.Join("testdata", "schemas")
	}
	load := func(p string) any {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		v, err := jsonschema.UnmarshalJSON(f)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return v
	}
	c := jsonschema.NewCompiler()
	hostSchemaPath := filepath.Join(schemaDir, "azure-functions-host.schema.json")
	fnSchemaPath := filepath.Join(schemaDir, "azure-functions-function.schema.json")
	if err := c.AddResource("host.schema.json", load(hostSchemaPath)); err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("function.schema.json", load(fnSchemaPath)); err != nil {
		t.Fatal(err)
	}
	hs, err := c.Compile("host.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	hostDoc := load("host.json")
	if err := hs.Validate(hostDoc); err != nil {
		t.Fatalf("host.json: %v", err)
	}
	// The schema does bite: a wrong version is refused.
	hostDoc.(map[string]any)["version"] = "3.0"
	if err := hs.Validate(hostDoc); err == nil {
		t.Fatal("schema accepted host.json version 3.0: the validation is not effective")
	}
	// The schema definition each binding type belongs to.
	defs := map[string]string{"httpTrigger": "httpBinding", "http": "httpBinding", "blobTrigger": "blobBinding",
		"queueTrigger": "queueBinding", "timerTrigger": "timerTriggerBinding"}
	base, err := c.Compile("function.schema.json#/definitions/bindingBase")
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"ProvisionHttp", "EncryptBlobTrigger", "SubmitQueueTrigger", "MonitorTimer"} {
		doc := load(filepath.Join(fn, "function.json")).(map[string]any)
		for _, raw := range doc["bindings"].([]any) {
			bd := raw.(map[string]any)
			typ := bd["type"].(string)
			if err := base.Validate(raw); err != nil {
				t.Errorf("%s binding %s: bindingBase: %v", fn, typ, err)
			}
			def := defs[typ]
			if def == "" {
				t.Errorf("%s: binding type %s has no schema definition here", fn, typ)
				continue
			}
			s, err := c.Compile("function.schema.json#/definitions/" + def)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(raw); err != nil {
				t.Errorf("%s binding %s (%s): %v", fn, typ, def, err)
			}
			// ... and bites on bindings too: a wrong direction for a trigger is refused.
			if strings.HasSuffix(typ, "Trigger") {
				bad := map[string]any{}
				for k, v := range bd {
					bad[k] = v
				}
				bad["direction"] = "out"
				if err := s.Validate(bad); err == nil && typ != "timerTrigger" {
					t.Errorf("%s: schema accepted a %s with direction out", fn, typ)
				}
			}
		}
	}
}

// TestHandlerDoesNotShipTheLocalWorld: the handler binary's dependencies include no dev package
// (emulators, local host, test helpers): product code never imports internal/dev.
func TestHandlerDoesNotShipTheLocalWorld(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/spomig/spomig/internal/dev") || strings.HasPrefix(dep, "github.com/spomig/spomig/cmd") {
			t.Errorf("the handler depends on %s", dep)
		}
	}
}
