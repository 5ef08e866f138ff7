package funchost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/spomig/spomig/internal/dev/azurite"
)

func TestMain(m *testing.M) {
	code := azurite.RunMain(m)
	if handlerBuild.dir != "" {
		_ = os.RemoveAll(handlerBuild.dir)
	}
	os.Exit(code)
}

var handlerBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// testHandler builds testdata/testhandler once per test run.
func testHandler(t *testing.T) string {
	t.Helper()
	handlerBuild.once.Do(func() {
		handlerBuild.dir, handlerBuild.err = os.MkdirTemp("", "funchost-testhandler-")
		if handlerBuild.err != nil {
			return
		}
		handlerBuild.bin = filepath.Join(handlerBuild.dir, "testhandler")
		out, err := exec.Command("go", "build", "-o", handlerBuild.bin, "./testdata/testhandler").CombinedOutput()
		if err != nil {
			handlerBuild.err = fmt.Errorf("go build testhandler: %v\n%s", err, out)
		}
	})
	if handlerBuild.err != nil {
		t.Fatal(handlerBuild.err)
	}
	return handlerBuild.bin
}

// syncBuffer is a log sink that tests can read while the host writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// testApp is a function app folder for one test, with the test handler linked in as ./testhandler.
type testApp struct {
	t      *testing.T
	dir    string
	record string
	logs   *syncBuffer
	vars   map[string]string
}

const baseHostJSON = `{
  "version": "2.0",
  "customHandler": {
    "description": { "defaultExecutablePath": "testhandler", "workingDirectory": "", "arguments": [] },
    "enableForwardingHttpRequest": %s
  },
  "extensions": {
    "http": { "routePrefix": "api" },
    "queues": { "maxPollingInterval": "00:00:00.500", "visibilityTimeout": "00:00:00", "batchSize": 4, "maxDequeueCount": 3 },
    "blobs": { "maxDegreeOfParallelism": 4, "poisonBlobThreshold": 2 }
  },
  "functionTimeout": "00:02:00"
}`

// newTestApp writes host.json, local.settings.json (AzureWebJobsStorage → the shared Azurite) and the functions.
func newTestApp(t *testing.T, forwarding bool, functions map[string]string, values map[string]string) *testApp {
	t.Helper()
	bin := testHandler(t)
	srv := azurite.Shared(t)
	dir := t.TempDir()
	app := &testApp{t: t, dir: dir, record: filepath.Join(dir, "requests.jsonl"), logs: &syncBuffer{}, vars: map[string]string{}}
	must(t, os.WriteFile(filepath.Join(dir, "host.json"), []byte(fmt.Sprintf(baseHostJSON, fmt.Sprint(forwarding))), 0o644))
	vals := map[string]string{
		"FUNCTIONS_WORKER_RUNTIME": "custom",
		"AzureWebJobsStorage":      srv.ConnectionString(),
		"TESTHANDLER_RECORD":       app.record,
	}
	for k, v := range values {
		vals[k] = v
	}
	ls, _ := json.MarshalIndent(map[string]any{"IsEncrypted": false, "Values": vals}, "", "  ")
	must(t, os.WriteFile(filepath.Join(dir, "local.settings.json"), ls, 0o644))
	for name, fj := range functions {
		must(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, name, "function.json"), []byte(fj), 0o644))
	}
	must(t, os.Symlink(bin, filepath.Join(dir, "testhandler")))
	return app
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// start runs a host on a free port; it is stopped when the test ends (logs are printed if the test failed).
func (a *testApp) start(opts Options) *Host {
	t := a.t
	t.Helper()
	opts.AppDir = a.dir
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = "127.0.0.1:0"
	}
	opts.Logger = slog.New(slog.NewTextHandler(a.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.PollInterval == 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatalf("start: %v\nlogs:\n%s", err, a.logs.String())
	}
	t.Cleanup(func() {
		_ = h.Stop()
		if t.Failed() {
			t.Logf("host logs:\n%s", a.logs.String())
		}
	})
	return h
}

type handlerRecord struct {
	Kind             string              `json:"kind"`
	PID              int                 `json:"pid"`
	Method           string              `json:"method"`
	Path             string              `json:"path"`
	RawQuery         string              `json:"rawQuery"`
	Host             string              `json:"host"`
	Headers          map[string][]string `json:"headers"`
	ContentLength    int64               `json:"contentLength"`
	TransferEncoding []string            `json:"transferEncoding"`
	Body             string              `json:"body"`
	BodyB64          string              `json:"bodyB64"`
	Env              map[string]string   `json:"env"`
}

// records returns what the test handler recorded, optionally only requests to one path.
func (a *testApp) records(path string) []handlerRecord {
	a.t.Helper()
	f, err := os.Open(a.record)
	if os.IsNotExist(err) {
		return nil
	}
	must(a.t, err)
	defer f.Close()
	var out []handlerRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r handlerRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if path == "" || (r.Kind == "request" && r.Path == path) {
			out = append(out, r)
		}
	}
	return out
}

// waitRecords waits until at least n requests to path were recorded.
func (a *testApp) waitRecords(path string, n int, timeout time.Duration) []handlerRecord {
	a.t.Helper()
	var recs []handlerRecord
	waitFor(a.t, timeout, fmt.Sprintf("%d request(s) to %s", n, path), func() bool {
		recs = a.records(path)
		return len(recs) >= n
	})
	return recs
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// envelopeBody decodes a recorded envelope request body.
func envelopeBody(t *testing.T, r handlerRecord) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.Body), &m); err != nil {
		t.Fatalf("request body is not JSON: %v\n%s", err, r.Body)
	}
	return m
}

// Fixture matching. A fixture is JSON; in its strings these tokens match volatile values:
//
//	{{guid}} a GUID   {{time}} an ISO time without fractions (+00:00)   {{utcnow}} a UTC time with fractions (Z)
//	{{any}} anything  {{b64}} base64  {{int}} digits  {{var:NAME}} the test's value NAME (matched literally)
var tokenRE = regexp.MustCompile(`\{\{(guid|time|utcnow|any|b64|int|var:[A-Za-z0-9_]+)\}\}`)

func (a *testApp) patternFor(s string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^`)
	last := 0
	for _, m := range tokenRE.FindAllStringSubmatchIndex(s, -1) {
		b.WriteString(regexp.QuoteMeta(s[last:m[0]]))
		switch tok := s[m[2]:m[3]]; {
		case tok == "guid":
			b.WriteString(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
		case tok == "time":
			b.WriteString(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00`)
		case tok == "utcnow":
			b.WriteString(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?Z`)
		case tok == "any":
			b.WriteString(`(?s:.*)`)
		case tok == "b64":
			b.WriteString(`[A-Za-z0-9+/=]+`)
		case tok == "int":
			b.WriteString(`\d+`)
		default:
			name := strings.TrimPrefix(tok, "var:")
			v, ok := a.vars[name]
			if !ok {
				a.t.Fatalf("fixture uses unknown var %s", name)
			}
			b.WriteString(regexp.QuoteMeta(v))
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(s[last:]) + `$`)
	return regexp.MustCompile(b.String())
}

// matchFixture compares actual (decoded JSON) with testdata/fixtures/<name>; objects must have the same keys.
func (a *testApp) matchFixture(name string, actual any) {
	a.t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
	must(a.t, err)
	var expected any
	must(a.t, json.Unmarshal(b, &expected))
	// Normalise actual through JSON so that types match.
	ab, _ := json.Marshal(actual)
	var act any
	must(a.t, json.Unmarshal(ab, &act))
	var diffs []string
	a.compare("$", expected, act, &diffs)
	if len(diffs) > 0 {
		pretty, _ := json.MarshalIndent(act, "", "  ")
		a.t.Errorf("%s: request differs from the fixture:\n  %s\nactual:\n%s", name, strings.Join(diffs, "\n  "), pretty)
	}
}

func (a *testApp) compare(path string, exp, act any, diffs *[]string) {
	switch e := exp.(type) {
	case map[string]any:
		am, ok := act.(map[string]any)
		if !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s: want object, got %v", path, act))
			return
		}
		keys := map[string]bool{}
		for k := range e {
			keys[k] = true
		}
		for k := range am {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			ev, eok := e[k]
			av, aok := am[k]
			switch {
			case !eok:
				*diffs = append(*diffs, fmt.Sprintf("%s.%s: unexpected member (%v)", path, k, av))
			case !aok:
				*diffs = append(*diffs, fmt.Sprintf("%s.%s: missing", path, k))
			default:
				a.compare(path+"."+k, ev, av, diffs)
			}
		}
	case []any:
		aa, ok := act.([]any)
		if !ok || len(aa) != len(e) {
			*diffs = append(*diffs, fmt.Sprintf("%s: want %d-element array, got %v", path, len(e), act))
			return
		}
		for i := range e {
			a.compare(fmt.Sprintf("%s[%d]", path, i), e[i], aa[i], diffs)
		}
	case string:
		if e == "{{any}}" {
			return
		}
		as, ok := act.(string)
		if !ok || !a.patternFor(e).MatchString(as) {
			*diffs = append(*diffs, fmt.Sprintf("%s: want %q, got %#v", path, e, act))
		}
	default:
		if fmt.Sprint(exp) != fmt.Sprint(act) {
			*diffs = append(*diffs, fmt.Sprintf("%s: want %v, got %v", path, exp, act))
		}
	}
}

// requestView is what the fixtures describe of a request to the handler.
func requestView(t *testing.T, r handlerRecord) map[string]any {
	v := map[string]any{
		"method":           r.Method,
		"path":             r.Path,
		"rawQuery":         r.RawQuery,
		"headers":          r.Headers,
		"contentLength":    r.ContentLength,
		"transferEncoding": r.TransferEncoding,
	}
	if r.TransferEncoding == nil {
		v["transferEncoding"] = []string{}
	}
	if strings.HasPrefix(strings.Join(r.Headers["Content-Type"], ""), "application/json") {
		v["body"] = envelopeBody(t, r)
	} else {
		v["body"] = r.Body
	}
	return v
}

// storage helpers against the shared Azurite

func queueClient(t *testing.T, name string) *azqueue.QueueClient {
	t.Helper()
	svc, err := azqueue.NewServiceClientFromConnectionString(azurite.Shared(t).ConnectionString(), nil)
	must(t, err)
	return svc.NewQueueClient(name)
}

func enqueue(t *testing.T, queue, text string) {
	t.Helper()
	q := queueClient(t, queue)
	must(t, enqueueCreate(context.Background(), q, text))
}

// peekTexts returns up to 32 visible message texts (as stored), nil when the queue does not exist.
func peekTexts(t *testing.T, queue string) []string {
	t.Helper()
	resp, err := queueClient(t, queue).PeekMessages(context.Background(), &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
	if err != nil {
		if queueerror.HasCode(err, queueerror.QueueNotFound) {
			return nil
		}
		t.Fatal(err)
	}
	var out []string
	for _, m := range resp.Messages {
		out = append(out, *m.MessageText)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func unb64(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%q is not base64: %v", s, err)
	}
	return string(b)
}

func blobService(t *testing.T) *service.Client {
	t.Helper()
	c, err := service.NewClientFromConnectionString(azurite.Shared(t).ConnectionString(), nil)
	must(t, err)
	return c
}

func uploadBlob(t *testing.T, containerName, name string, data []byte, metadata map[string]*string) {
	t.Helper()
	cc := blobService(t).NewContainerClient(containerName)
	if _, err := cc.Create(context.Background(), nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		t.Fatal(err)
	}
	_, err := cc.NewBlockBlobClient(name).UploadBuffer(context.Background(), data, &blockblob.UploadBufferOptions{Metadata: metadata})
	must(t, err)
}

// readBlob returns the blob content, or nil when it does not exist.
func readBlob(t *testing.T, containerName, name string) []byte {
	t.Helper()
	dl, err := blobService(t).NewContainerClient(containerName).NewBlobClient(name).DownloadStream(context.Background(), nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			return nil
		}
		t.Fatal(err)
	}
	defer dl.Body.Close()
	b, err := io.ReadAll(dl.Body)
	must(t, err)
	return b
}

// listBlobs returns the blob names in a container under a prefix.
func listBlobs(t *testing.T, containerName, prefix string) []string {
	t.Helper()
	pager := blobService(t).NewContainerClient(containerName).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix})
	var out []string
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			if bloberror.HasCode(err, bloberror.ContainerNotFound) {
				return nil
			}
			t.Fatal(err)
		}
		for _, it := range page.Segment.BlobItems {
			out = append(out, *it.Name)
		}
	}
	return out
}

func newDiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
