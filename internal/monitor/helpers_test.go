package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/dev/testenv"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/submit"
	"github.com/spomig/spomig/internal/vault"
)

// One HTTPS Azurite (a leaf of a dev CA) is both SharePoint's storage account, behind the SPO emulator,
// and the app's (job table, reports container, poison queue); each test has its own SPO and Key Vault
// emulators.
func TestMain(m *testing.M) { os.Exit(testenv.RunMain(m)) }

// world is one SPO emulator and one site, the app's storage, vault and job table, and a captured log.
type world struct {
	t        *testing.T
	ca       *devtls.CA
	sp       *testenv.SharePoint
	emu      *spoemu.Emulator
	custody  *vault.Custody
	spo      *spo.Client
	store    *jobs.Store
	blob     *azblob.Client
	queue    *azqueue.ServiceClient
	logs     *capture.Buffer
	log      *slog.Logger
	site     string
	siteURL  string
	reports  string // reports container
	poison   string // poison queue
	staging  string // staging container
	secrets  []string
	gates    map[spoemu.Phase]chan struct{}
	gateOnce sync.Once
}

type worldOptions struct {
	gate bool // hold every job at PhaseQueued and PhaseProcessing until released
	emu  func(*spoemu.Options)
}

func newWorld(t *testing.T, wo worldOptions) *world {
	t.Helper()
	w := &world{t: t, logs: &capture.Buffer{}, reports: azurite.UniqueName("reports"), poison: azurite.UniqueName("poison")}
	opts := spoemu.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	if wo.gate {
		w.gates = map[spoemu.Phase]chan struct{}{spoemu.PhaseQueued: make(chan struct{}), spoemu.PhaseProcessing: make(chan struct{})}
		opts.Gate = func(ctx context.Context, id string, ph spoemu.Phase) error {
			select {
			case <-w.gates[ph]:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if wo.emu != nil {
		wo.emu(&opts)
	}
	w.sp = testenv.StartSharePoint(t, opts)
	t.Cleanup(func() { // before the emulator closes
		w.release(spoemu.PhaseQueued)
		w.release(spoemu.PhaseProcessing)
	})
	app := testenv.NewApp(t, testenv.AppOptions{SharePoint: w.sp, Storage: testenv.NewAppStorage(t, w.sp.Storage), Logs: w.logs,
		SPORetryBudget: -1, StoreLogger: slog.New(slog.DiscardHandler), SitePrefix: "mon", TablePrefix: "mon"})
	w.ca, w.emu, w.custody, w.spo, w.store, w.log = w.sp.CA, w.sp.Emulator, app.Custody, app.SPO, app.Store, app.Log
	w.blob, w.queue, w.staging = app.Storage.Blob, app.Storage.Queue, app.Staging
	w.site, w.siteURL = app.Site, app.SiteURL
	return w
}

// release lets the jobs pass a gate (once).
func (w *world) release(ph spoemu.Phase) {
	if c, ok := w.gates[ph]; ok {
		select {
		case <-c:
		default:
			close(c)
		}
	}
}

// monitor returns a Monitor of the world (adjust sets options).
func (w *world) monitor(adjust func(*Options)) *Monitor {
	w.t.Helper()
	o := Options{Jobs: w.store, Vault: w.custody, SPO: w.spo, Storage: Storage{Blob: w.blob, Queue: w.queue},
		ReportsContainer: w.reports, PoisonQueue: w.poison, SASTransport: w.ca.HTTPClient(), Logger: w.log,
		SweepInterval: time.Minute}
	if adjust != nil {
		adjust(&o)
	}
	m, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	return m
}

// runAt runs the monitor once with its clock at now+shift.
func (w *world) runAt(shift time.Duration, adjust func(*Options)) {
	w.t.Helper()
	m := w.monitor(func(o *Options) {
		o.Now = func() time.Time { return time.Now().Add(shift) }
		if adjust != nil {
			adjust(o)
		}
	})
	if err := m.Run(context.Background(), false); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) get(id string) *jobs.Job {
	w.t.Helper()
	j, err := w.store.Get(context.Background(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return j
}

// jobOptions shape a test job.
type jobOptions struct {
	files    []string // file paths in the library; default two files
	noQueue  bool     // the job reports to no queue
	skipData int      // leave out this many content files (JobError each)
	skipOpt  bool     // leave out Requirements.xml (a JobWarning)
	callback string
	// signedCallback is kept in the job's secret, as provision keeps a signed URL; the record then gets
	// callback (provision's form: the URL without its query).
	signedCallback string
	noSubmit       bool // stop at Staged
}

// testJob is a job of the world: provisioned, staged, submitted through the submitter.
type testJob struct {
	id       string
	spoJobID string
	key      []byte
	meta     string // metadata container URI
	queue    string // report queue URI ("" with noQueue)
}

// newJob provisions containers (and the site queue), stages a package as the stager does (every blob
// encrypted with a fresh IV in its metadata, then snapshotted), keeps the secret in the vault, creates
// the record and submits it.
func (w *world) newJob(o jobOptions) *testJob {
	t := w.t
	t.Helper()
	ctx := context.Background()
	c, err := w.spo.ProvisionMigrationContainers(ctx, w.siteURL)
	if err != nil {
		t.Fatal(err)
	}
	tj := &testJob{id: azurite.UniqueName("job"), key: bytes.Clone(c.EncryptionKey), meta: c.MetadataContainerURI}
	if !o.noQueue {
		q, err := w.spo.ProvisionMigrationQueue(ctx, w.siteURL)
		if err != nil {
			t.Fatal(err)
		}
		tj.queue = q.JobQueueURI
		if err := w.custody.PutQueue(ctx, w.siteURL, q.JobQueueURI, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	w.secrets = append(w.secrets, capture.SecretForms(t, c.EncryptionKey, c.DataContainerURI, c.MetadataContainerURI, tj.queue)...)
	w.stage(c, o)
	if _, err := w.custody.PutJob(ctx, tj.id, w.siteURL, vault.JobSecret{Key: c.EncryptionKey, DataContainerURI: c.DataContainerURI,
		MetadataContainerURI: c.MetadataContainerURI, QueueURI: tj.queue, CallbackURL: o.signedCallback, ProvisionedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.blob.UploadBuffer(ctx, w.staging, tj.id+".zip", []byte("PK staged package"), nil); err != nil {
		t.Fatal(err)
	}
	rec := &jobs.Job{ID: tj.id, SiteURL: w.siteURL, WebID: w.emu.WebID(w.site), SecretName: vault.JobSecretName(tj.id),
		StagingBlob: jobs.BlobRef{Container: w.staging, Name: tj.id + ".zip"}, State: jobs.StateStaged, CallbackURL: o.callback}
	if err := w.store.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if o.noSubmit {
		return tj
	}
	s, err := submit.New(submit.Options{Jobs: w.store, Vault: w.custody, SPO: w.spo, Logger: w.log})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(ctx, submit.EncodeMessage(tj.id), 1); err != nil {
		t.Fatal(err)
	}
	j := w.get(tj.id)
	if j.State != jobs.StateSubmitted {
		t.Fatalf("job %s is %s after submission (%s)", tj.id, j.State, j.FailureReason)
	}
	tj.spoJobID = j.SPOJobID
	return tj
}

// stage uploads the package of o into the containers of c.
func (w *world) stage(c spo.Containers, o jobOptions) {
	w.t.Helper()
	files := o.files
	if files == nil {
		files = []string{"Reports/q1.txt", "Reports/q2.txt"}
	}
	var bf []migpkg.BuildFile
	for i, p := range files {
		content := fmt.Sprintf("file %d: %s\n", i, strings.Repeat("data ", 10*i+1))
		bf = append(bf, migpkg.BuildFile{Path: p, Size: int64(len(content)), Content: strings.NewReader(content)})
	}
	skipped := 0
	testenv.StagePackage(w.t, c, testenv.PackageOptions{SiteURL: w.siteURL, WebID: w.emu.WebID(w.site), Files: bf,
		ClientOptions: w.sp.ClientOptions(),
		Skip: func(it migpkg.Item) bool {
			if it.Container == migpkg.Data && skipped < o.skipData {
				skipped++
				return true
			}
			return o.skipOpt && it.Name == migpkg.FileRequirements
		}})
}

// wait waits for the emulator to end a job.
func (w *world) wait(tj *testJob) spoemu.JobInfo {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := w.emu.WaitJob(ctx, tj.spoJobID)
	if err != nil {
		w.t.Fatalf("wait for job %s: %v", tj.spoJobID, err)
	}
	return info
}

// waitEvent waits until the emulator has emitted an event of the job.
func (w *world) waitEvent(tj *testJob, name string) {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range w.emu.Events(tj.spoJobID) {
			if strings.Contains(e, `"Event":"`+name+`"`) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.t.Fatalf("no %s event: %v", name, w.emu.Events(tj.spoJobID))
}

// queueCount is the approximate number of messages in a queue (visible or not), through the account key.
func (w *world) queueCount(queueURI string) int {
	w.t.Helper()
	u, err := url.Parse(queueURI)
	if err != nil {
		w.t.Fatal(err)
	}
	name := u.Path[strings.LastIndex(u.Path, "/")+1:]
	p, err := w.queue.NewQueueClient(name).GetProperties(context.Background(), nil)
	if err != nil {
		w.t.Fatal(err)
	}
	return int(*p.ApproximateMessagesCount)
}

// checkNoSecrets fails when a key or a SAS signature of the world's jobs is in the captured logs.
func (w *world) checkNoSecrets() {
	w.t.Helper()
	text := w.logs.String()
	if text == "" {
		w.t.Fatal("nothing was logged")
	}
	for _, s := range w.secrets {
		if strings.Contains(text, s) {
			w.t.Fatalf("the logs contain a secret (%.6s…)", s)
		}
	}
	if i := strings.Index(strings.ToLower(text), "sig="); i >= 0 && !strings.HasPrefix(text[i+4:], "REDACTED") {
		w.t.Fatalf("the logs contain a signature: %.80s", text[i:])
	}
}

// readBlob reads a blob of the app's storage.
func (w *world) readBlob(containerName, name string) []byte {
	w.t.Helper()
	resp, err := w.blob.DownloadStream(context.Background(), containerName, name, nil)
	if err != nil {
		w.t.Fatalf("read %s/%s: %v", containerName, name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// emulatorLog reads and decrypts a log blob the emulator wrote to the job's metadata container.
func (w *world) emulatorLog(tj *testJob, name string) ([]byte, bool) {
	w.t.Helper()
	return testenv.ReadEncrypted(w.t, tj.meta, name, tj.key, w.sp.ClientOptions())
}

// callbackServer is a callback target answering the given statuses in turn (the last one repeats).
type callbackServer struct {
	url, host string
	client    *http.Client
	mu        sync.Mutex
	statuses  []int
	bodies    []Report
	targets   []string // request URIs (path and query) of the POSTs
}

func newCallbackServer(t *testing.T, statuses ...int) *callbackServer {
	t.Helper()
	cb := &callbackServer{statuses: statuses}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var rep Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil || r.Method != http.MethodPost {
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		cb.mu.Lock()
		n := len(cb.bodies)
		cb.bodies = append(cb.bodies, rep)
		cb.targets = append(cb.targets, r.URL.RequestURI())
		status := cb.statuses[min(n, len(cb.statuses)-1)]
		cb.mu.Unlock()
		rw.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	cb.url, cb.host, cb.client = srv.URL, strings.TrimPrefix(srv.URL, "https://"), srv.Client()
	return cb
}

func (cb *callbackServer) count() int {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return len(cb.bodies)
}

func (cb *callbackServer) last() Report {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.bodies[len(cb.bodies)-1]
}
