package intake

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/stage"
	"github.com/spomig/spomig/internal/submit"
	"github.com/spomig/spomig/internal/vault"
)

// The app's storage (staging container, job table, submit queue) is the package's shared plain-HTTP
// Azurite; SharePoint's storage account is a second Azurite over HTTPS behind the SPO emulator, as in
// production where the SPO containers live in Microsoft's account. The Key Vault emulator and the SPO
// emulator serve HTTPS with a development CA.
func TestMain(m *testing.M) {
	code := azurite.RunMain(m)
	closeWorld()
	os.Exit(code)
}

var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// ---- the shared world ----

type world struct {
	ca           *devtls.CA
	spoStorage   *azurite.Server
	spoBlob      *azblob.Client // shared key on SharePoint's account: listing snapshots, which the SAS cannot
	spo          *spoemu.Emulator
	kv           *kvemu.Server
	storageHosts []string
}

var theWorld struct {
	once sync.Once
	w    *world
	err  error
	dir  string
}

func getWorld(t *testing.T) *world {
	t.Helper()
	theWorld.once.Do(func() { theWorld.w, theWorld.err = startWorld() })
	if theWorld.err != nil {
		t.Fatalf("test world: %v", theWorld.err)
	}
	return theWorld.w
}

func startWorld() (*world, error) {
	ca, err := devtls.New()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "intake-test-tls-")
	if err != nil {
		return nil, err
	}
	theWorld.dir = dir
	cert, key, err := ca.WriteServerCert(dir)
	if err != nil {
		return nil, err
	}
	st, err := azurite.Start(context.Background(), azurite.Options{CertFile: cert, KeyFile: key})
	if err != nil {
		return nil, fmt.Errorf("SharePoint's Azurite: %w", err)
	}
	w := &world{ca: ca, spoStorage: st, storageHosts: []string{
		fmt.Sprintf("127.0.0.1:%d", st.BlobPort), fmt.Sprintf("127.0.0.1:%d", st.QueuePort)}}
	w.spoBlob, err = azblob.NewClientFromConnectionString(st.ConnectionString(),
		&azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: ca.HTTPClient()}})
	if err != nil {
		st.Stop()
		return nil, err
	}
	w.spo, err = spoemu.Start(context.Background(), spoemu.Options{CA: ca, StorageConnectionString: st.ConnectionString(), Logger: quietLogger})
	if err != nil {
		st.Stop()
		return nil, fmt.Errorf("SPO emulator: %w", err)
	}
	w.kv, err = kvemu.Start(kvemu.Options{CA: ca})
	if err != nil {
		w.spo.Close()
		st.Stop()
		return nil, fmt.Errorf("Key Vault emulator: %w", err)
	}
	return w, nil
}

// closeWorld stops the world if a test started it.
func closeWorld() {
	if w := theWorld.w; w != nil {
		w.kv.Close()
		w.spo.Close()
		w.spoStorage.Stop()
	}
	if theWorld.dir != "" {
		os.RemoveAll(theWorld.dir)
	}
}

// ---- one environment per test ----

type env struct {
	t   *testing.T
	w   *world
	ctx context.Context

	app         *azblob.Client // the app's storage account (shared key)
	staging     *container.Client
	stagingName string
	reports     *container.Client
	queue       *azqueue.QueueClient
	store       *jobs.Store
	custody     *vault.Custody
	spo         *spo.Client
	spoCalls    *callCounter
	prov        *countingProvisioner
	up          *testUploader
	in          *Intake
	opts        Options

	site, siteURL, webID string
	logs                 *lockedBuffer
}

type envOptions struct {
	intake func(*Options)
}

func newEnv(t *testing.T, eo envOptions) *env {
	t.Helper()
	w := getWorld(t)
	ctx := context.Background()
	e := &env{t: t, w: w, ctx: ctx, logs: &lockedBuffer{}}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	az := azurite.Shared(t)
	var err error
	if e.app, err = azblob.NewClientFromConnectionString(az.ConnectionString(), nil); err != nil {
		t.Fatal(err)
	}
	e.stagingName = azurite.UniqueName("staging")
	reportsName := azurite.UniqueName("reports")
	for _, c := range []string{e.stagingName, reportsName} {
		if _, err := e.app.CreateContainer(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	e.staging = e.app.ServiceClient().NewContainerClient(e.stagingName)
	e.reports = e.app.ServiceClient().NewContainerClient(reportsName)

	qsvc, err := azqueue.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	qname := azurite.UniqueName("submit")
	if _, err := qsvc.CreateQueue(ctx, qname, nil); err != nil {
		t.Fatal(err)
	}
	e.queue = qsvc.NewQueueClient(qname)

	tables, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.store, err = jobs.New(tables, jobs.Options{Table: "jobs" + strings.ReplaceAll(azurite.UniqueName("t"), "-", ""), Logger: log}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.EnsureTable(ctx); err != nil {
		t.Fatal(err)
	}

	e.custody, err = vault.New(vault.Options{
		VaultURL: w.kv.URL(), Credential: &kvemu.Credential{}, DisableChallengeResourceVerification: true,
		ClientOptions: azcore.ClientOptions{Transport: w.kv.HTTPClient()},
		Retry:         policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 50 * time.Millisecond},
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}

	e.site = azurite.UniqueName("site")
	e.siteURL = w.spo.SiteURL(e.site)
	e.webID = w.spo.WebID(e.site)
	su, _ := url.Parse(e.siteURL)
	e.spoCalls = &callCounter{next: w.ca.HTTPClient().Transport, calls: map[string]int{}}
	e.spo, err = spo.New(spo.Options{
		Credential: &kvemu.Credential{}, TenantHost: su.Host, AllowedStorageHosts: w.storageHosts,
		HTTPClient: &http.Client{Transport: e.spoCalls, Timeout: 30 * time.Second}, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := provision.New(provision.Options{
		Jobs: e.store, SPO: e.spo, Vault: e.custody,
		Policy:           provision.Policy{AllowedSiteHosts: []string{su.Host}},
		StagingContainer: e.stagingName, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.prov = &countingProvisioner{inner: svc}
	e.up = &testUploader{inner: stage.NewUploader(stage.Options{
		BlockSize: stage.MinBlockSize, RetryDelay: time.Millisecond, Logger: log,
		ClientOptions: &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: w.ca.HTTPClient()}},
	}), results: map[string]stage.ItemResult{}}

	e.opts = Options{
		Jobs: e.store, Vault: e.custody, Provisioner: e.prov, Uploader: e.up,
		Staging: e.staging, SubmitQueue: e.queue, Reports: e.reports,
		ProgressEvery: 20 * time.Millisecond, LeaseDuration: 15 * time.Second, Logger: log,
	}
	if eo.intake != nil {
		eo.intake(&e.opts)
	}
	if e.in, err = New(e.opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.checkLogs)
	return e
}

// checkLogs fails the test when a log line carries a SAS signature or a job key.
func (e *env) checkLogs() {
	logs := e.logs.String()
	if m := regexp.MustCompile(`(?i)sig=[^&\s"]+`).FindAllString(logs, -1); m != nil {
		for _, s := range m {
			if !strings.EqualFold(s, "sig=REDACTED") {
				e.t.Errorf("a log line carries a SAS signature: %s", s)
				break
			}
		}
	}
	for _, k := range e.up.keysSeen() {
		for _, form := range []string{b64(k), fmt.Sprintf("%x", k), fmt.Sprint(k)} {
			if strings.Contains(logs, form) {
				e.t.Errorf("a log line carries a job key")
			}
		}
	}
}

// ---- packages and blobs ----

// defaultFiles are the files of a test package: small ones and one of several blocks.
func defaultFiles() []migpkg.BuildFile {
	return []migpkg.BuildFile{
		{Path: "a.txt", Size: 5, Content: strings.NewReader("hello")},
		{Path: "Reports/2024/q1.xlsx", Size: 70_000},
		{Path: "Reports/big.bin", Size: 2<<20 + 12345},
		{Path: "empty.txt", Size: 0},
	}
}

// buildPackage writes a valid package for the env's site.
func (e *env) buildPackage(mutate func(*migpkg.BuilderOptions), files ...migpkg.BuildFile) []byte {
	e.t.Helper()
	if files == nil {
		files = defaultFiles()
	}
	o := migpkg.BuilderOptions{SiteURL: e.siteURL, WebID: e.webID}
	if mutate != nil {
		mutate(&o)
	}
	b := migpkg.NewBuilder(o)
	for _, f := range files {
		if err := b.AddFile(f); err != nil {
			e.t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := b.Write(&buf); err != nil {
		e.t.Fatal(err)
	}
	return buf.Bytes()
}

// expectedItems are the blobs a valid package stages (synthetic optional files included, spomig.json
// left out as the intake does).
func expectedItems(t *testing.T, zipData []byte) []migpkg.Item {
	t.Helper()
	pkg, err := migpkg.Open(bytes.NewReader(zipData), int64(len(zipData)), migpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pkg.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	items, err := pkg.Items()
	if err != nil {
		t.Fatal(err)
	}
	return uploadItems(items, pkg.Warnings)
}

// put uploads a staging blob and returns its ETag (quoted, as the host reports it).
func (e *env) put(name string, data []byte, md map[string]string) string {
	e.t.Helper()
	var meta map[string]*string
	if md != nil {
		meta = map[string]*string{}
		for k, v := range md {
			meta[k] = ptr(v)
		}
	}
	resp, err := e.staging.NewBlockBlobClient(name).UploadBuffer(e.ctx, data, &blockblob.UploadBufferOptions{Metadata: meta})
	if err != nil {
		e.t.Fatal(err)
	}
	return string(*resp.ETag)
}

// apiJob provisions a job as POST /api/migrations does.
func (e *env) apiJob() *jobs.Job {
	e.t.Helper()
	j, err := e.prov.inner.Create(e.ctx, provision.Request{SiteURL: e.siteURL, Label: "api job", Source: jobs.SourceAPI})
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func (e *env) job(id string) *jobs.Job {
	e.t.Helper()
	j, err := e.store.Get(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func (e *env) secret(id string) *vault.JobSecret {
	e.t.Helper()
	s, err := e.custody.GetJob(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// submitMessages returns the job ids of the messages on migration-submit, decoded as the trigger does.
func (e *env) submitMessages() []string {
	e.t.Helper()
	n := int32(32)
	resp, err := e.queue.PeekMessages(e.ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: &n})
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	for _, m := range resp.Messages {
		dec, err := b64decode(*m.MessageText)
		if err != nil {
			e.t.Fatalf("submit message is not base64: %v", err)
		}
		msg, err := submit.ParseMessage(string(dec))
		if err != nil {
			e.t.Fatalf("submit message: %v", err)
		}
		ids = append(ids, msg.JobID)
	}
	return ids
}

// sasContainer is a client of an SPO container through its SAS only (sp=rw, no list).
func (e *env) sasContainer(uri string) *container.Client {
	e.t.Helper()
	c, err := container.NewClientWithNoCredential(uri, &container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.w.ca.HTTPClient()}})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func containerOf(uri string) string {
	u, _ := url.Parse(uri)
	return path.Base(u.Path)
}

// latestSnapshots lists (with SharePoint's account key: the SAS cannot list) every blob's latest snapshot.
func (e *env) latestSnapshots(uri string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	latest := map[string]time.Time{}
	pager := e.w.spoBlob.ServiceClient().NewContainerClient(containerOf(uri)).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Include: container.ListBlobsInclude{Snapshots: true}})
	for pager.More() {
		page, err := pager.NextPage(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, it := range page.Segment.BlobItems {
			if it.Snapshot == nil || *it.Snapshot == "" {
				continue
			}
			ts, err := time.Parse(time.RFC3339Nano, *it.Snapshot)
			if err != nil {
				e.t.Fatal(err)
			}
			if ts.After(latest[*it.Name]) {
				latest[*it.Name], out[*it.Name] = ts, *it.Snapshot
			}
		}
	}
	return out
}

// verifyStaged checks that every blob of the package is in the job's containers, its latest snapshot
// decrypts (key from Key Vault, IV from the snapshot's metadata) to the package's bytes, and the base
// blob's IV equals the snapshot's. It reads through the container SAS, by the names of the package.
func (e *env) verifyStaged(jobID string, zipData []byte) *vault.JobSecret {
	e.t.Helper()
	sec := e.secret(jobID)
	snaps := map[migpkg.Kind]map[string]string{
		migpkg.Data: e.latestSnapshots(sec.DataContainerURI), migpkg.Metadata: e.latestSnapshots(sec.MetadataContainerURI),
	}
	items := expectedItems(e.t, zipData)
	for _, it := range items {
		uri := sec.DataContainerURI
		if it.Container == migpkg.Metadata {
			uri = sec.MetadataContainerURI
		}
		snap, ok := snaps[it.Container][it.Name]
		if !ok {
			e.t.Errorf("%s %s has no snapshot", it.Container, it.Name)
			continue
		}
		if rec := e.up.result(it.Container == migpkg.Metadata, it.Name); rec != snap {
			e.t.Errorf("%s: latest snapshot %s is not the one the last upload took (%s)", it.Name, snap, rec)
		}
		// Azurite (3.37) puts the request's snapshot into the string-to-sign of a container SAS, so a
		// container SAS cannot read a snapshot there (the real service can, and SharePoint reads them
		// with its own credentials): the snapshot is read with SharePoint's account key, the base blob
		// through the SAS.
		bc := e.sasContainer(uri).NewBlobClient(it.Name)
		sc, err := e.w.spoBlob.ServiceClient().NewContainerClient(containerOf(uri)).NewBlobClient(it.Name).WithSnapshot(snap)
		if err != nil {
			e.t.Fatal(err)
		}
		resp, err := sc.DownloadStream(e.ctx, nil)
		if err != nil {
			e.t.Errorf("download %s@%s: %v", it.Name, snap, err)
			continue
		}
		ivText, _ := lookupFold(derefMap(resp.Metadata), "IV")
		iv, err := crypt.ParseIV(ivText)
		if err != nil {
			resp.Body.Close()
			e.t.Errorf("%s: snapshot IV metadata: %v", it.Name, err)
			continue
		}
		dr, err := crypt.NewDecryptReader(resp.Body, sec.Key, iv)
		if err != nil {
			e.t.Fatal(err)
		}
		got := sha256.New()
		_, err = io.Copy(got, dr)
		resp.Body.Close()
		if err != nil {
			e.t.Errorf("%s: decrypt: %v", it.Name, err)
			continue
		}
		rc, err := it.Open()
		if err != nil {
			e.t.Fatal(err)
		}
		want := sha256.New()
		if _, err := io.Copy(want, rc); err != nil {
			e.t.Fatal(err)
		}
		rc.Close()
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			e.t.Errorf("%s: decrypted snapshot differs from the package entry", it.Name)
		}
		props, err := bc.GetProperties(e.ctx, nil)
		if err != nil {
			e.t.Fatal(err)
		}
		if baseIV, _ := lookupFold(derefMap(props.Metadata), "IV"); baseIV != ivText {
			e.t.Errorf("%s: base blob IV differs from its latest snapshot's", it.Name)
		}
		v, err := e.up.inner.Verify(e.ctx, e.accountSASURL(uri), it.Name, sec.Key, it.Size, stage.VerifyOptions{Snapshot: snap, Deep: true})
		if err != nil || !v.OK {
			e.t.Errorf("%s: stage.Verify: %+v %v", it.Name, v, err)
		}
	}
	return sec
}

// accountSASURL is a container URL of SharePoint's account with an account SAS (which Azurite lets
// read snapshots), for stage.Verify.
func (e *env) accountSASURL(uri string) string {
	e.t.Helper()
	u, err := e.w.spoBlob.ServiceClient().GetSASURL(sas.AccountResourceTypes{Container: true, Object: true},
		sas.AccountPermissions{Read: true}, time.Now().Add(time.Hour), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	base, query, _ := strings.Cut(u, "?")
	return strings.TrimRight(base, "/") + "/" + containerOf(uri) + "?" + query
}

// assertNotUploaded checks through the SAS that none of the package's blobs exists in the containers.
func (e *env) assertNotUploaded(sec *vault.JobSecret, items []migpkg.Item) {
	e.t.Helper()
	for _, it := range items {
		uri := sec.DataContainerURI
		if it.Container == migpkg.Metadata {
			uri = sec.MetadataContainerURI
		}
		_, err := e.sasContainer(uri).NewBlobClient(it.Name).GetProperties(e.ctx, nil)
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
			e.t.Errorf("%s %s: want 404 through the SAS, got %v", it.Container, it.Name, err)
		}
	}
}

// importWithSPO submits the staged job to the SPO emulator and follows GetMigrationJobProgress to JobEnd.
func (e *env) importWithSPO(job *jobs.Job, sec *vault.JobSecret) []crypt.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 90*time.Second)
	defer cancel()
	id, err := e.spo.CreateMigrationJobEncrypted(ctx, job.SiteURL, spo.CreateJobRequest{
		WebID: job.WebID, DataContainerURI: sec.DataContainerURI, MetadataContainerURI: sec.MetadataContainerURI,
		QueueURI: sec.QueueURI, Key: sec.Key,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var evs []crypt.Event
	token := ""
	for {
		p, err := e.spo.GetMigrationJobProgress(ctx, job.SiteURL, id, token)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, raw := range p.Events {
			ev, err := crypt.ParseEvent(raw)
			if err != nil {
				e.t.Fatal(err)
			}
			evs = append(evs, ev)
			if ev.Name == crypt.EventJobEnd || ev.Name == crypt.EventJobFatalError {
				return evs
			}
		}
		token = p.NextToken
		select {
		case <-ctx.Done():
			e.t.Fatalf("no JobEnd: %v", names(evs))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func names(evs []crypt.Event) []string {
	var n []string
	for _, ev := range evs {
		n = append(n, ev.Name)
	}
	return n
}

// ---- zip surgery for invalid packages ----

type zipEntry struct {
	name   string
	data   []byte
	method uint16
}

// rewriteZip copies a zip, letting edit change or drop (keep false) entries, then appends extra.
func rewriteZip(t *testing.T, src []byte, edit func(name string, data []byte) ([]byte, bool), extra ...zipEntry) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(src), int64(len(src)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	write := func(name string, method uint16, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method, Modified: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		keep := true
		if edit != nil {
			data, keep = edit(f.Name, data)
		}
		if keep {
			write(f.Name, f.Method, data)
		}
	}
	for _, x := range extra {
		write(x.name, x.method, x.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// ---- test doubles around the real services ----

// countingProvisioner counts the calls to the real provisioning service.
type countingProvisioner struct {
	inner        *provision.Service
	creates      atomic.Int64
	reprovisions atomic.Int64
}

func (p *countingProvisioner) Create(ctx context.Context, req provision.Request) (*jobs.Job, error) {
	p.creates.Add(1)
	return p.inner.Create(ctx, req)
}

func (p *countingProvisioner) Reprovision(ctx context.Context, jobID string) (*jobs.Job, error) {
	p.reprovisions.Add(1)
	return p.inner.Reprovision(ctx, jobID)
}

// testUploader is the real stage.Uploader with a record of its results and fault injection.
type testUploader struct {
	inner *stage.Uploader

	mu      sync.Mutex
	calls   int
	results map[string]stage.ItemResult // "m:" / "d:" + name → the last Done result
	keys    [][]byte
	// fault, when set, runs before each UploadAll (call counts from 1) and may replace it: when it
	// returns handled, its error is UploadAll's.
	fault func(ctx context.Context, call int, dst stage.Destination, items []stage.Item) (handled bool, err error)
	// open, when set, runs in each item's Open (call, index of the item): an error fails the item.
	open func(call, idx int) error
}

func (u *testUploader) UploadAll(ctx context.Context, dst stage.Destination, items []stage.Item) ([]stage.ItemResult, error) {
	u.mu.Lock()
	u.calls++
	call := u.calls
	u.keys = append(u.keys, bytes.Clone(dst.Key))
	fault, open := u.fault, u.open
	u.mu.Unlock()
	if fault != nil {
		if handled, err := fault(ctx, call, dst, items); handled {
			return nil, err
		}
	}
	if open != nil {
		items = slices.Clone(items)
		for i := range items {
			inner := items[i].Open
			items[i].Open = func() (io.ReadCloser, error) {
				if err := open(call, i); err != nil {
					return nil, err
				}
				return inner()
			}
		}
	}
	res, err := u.inner.UploadAll(ctx, dst, items)
	u.mu.Lock()
	for _, r := range res {
		if r.Done() {
			u.results[resultKey(r.Metadata, r.Name)] = r
		}
	}
	u.mu.Unlock()
	return res, err
}

func resultKey(metadata bool, name string) string {
	if metadata {
		return "m:" + name
	}
	return "d:" + name
}

func (u *testUploader) result(metadata bool, name string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.results[resultKey(metadata, name)].Snapshot
}

func (u *testUploader) callCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls
}

func (u *testUploader) keysSeen() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.keys)
}

// callCounter counts SharePoint REST calls by function name.
type callCounter struct {
	next  http.RoundTripper
	mu    sync.Mutex
	calls map[string]int
}

func (c *callCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	fn := path.Base(req.URL.Path)
	if i := strings.IndexByte(fn, '('); i >= 0 {
		fn = fn[:i]
	}
	c.mu.Lock()
	c.calls[fn]++
	c.mu.Unlock()
	return c.next.RoundTrip(req)
}

func (c *callCounter) count(fn string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[fn]
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func derefMap(m map[string]*string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func b64decode(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
