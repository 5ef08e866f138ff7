package spoemu

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	qsas "github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/sas"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/migpkg"
)

// One HTTPS Azurite (with a dev CA leaf) serves as SharePoint's storage account for every test.
var testEnv struct {
	ca      *devtls.CA
	storage string
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ca, err := devtls.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dev CA:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "spoemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cert, key, err := ca.WriteServerCert(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server cert:", err)
		return 1
	}
	srv, err := azurite.Start(context.Background(), azurite.Options{CertFile: cert, KeyFile: key})
	if err != nil {
		fmt.Fprintln(os.Stderr, "azurite:", err)
		return 1
	}
	defer srv.Stop()
	testEnv.ca, testEnv.storage = ca, srv.ConnectionString()
	return m.Run()
}

// fixture is one emulator and one site, used the way a client would.
type fixture struct {
	t    *testing.T
	e    *Emulator
	site string // "/sites/<unique>"
	url  string // site URL
	http *http.Client
}

func newFixture(t *testing.T, mutate func(*Options)) *fixture {
	t.Helper()
	opts := Options{
		CA: testEnv.ca, StorageConnectionString: testEnv.storage, DataDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	}
	if mutate != nil {
		mutate(&opts)
	}
	e, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	site := "/sites/" + azurite.UniqueName("s")
	return &fixture{t: t, e: e, site: site, url: e.SiteURL(site), http: e.HTTPClient()}
}

const (
	acceptNoMeta  = "application/json;odata=nometadata"
	acceptVerbose = "application/json;odata=verbose"
	acceptMinimal = "application/json;odata=minimalmetadata"
)

// do sends a REST call to the site (path relative to the site URL) with a bearer token.
func (f *fixture) do(method, path, accept string, body any) (int, http.Header, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer test-token")
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "ISV|spomig|spoemu-test/1.0")
	if body != nil {
		req.Header.Set("Content-Type", accept)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// ok sends a call that must succeed and decodes its nometadata answer into v.
func (f *fixture) ok(method, path string, body, v any) {
	f.t.Helper()
	status, _, b := f.do(method, path, acceptNoMeta, body)
	if status != http.StatusOK {
		f.t.Fatalf("%s %s: %d %s", method, path, status, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			f.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

type containers struct {
	DataContainerUri, MetadataContainerUri, EncryptionKey string
}

func (c containers) key(t *testing.T) []byte {
	k, err := crypt.ParseKey(c.EncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (f *fixture) provision() containers {
	f.t.Helper()
	var c containers
	f.ok(http.MethodPost, "/_api/site/ProvisionMigrationContainers", map[string]any{}, &c)
	return c
}

func (f *fixture) provisionQueue() string {
	f.t.Helper()
	var q struct{ JobQueueUri string }
	f.ok(http.MethodPost, "/_api/site/ProvisionMigrationQueue", map[string]any{}, &q)
	return q.JobQueueUri
}

// createBody is the CreateMigrationJobEncrypted body.
func (f *fixture) createBody(c containers, queue string, key string) map[string]any {
	b := map[string]any{
		"gWebId":                    f.e.WebID(f.site),
		"azureContainerSourceUri":   c.DataContainerUri,
		"azureContainerManifestUri": c.MetadataContainerUri,
		"options":                   map[string]any{"AES256CBCKey": key},
	}
	if queue != "" {
		b["azureQueueReportUri"] = queue
	}
	return b
}

func (f *fixture) createJob(c containers, queue string) string {
	f.t.Helper()
	var id struct{ Value string }
	f.ok(http.MethodPost, "/_api/site/CreateMigrationJobEncrypted", f.createBody(c, queue, c.EncryptionKey), &id)
	if _, ok := parseGUID(id.Value); !ok {
		f.t.Fatalf("job id %q is not a GUID", id.Value)
	}
	return id.Value
}

func (f *fixture) wait(id string) JobInfo {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := f.e.WaitJob(ctx, id)
	if err != nil {
		f.t.Fatalf("wait for job %s: %v (events: %v)", id, err, f.e.Events(id))
	}
	return info
}

// progress reads the whole progress log through GetMigrationJobProgress.
func (f *fixture) progress(id string) []crypt.Event {
	f.t.Helper()
	var out []crypt.Event
	tok := "0"
	for range 10000 {
		var p struct {
			Logs      []string
			NextToken string
		}
		f.ok(http.MethodGet, fmt.Sprintf("/_api/site/GetMigrationJobProgress(jobId=guid'%s',nextToken='%s')", id, tok), nil, &p)
		for _, l := range p.Logs {
			ev, err := crypt.ParseEvent([]byte(l))
			if err != nil {
				f.t.Fatalf("progress log entry %q: %v", l, err)
			}
			out = append(out, ev)
		}
		if p.NextToken == tok {
			return out
		}
		tok = p.NextToken
	}
	f.t.Fatal("progress never settled")
	return nil
}

// names lists the event names.
func names(evs []crypt.Event) []string {
	var n []string
	for _, e := range evs {
		n = append(n, e.Name)
	}
	return n
}

func find(evs []crypt.Event, name string) []crypt.Event {
	var out []crypt.Event
	for _, e := range evs {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func field(t *testing.T, ev crypt.Event, name string) string {
	t.Helper()
	v, ok := ev.String(name)
	if !ok {
		t.Fatalf("%s has no %s: %s", ev.Name, name, ev.Raw)
	}
	return v
}

// pkgFile is a file of a test package.
type pkgFile struct {
	path    string
	content string
}

// uploadOptions alter how a test package is staged.
type uploadOptions struct {
	noSnapshot func(name string, k migpkg.Kind) bool // upload without snapshot
	skip       func(name string, k migpkg.Kind) bool // do not upload
	keyFor     func(name string, k migpkg.Kind) []byte
	replace    map[string]string // metadata item name → plaintext to upload instead
	afterSnap  func(name string, k migpkg.Kind) []byte
}

func (f *fixture) clientOpts() azcore.ClientOptions {
	return azcore.ClientOptions{Transport: testEnv.ca.HTTPClient()}
}

// stage builds a package with migpkg's Builder for the site and uploads it as a client does: through
// the container SAS only, each blob encrypted with a fresh IV in the "IV" metadata, then snapshotted.
func (f *fixture) stage(c containers, files []pkgFile, uo uploadOptions) migpkg.BuilderOptions {
	t := f.t
	t.Helper()
	ctx := context.Background()
	b := migpkg.NewBuilder(migpkg.BuilderOptions{SiteURL: f.url, WebID: f.e.WebID(f.site)})
	for _, pf := range files {
		if err := b.AddFile(migpkg.BuildFile{Path: pf.path, Size: int64(len(pf.content)), Content: strings.NewReader(pf.content)}); err != nil {
			t.Fatal(err)
		}
	}
	var zipBuf bytes.Buffer
	if err := b.Write(&zipBuf); err != nil {
		t.Fatal(err)
	}
	pkg, err := migpkg.Open(bytes.NewReader(zipBuf.Bytes()), int64(zipBuf.Len()), migpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pkg.Validate(ctx); err != nil {
		t.Fatal(err)
	}
	items, err := pkg.Items()
	if err != nil {
		t.Fatal(err)
	}
	dataCC, err := container.NewClientWithNoCredential(c.DataContainerUri, &container.ClientOptions{ClientOptions: f.clientOpts()})
	if err != nil {
		t.Fatal(err)
	}
	metaCC, err := container.NewClientWithNoCredential(c.MetadataContainerUri, &container.ClientOptions{ClientOptions: f.clientOpts()})
	if err != nil {
		t.Fatal(err)
	}
	key := c.key(t)
	for _, it := range items {
		if uo.skip != nil && uo.skip(it.Name, it.Container) {
			continue
		}
		var plain io.Reader
		if r, ok := uo.replace[it.Name]; ok {
			plain = strings.NewReader(r)
		} else {
			rc, err := it.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			plain = rc
		}
		k := key
		if uo.keyFor != nil {
			if kk := uo.keyFor(it.Name, it.Container); kk != nil {
				k = kk
			}
		}
		cc := dataCC
		if it.Container == migpkg.Metadata {
			cc = metaCC
		}
		bb := cc.NewBlockBlobClient(it.Name)
		f.upload(bb, plain, k)
		if uo.noSnapshot != nil && uo.noSnapshot(it.Name, it.Container) {
			continue
		}
		if _, err := bb.CreateSnapshot(ctx, nil); err != nil {
			t.Fatalf("snapshot %s: %v", it.Name, err)
		}
		if uo.afterSnap != nil {
			if repl := uo.afterSnap(it.Name, it.Container); repl != nil {
				f.upload(bb, bytes.NewReader(repl), key) // overwrite the base blob after the snapshot
			}
		}
	}
	return b.Options()
}

// upload encrypts plain with key and a fresh IV and uploads it with the IV metadata.
func (f *fixture) upload(bb *blockblob.Client, plain io.Reader, key []byte) {
	f.t.Helper()
	iv, err := crypt.NewIV()
	if err != nil {
		f.t.Fatal(err)
	}
	er, err := crypt.NewEncryptReader(plain, key, iv)
	if err != nil {
		f.t.Fatal(err)
	}
	ivText := base64.StdEncoding.EncodeToString(iv)
	if _, err := bb.UploadStream(context.Background(), er, &blockblob.UploadStreamOptions{
		Metadata: map[string]*string{"IV": &ivText}}); err != nil {
		f.t.Fatalf("upload: %v", err)
	}
}

// queueMessages dequeues and deletes every message of a queue through its SAS (as a client does).
func (f *fixture) queueMessages(queueURI string) []string {
	f.t.Helper()
	qc, err := azqueue.NewQueueClientWithNoCredential(queueURI, &azqueue.ClientOptions{ClientOptions: f.clientOpts()})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx := context.Background()
	var out []string
	for {
		n := int32(32)
		resp, err := qc.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n})
		if err != nil {
			f.t.Fatalf("dequeue: %v", err)
		}
		if len(resp.Messages) == 0 {
			return out
		}
		for _, m := range resp.Messages {
			out = append(out, *m.MessageText)
			if _, err := qc.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil); err != nil {
				f.t.Fatalf("delete message: %v", err)
			}
		}
	}
}

// spErrorOf decodes a SharePoint error body (either shape).
func spErrorOf(t *testing.T, b []byte) (code, message string) {
	t.Helper()
	var m map[string]struct {
		Code    string `json:"code"`
		Message struct {
			Lang  string `json:"lang"`
			Value string `json:"value"`
		} `json:"message"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("error body %s: %v", b, err)
	}
	for _, k := range []string{"error", "odata.error"} {
		if e, ok := m[k]; ok {
			if e.Message.Lang != "en-US" {
				t.Fatalf("error body %s: lang %q", b, e.Message.Lang)
			}
			return e.Code, e.Message.Value
		}
	}
	t.Fatalf("not a SharePoint error body: %s", b)
	return "", ""
}

// userContainer creates a container as a customer would in their own account and returns its URI
// with a container SAS of perms (spr=https).
func userContainer(t *testing.T, f *fixture, perms string) string {
	t.Helper()
	name := userContainerName(t, f)
	return userContainerSAS(t, name, perms)
}

func userContainerName(t *testing.T, f *fixture) string {
	t.Helper()
	bc, err := azblob.NewClientFromConnectionString(testEnv.storage, &azblob.ClientOptions{ClientOptions: f.clientOpts()})
	if err != nil {
		t.Fatal(err)
	}
	name := azurite.UniqueName("user")
	if _, err := bc.CreateContainer(context.Background(), name, nil); err != nil {
		t.Fatal(err)
	}
	return name
}

func userContainerSAS(t *testing.T, name, perms string) string {
	t.Helper()
	acct, _ := parseConnectionString(testEnv.storage)
	cred, _ := azblob.NewSharedKeyCredential(acct.name, acct.key)
	qp, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPS, StartTime: time.Now().Add(-time.Minute),
		ExpiryTime: time.Now().Add(time.Hour), Permissions: perms, ContainerName: name}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	return acct.blobURL.String() + "/" + name + "?" + qp.Encode()
}

// userQueue creates a queue as a customer would and returns its URI with a queue SAS of perms.
func userQueue(t *testing.T, f *fixture, perms string) string {
	t.Helper()
	return userQueueSAS(t, userQueueName(t, f), perms)
}

func userQueueName(t *testing.T, f *fixture) string {
	t.Helper()
	svc, err := azqueue.NewServiceClientFromConnectionString(testEnv.storage, &azqueue.ClientOptions{ClientOptions: f.clientOpts()})
	if err != nil {
		t.Fatal(err)
	}
	name := azurite.UniqueName("userq")
	if _, err := svc.CreateQueue(context.Background(), name, nil); err != nil {
		t.Fatal(err)
	}
	return name
}

func userQueueSAS(t *testing.T, name, perms string) string {
	t.Helper()
	acct, _ := parseConnectionString(testEnv.storage)
	cred, _ := azqueue.NewSharedKeyCredential(acct.name, acct.key)
	qp, err := qsas.QueueSignatureValues{Protocol: qsas.ProtocolHTTPS, StartTime: time.Now().Add(-time.Minute),
		ExpiryTime: time.Now().Add(time.Hour), Permissions: perms, QueueName: name}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	return acct.queueURL.String() + "/" + name + "?" + qp.Encode()
}
