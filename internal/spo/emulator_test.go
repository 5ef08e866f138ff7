package spo_test

// Client tests against the SPO emulator (internal/dev/spoemu): every call of the real spo.Client, with
// the real azidentity ManagedIdentityCredential against the local identity endpoint, over HTTPS to the
// emulator and an HTTPS Azurite. Failure shapes the emulator cannot produce are covered by the
// httptest tests of package spo.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/dev/identity"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/dev/testenv"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/spo"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunMain(m)) }

// emuEnv is one emulator (on the package's shared HTTPS Azurite, "SharePoint's storage account") and a
// spo.Client for it, built the way the local stack builds it. Each test isolates itself by its own site
// names (and so containers and queue).
type emuEnv struct {
	sp     *testenv.SharePoint
	e      *spoemu.Emulator
	client *spo.Client
	sent   *countingTransport // every request the client sent
	tokens *atomic.Int32      // token requests the identity endpoint served
	logs   *capture.Buffer    // the client's debug log
	blob   string             // Azurite blob host:port ("SharePoint's storage account")
	queue  string             // Azurite queue host:port
}

// countingTransport counts the requests that reach the network.
type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(r)
}

func (c *countingTransport) count() int { return int(c.n.Load()) }

// startEmu starts an emulator for the test and a client with the real managed-identity credential.
// The emulator checks the tokens' audience, so a token for the wrong scope would be refused.
func startEmu(t *testing.T, opts spoemu.Options) *emuEnv {
	t.Helper()
	var tokens atomic.Int32
	mux := http.NewServeMux()
	idh := identity.Handler(identity.Options{Header: "spo-emulator-test"})
	mux.Handle("/msi/token", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokens.Add(1)
		idh.ServeHTTP(w, r)
	}))
	ids := httptest.NewServer(mux)
	t.Cleanup(ids.Close)
	t.Setenv("IDENTITY_ENDPOINT", ids.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "spo-emulator-test")
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}

	opts.CheckAudience = true
	sp := testenv.StartSharePoint(t, opts)
	hosts := sp.Hosts()
	blob, queue := hosts[0], hosts[1]

	sent := &countingTransport{}
	logs := &capture.Buffer{}
	client := sp.Client(t, testenv.ClientOptions{
		Credential:   cred,
		Wrap:         func(base http.RoundTripper) http.RoundTripper { sent.base = base; return sent },
		Organisation: "Contoso",
		Version:      "1.0.0",
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	env := &emuEnv{sp: sp, e: sp.Emulator, client: client, sent: sent, tokens: &tokens, logs: logs, blob: blob, queue: queue}
	t.Cleanup(func() { env.checkLogsRedacted(t) })
	return env
}

// sigValue matches a SAS signature's value (as RedactURL does).
var sigValue = regexp.MustCompile(`(?i)sig(?:=|%3d)([^&#\s"'<>]*)`)

// hasUnredactedSig reports whether s holds a SAS signature other than "REDACTED".
func hasUnredactedSig(s string) bool {
	for _, m := range sigValue.FindAllStringSubmatch(s, -1) {
		if m[1] != "REDACTED" {
			return true
		}
	}
	return false
}

// checkLogsRedacted fails when the client's log holds a SAS signature or a bearer token (the identity
// endpoint's tokens are unsigned JWTs: base64url of {"alg":…}).
func (env *emuEnv) checkLogsRedacted(t *testing.T) {
	logs := env.logs.String()
	if hasUnredactedSig(logs) || strings.Contains(logs, "eyJhbGci") {
		t.Errorf("client log holds a secret:\n%s", logs)
	}
}

// site is a fresh site of the emulator, by name and URL.
func (env *emuEnv) site(prefix string) (name, siteURL string) { return env.sp.NewSite(prefix) }

func (env *emuEnv) storageOptions() azcore.ClientOptions { return env.sp.ClientOptions() }

// keyFor is a crypt key source that knows one job.
func keyFor(jobID string, key []byte) func(string) ([]byte, error) {
	return func(id string) ([]byte, error) {
		if !strings.EqualFold(id, jobID) {
			return nil, fmt.Errorf("no key for job %q", id)
		}
		return key, nil
	}
}

// decodeEvent reads one progress-log entry. The reference (§1.6) and the emulator give the plain
// event JSON; an encrypted envelope (JSON or base64 of it, as on the queue) is decrypted with the
// job key, so either form is accepted.
func decodeEvent(t *testing.T, raw json.RawMessage, keys func(string) ([]byte, error)) crypt.Event {
	t.Helper()
	text := string(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil { // kept as a JSON string: not JSON inside, maybe base64
		text = s
	}
	ev, err := crypt.OpenMessage(text, keys)
	if err != nil {
		t.Fatalf("progress event: %v", err)
	}
	return ev
}

func eventNames(evs []crypt.Event) []string {
	var n []string
	for _, ev := range evs {
		n = append(n, ev.Name)
	}
	return n
}

func findEvent(evs []crypt.Event, name string) (crypt.Event, bool) {
	for _, ev := range evs {
		if ev.Name == name {
			return ev, true
		}
	}
	return crypt.Event{}, false
}

// stagePackage builds a valid package for the site and uploads it as a client does (testenv.StagePackage).
func stagePackage(t *testing.T, env *emuEnv, c spo.Containers, siteURL, webID string, files []migpkg.BuildFile) {
	t.Helper()
	testenv.StagePackage(t, c, testenv.PackageOptions{SiteURL: siteURL, WebID: webID, Files: files, ClientOptions: env.storageOptions()})
}

// drainQueue dequeues and deletes every message of the report queue through its SAS.
func drainQueue(t *testing.T, env *emuEnv, queueURI string) []string {
	t.Helper()
	return testenv.DrainQueue(t, queueURI, env.storageOptions())
}

// openQueueMessages decodes report-queue messages with the job key, checking that each one is an
// encrypted envelope that no other key opens.
func openQueueMessages(t *testing.T, msgs []string, jobID string, key []byte) []crypt.Event {
	t.Helper()
	wrong := bytes.Repeat([]byte{0x5a}, crypt.KeySize)
	var evs []crypt.Event
	for _, m := range msgs {
		raw, err := base64.StdEncoding.DecodeString(m)
		if err != nil {
			t.Fatalf("queue message is not base64: %v", err)
		}
		var env crypt.Envelope
		if err := json.Unmarshal(raw, &env); err != nil || env.Label != crypt.LabelEncrypted || env.Content == "" {
			t.Fatalf("queue message is not an encrypted envelope (err %v)", err)
		}
		if !strings.EqualFold(env.JobID, jobID) {
			t.Errorf("envelope JobId %q, want %s", env.JobID, jobID)
		}
		if strings.Contains(string(raw), `"Event"`) {
			t.Error("envelope carries the event in clear")
		}
		if _, err := crypt.OpenMessage(m, keyFor(jobID, wrong)); err == nil {
			t.Error("a queue message opened with a wrong key")
		}
		if _, err := crypt.OpenMessage(m, func(string) ([]byte, error) { return nil, errors.New("no key") }); err == nil {
			t.Error("a queue message opened without a key")
		}
		ev, err := crypt.OpenMessage(m, keyFor(jobID, key))
		if err != nil {
			t.Fatalf("queue message with the job key: %v", err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// phaseGate holds every job at each spoemu.Phase until the test releases it.
type phaseGate struct {
	reached chan spoemu.Phase
	release chan struct{}
}

func newPhaseGate() *phaseGate {
	return &phaseGate{reached: make(chan spoemu.Phase), release: make(chan struct{})}
}

func (g *phaseGate) gate(ctx context.Context, _ string, ph spoemu.Phase) error {
	select {
	case g.reached <- ph:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await waits until a job reaches phase want.
func (g *phaseGate) await(t *testing.T, want spoemu.Phase) {
	t.Helper()
	select {
	case ph := <-g.reached:
		if ph != want {
			t.Fatalf("job reached %s, want %s", ph, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("job never reached %s", want)
	}
}

func (g *phaseGate) next() { g.release <- struct{}{} }

func TestEmulatorWebIDAndProvisioning(t *testing.T) {
	env := startEmu(t, spoemu.Options{})
	ctx := t.Context()
	name, site := env.site("prov")

	webID, err := env.client.WebID(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	if webID != env.e.WebID(name) {
		t.Errorf("WebID = %s, want %s", webID, env.e.WebID(name))
	}
	if env.tokens.Load() == 0 {
		t.Error("no token was requested from the identity endpoint")
	}

	first, err := env.client.ProvisionMigrationContainers(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	second, err := env.client.ProvisionMigrationContainers(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, c := range []spo.Containers{first, second} {
		if len(c.EncryptionKey) != spo.KeySize {
			t.Errorf("call %d: key is %d bytes", i+1, len(c.EncryptionKey))
		}
		for _, uri := range []string{c.DataContainerURI, c.MetadataContainerURI} {
			u, err := url.Parse(uri)
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != "https" || u.Host != env.blob {
				t.Errorf("call %d: container %s is not https on the storage host %s", i+1, spo.RedactURL(uri), env.blob)
			}
			q := u.Query()
			if q.Get("sp") != "rw" || q.Get("sr") != "c" || q.Get("spr") != "https" || q.Get("sig") == "" {
				t.Errorf("call %d: container SAS sp=%q sr=%q spr=%q, want sp=rw sr=c spr=https with a signature",
					i+1, q.Get("sp"), q.Get("sr"), q.Get("spr"))
			}
			se, err := time.Parse(time.RFC3339, q.Get("se"))
			if err != nil {
				t.Fatalf("call %d: se %q: %v", i+1, q.Get("se"), err)
			}
			// About 3 days (reference §1.2); a value check, not a timing one.
			if left := time.Until(se); left < 71*time.Hour || left > 73*time.Hour {
				t.Errorf("call %d: SAS expires in %s, want about 72h", i+1, left)
			}
			if st, err := time.Parse(time.RFC3339, q.Get("st")); err == nil && st.After(time.Now()) {
				t.Errorf("call %d: SAS starts in the future (%s)", i+1, st)
			}
			id := u.Host + u.Path
			if seen[id] {
				t.Errorf("container %s handed out twice", id)
			}
			seen[id] = true
		}
	}
	if bytes.Equal(first.EncryptionKey, second.EncryptionKey) {
		t.Error("the second ProvisionMigrationContainers returned the same key")
	}

	q1, err := env.client.ProvisionMigrationQueue(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	q2, err := env.client.ProvisionMigrationQueue(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	u1, err1 := url.Parse(q1.JobQueueURI)
	u2, err2 := url.Parse(q2.JobQueueURI)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if u1.Scheme != "https" || u1.Host != env.queue || u1.Query().Get("sig") == "" {
		t.Errorf("queue %s is not a SAS URI on the queue host %s", q1, env.queue)
	}
	if u1.Host+u1.Path != u2.Host+u2.Path {
		t.Errorf("ProvisionMigrationQueue twice: %s then %s, want the same queue", q1, q2)
	}
	// Another site gets its own queue.
	_, other := env.site("prov-other")
	q3, err := env.client.ProvisionMigrationQueue(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if u3, _ := url.Parse(q3.JobQueueURI); u3.Path == u1.Path {
		t.Errorf("two sites share the queue %s", q3)
	}
	if !strings.Contains(env.logs.String(), "sig=REDACTED") {
		t.Errorf("the client logged no redacted container URI:\n%s", env.logs.String())
	}
	for _, s := range []string{first.String(), fmt.Sprint(second), q1.String()} {
		if strings.Contains(s, base64.StdEncoding.EncodeToString(first.EncryptionKey)) || hasUnredactedSig(s) {
			t.Errorf("String() leaks a secret: %s", s)
		}
	}
}

// TestEmulatorEncryptedJob submits a valid encrypted package and follows it with every read call.
func TestEmulatorEncryptedJob(t *testing.T) {
	g := newPhaseGate()
	env := startEmu(t, spoemu.Options{Gate: g.gate, ProgressPageSize: 2, ProgressEvery: 1})
	ctx := t.Context()
	_, site := env.site("job")

	webID, err := env.client.WebID(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	c, err := env.client.ProvisionMigrationContainers(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	q, err := env.client.ProvisionMigrationQueue(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	drainQueue(t, env, q.JobQueueURI) // the site's queue is reused: start empty
	files := []migpkg.BuildFile{
		{Path: "Reports/q1.txt", Size: 100},
		{Path: "Reports/2024/data.bin", Size: 70_000}, // more than one crypt buffer
		{Path: "empty.txt", Size: 0},
	}
	stagePackage(t, env, c, site, webID, files)

	jobID, err := env.client.CreateMigrationJobEncrypted(ctx, site, spo.CreateJobRequest{
		WebID: webID, DataContainerURI: c.DataContainerURI, MetadataContainerURI: c.MetadataContainerURI,
		QueueURI: q.JobQueueURI, Key: c.EncryptionKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(jobID) {
		t.Fatalf("job id %q is not a GUID", jobID)
	}
	keys := keyFor(jobID, c.EncryptionKey)

	// Queued: the job waits at the gate.
	g.await(t, spoemu.PhaseQueued)
	if st, err := env.client.GetMigrationJobStatus(ctx, site, jobID); err != nil || st != spo.JobStateQueued {
		t.Fatalf("status while queued = %v, %v; want Queued", st, err)
	}
	p, err := env.client.GetMigrationJobProgress(ctx, site, jobID, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 1 || decodeEvent(t, p.Events[0], keys).Name != crypt.EventJobQueued {
		t.Fatalf("first progress page = %s, want JobQueued", p.Events)
	}
	// Nothing new: the same token comes back, with no events, however often asked.
	for range 2 {
		again, err := env.client.GetMigrationJobProgress(ctx, site, jobID, p.NextToken)
		if err != nil {
			t.Fatal(err)
		}
		if len(again.Events) != 0 || again.NextToken != p.NextToken {
			t.Fatalf("progress with nothing new = %d events, token %q; want 0, %q", len(again.Events), again.NextToken, p.NextToken)
		}
	}

	// Processing.
	g.next()
	g.await(t, spoemu.PhaseProcessing)
	if st, err := env.client.GetMigrationJobStatus(ctx, site, jobID); err != nil || st != spo.JobStateProcessing {
		t.Fatalf("status while processing = %v, %v; want Processing", st, err)
	}
	g.next()

	// Page through the progress log until JobEnd.
	events := []crypt.Event{decodeEvent(t, p.Events[0], keys)}
	token := p.NextToken
	deadline := time.Now().Add(30 * time.Second)
	for {
		page, err := env.client.GetMigrationJobProgress(ctx, site, jobID, token)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) > 2 {
			t.Errorf("page of %d events, ProgressPageSize is 2", len(page.Events))
		}
		if len(page.Events) == 0 && page.NextToken != token {
			t.Errorf("empty page moved the token from %q to %q", token, page.NextToken)
		}
		for _, raw := range page.Events {
			events = append(events, decodeEvent(t, raw, keys))
		}
		token = page.NextToken
		if _, ok := findEvent(events, crypt.EventJobEnd); ok {
			break
		}
		if _, ok := findEvent(events, crypt.EventJobFatalError); ok {
			t.Fatalf("job failed: %s", eventNames(events))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no JobEnd; events so far: %s", eventNames(events))
		}
		if len(page.Events) == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	info, err := env.e.WaitJob(ctx, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Outcome != spoemu.OutcomeCompleted {
		t.Errorf("outcome %s, want %s", info.Outcome, spoemu.OutcomeCompleted)
	}

	// Ended: nothing new, the token stays; the whole log reads the same again from the start.
	last, err := env.client.GetMigrationJobProgress(ctx, site, jobID, token)
	if err != nil {
		t.Fatal(err)
	}
	if len(last.Events) != 0 || last.NextToken != token {
		t.Errorf("progress after JobEnd = %d events, token %q; want 0, %q", len(last.Events), last.NextToken, token)
	}
	want := env.e.Events(jobID)
	if len(events) != len(want) {
		t.Fatalf("progress gave %d events %s, the emulator logged %d", len(events), eventNames(events), len(want))
	}
	for i, ev := range events {
		wantEv, err := crypt.ParseEvent([]byte(want[i]))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Name != wantEv.Name || ev.TimeRaw != wantEv.TimeRaw || !strings.EqualFold(ev.JobID, jobID) {
			t.Errorf("event %d = %s %s %s, want %s %s", i, ev.Name, ev.JobID, ev.TimeRaw, wantEv.Name, wantEv.TimeRaw)
		}
	}
	replay, err := env.client.GetMigrationJobProgress(ctx, site, jobID, "0")
	if err != nil {
		t.Fatal(err)
	}
	if len(replay.Events) != 2 || decodeEvent(t, replay.Events[0], keys).Name != crypt.EventJobQueued {
		t.Errorf("replay from token 0 = %d events", len(replay.Events))
	}
	names := eventNames(events)
	for i, n := range []string{crypt.EventJobQueued, crypt.EventJobLogFileCreate, crypt.EventJobStart} {
		if names[i] != n {
			t.Fatalf("events %s, want them to begin JobQueued, JobLogFileCreate, JobStart", names)
		}
	}
	if names[len(names)-1] != crypt.EventJobEnd {
		t.Errorf("events %s, want JobEnd last", names)
	}
	if !slices.Contains(names, crypt.EventJobProgress) {
		t.Errorf("events %s, want JobProgress", names)
	}
	end, _ := findEvent(events, crypt.EventJobEnd)
	for field, wantN := range map[string]int64{"FilesCreated": int64(len(files)), "TotalErrors": 0, "BytesProcessed": 70_100} {
		if n, ok := end.Int(field); !ok || n != wantN {
			t.Errorf("JobEnd %s = %d (%t), want %d", field, n, ok, wantN)
		}
	}
	if start, _ := findEvent(events, crypt.EventJobStart); !strings.EqualFold(start.Fields["WebId"], webID) {
		t.Errorf("JobStart WebId %q, want %s", start.Fields["WebId"], webID)
	}

	// The job has left the queue.
	for {
		st, err := env.client.GetMigrationJobStatus(ctx, site, jobID)
		if err != nil {
			t.Fatal(err)
		}
		if st == spo.JobStateNone {
			break
		}
		if st != spo.JobStateProcessing || time.Now().After(deadline) {
			t.Fatalf("status after JobEnd = %s, want Processing then None", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The report queue got the same events, each readable only with the job key.
	msgs := drainQueue(t, env, q.JobQueueURI)
	queued := openQueueMessages(t, msgs, jobID, c.EncryptionKey)
	gotNames, wantNames := eventNames(queued), slices.Clone(names)
	slices.Sort(gotNames)
	slices.Sort(wantNames)
	if !slices.Equal(gotNames, wantNames) {
		t.Errorf("queue events %s, progress events %s", eventNames(queued), names)
	}

	// The import log named by JobLogFileCreate is in the metadata container, encrypted with the job key.
	lfc, _ := findEvent(events, crypt.EventJobLogFileCreate)
	logText := readEncryptedBlob(t, env, c.MetadataContainerURI, lfc.Fields["FileName"], c.EncryptionKey)
	if !strings.Contains(logText, jobID) {
		t.Errorf("import log does not name the job:\n%s", logText)
	}
}

// readEncryptedBlob downloads a blob through the container SAS and decrypts it with key and the IV of
// its metadata.
func readEncryptedBlob(t *testing.T, env *emuEnv, containerURI, name string, key []byte) string {
	t.Helper()
	plain, ok := testenv.ReadEncrypted(t, containerURI, name, key, env.storageOptions())
	if !ok {
		t.Fatalf("download %s: no such blob", name)
	}
	return string(plain)
}

// TestEmulatorCreateJobRefused covers SharePoint's refusals of CreateMigrationJobEncrypted and the
// client's own, which send nothing.
func TestEmulatorCreateJobRefused(t *testing.T) {
	env := startEmu(t, spoemu.Options{})
	ctx := t.Context()
	name, site := env.site("refuse")
	c, err := env.client.ProvisionMigrationContainers(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	other, err := env.client.ProvisionMigrationContainers(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	webID := env.e.WebID(name)
	otherName, _ := env.site("refuse-other")
	otherWebID := env.e.WebID(otherName)
	good := spo.CreateJobRequest{WebID: webID, DataContainerURI: c.DataContainerURI,
		MetadataContainerURI: c.MetadataContainerURI, Key: c.EncryptionKey}

	t.Run("SharePoint refuses", func(t *testing.T) {
		for _, tt := range []struct {
			desc    string
			mod     func(*spo.CreateJobRequest)
			code    int64
			typ     string
			message string
		}{
			{desc: "key of other containers", mod: func(r *spo.CreateJobRequest) { r.Key = other.EncryptionKey },
				code: -1, typ: "System.ArgumentException", message: "encryption key does not match"},
			{desc: "web of another site", mod: func(r *spo.CreateJobRequest) { r.WebID = otherWebID },
				code: -2147024809, typ: "System.ArgumentException", message: "gWebId"},
		} {
			t.Run(tt.desc, func(t *testing.T) {
				req := good
				tt.mod(&req)
				id, err := env.client.CreateMigrationJobEncrypted(ctx, site, req)
				var se *spo.Error
				if !errors.As(err, &se) {
					t.Fatalf("job %q, err = %v; want *spo.Error", id, err)
				}
				if se.StatusCode != http.StatusBadRequest || se.Code != tt.code || se.Type != tt.typ ||
					se.Method != "CreateMigrationJobEncrypted" || !strings.Contains(se.Message, tt.message) {
					t.Errorf("err = %#v; want 400, %d, %s, message with %q", se, tt.code, tt.typ, tt.message)
				}
				if spo.IsJobNotFound(err) || spo.IsThrottled(err) {
					t.Errorf("err = %v classified as not found or throttled", err)
				}
				for _, k := range [][]byte{c.EncryptionKey, other.EncryptionKey} {
					if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(k)) {
						t.Error("error text holds a key")
					}
				}
			})
		}
	})

	t.Run("refused before sending", func(t *testing.T) {
		sameSAS := c.DataContainerURI + "&foo=bar"
		for _, tt := range []struct {
			desc string
			mod  func(*spo.CreateJobRequest)
			want error
		}{
			{"same container twice", func(r *spo.CreateJobRequest) { r.MetadataContainerURI = r.DataContainerURI }, spo.ErrSameContainer},
			{"same container, other query", func(r *spo.CreateJobRequest) { r.MetadataContainerURI = sameSAS }, spo.ErrSameContainer},
			{"short key", func(r *spo.CreateJobRequest) { r.Key = r.Key[:16] }, spo.ErrBadKey},
			{"container off the storage hosts", func(r *spo.CreateJobRequest) {
				r.DataContainerURI = strings.Replace(r.DataContainerURI, env.blob, "localhost:1", 1)
			}, spo.ErrStorageHostNotAllowed},
			{"queue off the storage hosts", func(r *spo.CreateJobRequest) {
				r.QueueURI = strings.Replace(r.DataContainerURI, env.blob, "evil.example:443", 1)
			}, spo.ErrStorageHostNotAllowed},
			{"web id not a GUID", func(r *spo.CreateJobRequest) { r.WebID = "web" }, spo.ErrBadID},
		} {
			t.Run(tt.desc, func(t *testing.T) {
				req := good
				tt.mod(&req)
				before := env.sent.count()
				id, err := env.client.CreateMigrationJobEncrypted(ctx, site, req)
				if !errors.Is(err, tt.want) {
					t.Fatalf("job %q, err = %v; want %v", id, err, tt.want)
				}
				if n := env.sent.count() - before; n != 0 {
					t.Errorf("%d requests sent", n)
				}
				if hasUnredactedSig(err.Error()) {
					t.Errorf("error holds a SAS signature: %v", err)
				}
			})
		}
	})

	// The same containers still take a job with the right key.
	if _, err := env.client.CreateMigrationJobEncrypted(ctx, site, good); err != nil {
		t.Fatalf("the right key: %v", err)
	}
}

func TestEmulatorUnknownJob(t *testing.T) {
	env := startEmu(t, spoemu.Options{})
	ctx := t.Context()
	_, site := env.site("unknown")
	const unknown = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

	// Reference §1.5: an unknown id reads None, like a finished job; it is not an error.
	st, err := env.client.GetMigrationJobStatus(ctx, site, unknown)
	if err != nil || st != spo.JobStateNone {
		t.Errorf("status of an unknown job = %v, %v; want None", st, err)
	}

	// Reference §1.6: HTTP 500 "Job not found", never retried.
	before := env.sent.count()
	_, err = env.client.GetMigrationJobProgress(ctx, site, unknown, "")
	if !spo.IsJobNotFound(err) {
		t.Fatalf("progress of an unknown job: err = %v; want IsJobNotFound", err)
	}
	var se *spo.Error
	if errors.As(err, &se); se.StatusCode != http.StatusInternalServerError || se.Code != spo.CodeJobNotFound ||
		se.Message != "Job not found" || se.Method != "GetMigrationJobProgress" {
		t.Errorf("err = %#v", se)
	}
	if n := env.sent.count() - before; n != 1 {
		t.Errorf("%d requests for a 500, want 1 (no retry)", n)
	}

	ok, err := env.client.DeleteMigrationJob(ctx, site, unknown)
	if err != nil || ok {
		t.Errorf("DeleteMigrationJob of an unknown job = %t, %v; want false", ok, err)
	}
}

func TestEmulatorDeleteQueuedJob(t *testing.T) {
	// The gate keeps every job Queued until the test ends. It deliberately ignores the job's context:
	// a job goroutine that wakes up on the cancellation races DeleteMigrationJob for the job key (see
	// the report), which would make the queue check below flaky.
	hold := make(chan struct{})
	env := startEmu(t, spoemu.Options{Gate: func(context.Context, string, spoemu.Phase) error {
		<-hold
		return nil
	}})
	t.Cleanup(func() { close(hold) }) // runs before the emulator closes
	ctx := t.Context()
	name, site := env.site("delete")
	c, err := env.client.ProvisionMigrationContainers(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	q, err := env.client.ProvisionMigrationQueue(ctx, site)
	if err != nil {
		t.Fatal(err)
	}
	drainQueue(t, env, q.JobQueueURI)
	jobID, err := env.client.CreateMigrationJobEncrypted(ctx, site, spo.CreateJobRequest{
		WebID: env.e.WebID(name), DataContainerURI: c.DataContainerURI, MetadataContainerURI: c.MetadataContainerURI,
		QueueURI: q.JobQueueURI, Key: c.EncryptionKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := env.client.GetMigrationJobStatus(ctx, site, jobID); err != nil || st != spo.JobStateQueued {
		t.Fatalf("status = %v, %v; want Queued", st, err)
	}

	ok, err := env.client.DeleteMigrationJob(ctx, site, jobID)
	if err != nil || !ok {
		t.Fatalf("DeleteMigrationJob of a queued job = %t, %v; want true", ok, err)
	}
	if st, err := env.client.GetMigrationJobStatus(ctx, site, jobID); err != nil || st != spo.JobStateNone {
		t.Errorf("status after delete = %v, %v; want None", st, err)
	}
	ok, err = env.client.DeleteMigrationJob(ctx, site, jobID)
	if err != nil || ok {
		t.Errorf("second DeleteMigrationJob = %t, %v; want false", ok, err)
	}

	keys := keyFor(jobID, c.EncryptionKey)
	p, err := env.client.GetMigrationJobProgress(ctx, site, jobID, "")
	if err != nil {
		t.Fatal(err)
	}
	var events []crypt.Event
	for _, raw := range p.Events {
		events = append(events, decodeEvent(t, raw, keys))
	}
	want := []string{crypt.EventJobQueued, crypt.EventJobCancelled, crypt.EventJobDeleted}
	if !slices.Equal(eventNames(events), want) {
		t.Fatalf("events %s, want %s", eventNames(events), want)
	}
	if b, ok := events[1].Bool("CancelledByUser"); !ok || !b {
		t.Errorf("JobCancelled CancelledByUser = %q, want true", events[1].Fields["CancelledByUser"])
	}
	if info, _ := env.e.Job(jobID); info.Outcome != spoemu.OutcomeCancelled {
		t.Errorf("outcome %q, want %s", info.Outcome, spoemu.OutcomeCancelled)
	}
	queued := eventNames(openQueueMessages(t, drainQueue(t, env, q.JobQueueURI), jobID, c.EncryptionKey))
	slices.Sort(queued)
	slices.Sort(want)
	if !slices.Equal(queued, want) {
		t.Errorf("queue events %s, want %s", queued, want)
	}
}

func TestEmulatorThrottling(t *testing.T) {
	env := startEmu(t, spoemu.Options{})
	ctx := t.Context()
	name, site := env.site("throttle")
	for _, tt := range []struct {
		status int
		call   func() error
	}{
		{http.StatusTooManyRequests, func() error {
			id, err := env.client.WebID(ctx, site)
			if err == nil && id != env.e.WebID(name) {
				err = fmt.Errorf("WebID = %s", id)
			}
			return err
		}},
		{http.StatusServiceUnavailable, func() error {
			_, err := env.client.ProvisionMigrationQueue(ctx, site)
			return err
		}},
	} {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			env.e.SetFaults(name, spoemu.Faults{Throttle: &spoemu.Throttle{Count: 1, Status: tt.status, RetryAfter: 1}})
			before := env.sent.count()
			if err := tt.call(); err != nil {
				t.Fatalf("after one %d: %v", tt.status, err)
			}
			if n := env.sent.count() - before; n != 2 {
				t.Errorf("%d requests, want 2 (the throttled one and its retry)", n)
			}
			if f := env.e.Faults(name); f.Throttle == nil || f.Throttle.Count != 0 {
				t.Errorf("throttle fault not consumed: %+v", f.Throttle)
			}
			// The client logs each wait: exactly Retry-After, real sleep.
			wait := fmt.Sprintf(`msg="spo throttled" op=%s status=%d attempt=1 retry_after=1s`,
				map[int]string{429: "WebID", 503: "ProvisionMigrationQueue"}[tt.status], tt.status)
			if !strings.Contains(env.logs.String(), wait) {
				t.Errorf("log has no %q:\n%s", wait, env.logs.String())
			}
		})
	}
}

func TestEmulatorDisallowedSite(t *testing.T) {
	env := startEmu(t, spoemu.Options{})
	ctx := t.Context()
	var elsewhere atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(other.Close)
	_, site := env.site("allowed")
	host := strings.TrimPrefix(env.e.URL(), "https://")
	_, port, _ := strings.Cut(host, ":")
	const jobID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

	sites := []struct {
		desc string
		url  string
		want error
	}{
		{"another server", other.URL + "/sites/x", spo.ErrSiteNotAllowed},
		{"the emulator as localhost", "https://localhost:" + port + "/sites/x", spo.ErrSiteNotAllowed},
		{"user info", "https://user@" + host + "/sites/x", spo.ErrSiteNotAllowed},
		{"API path", site + "/_api/web", spo.ErrSiteNotAllowed},
		{"http", "http://" + host + "/sites/x", spo.ErrSiteNotHTTPS},
	}
	calls := []struct {
		name string
		call func(site string) error
	}{
		{"WebID", func(s string) error { _, err := env.client.WebID(ctx, s); return err }},
		{"ProvisionMigrationContainers", func(s string) error {
			_, err := env.client.ProvisionMigrationContainers(ctx, s)
			return err
		}},
		{"ProvisionMigrationQueue", func(s string) error { _, err := env.client.ProvisionMigrationQueue(ctx, s); return err }},
		{"CreateMigrationJobEncrypted", func(s string) error {
			_, err := env.client.CreateMigrationJobEncrypted(ctx, s, spo.CreateJobRequest{WebID: jobID,
				DataContainerURI:     "https://" + env.blob + "/devstoreaccount1/data?sig=x",
				MetadataContainerURI: "https://" + env.blob + "/devstoreaccount1/meta?sig=x",
				Key:                  make([]byte, spo.KeySize)})
			return err
		}},
		{"GetMigrationJobStatus", func(s string) error { _, err := env.client.GetMigrationJobStatus(ctx, s, jobID); return err }},
		{"GetMigrationJobProgress", func(s string) error {
			_, err := env.client.GetMigrationJobProgress(ctx, s, jobID, "")
			return err
		}},
		{"DeleteMigrationJob", func(s string) error { _, err := env.client.DeleteMigrationJob(ctx, s, jobID); return err }},
	}
	tokens := env.tokens.Load()
	for _, s := range sites {
		for _, c := range calls {
			t.Run(s.desc+"/"+c.name, func(t *testing.T) {
				if err := c.call(s.url); !errors.Is(err, s.want) {
					t.Errorf("err = %v, want %v", err, s.want)
				}
			})
		}
	}
	if n := env.sent.count(); n != 0 {
		t.Errorf("%d requests sent for refused sites", n)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the other server got %d requests", n)
	}
	if n := env.tokens.Load() - tokens; n != 0 {
		t.Errorf("%d tokens requested for refused sites", n)
	}

	// The allowed site still works with the same client.
	if _, err := env.client.WebID(ctx, site); err != nil {
		t.Fatal(err)
	}
	if env.sent.count() != 1 {
		t.Errorf("%d requests for one call", env.sent.count())
	}
}
