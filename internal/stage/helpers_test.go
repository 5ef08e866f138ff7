package stage

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/testenv"
)

func TestMain(m *testing.M) { os.Exit(azurite.RunMain(m)) }

const testBlockSize = 1 << 20

// oddName is a blob path with spaces, non-ASCII, '#' and '%'.
const oddName = "Shared Documents/Ünïcødé folder/a #1%.docx"

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, crypt.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// testData returns n deterministic pseudo-random bytes (seeded by n and seed).
func testData(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(seed)})
	_, _ = r.Read(b)
	return b
}

// world is an Azurite account with a pair of SPO-like containers reached by rw SAS URLs, and
// shared-key clients for the checks SPO's SAS cannot do (listing snapshots).
type world struct {
	app              *testenv.AppStorage
	cred             *azblob.SharedKeyCredential
	data, meta       *container.Client // shared key
	dataSAS, metaSAS string            // container URLs with sp=rw
}

func newWorld(t testing.TB) *world {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{app: testenv.NewAppStorage(t, nil), cred: cred}
	mk := func(prefix string) (*container.Client, string) {
		cc := w.app.Blob.ServiceClient().NewContainerClient(w.app.Container(t, prefix))
		return cc, w.sasURL(t, cc, time.Now().Add(-5*time.Minute), time.Now().Add(time.Hour))
	}
	w.data, w.dataSAS = mk("data")
	w.meta, w.metaSAS = mk("meta")
	return w
}

// uploader returns an Uploader for this world: its transport works around Azurite's SAS check of
// snapshot requests (see azuriteSnapshotSAS).
func (w *world) uploader(opts Options) *Uploader {
	if opts.ClientOptions == nil {
		opts.ClientOptions = &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: azuriteSnapshotSAS{}}}
	}
	return testUploader(opts)
}

// azuriteSnapshotSAS is a transport that re-signs container-SAS requests addressing a snapshot the
// way Azurite 3.37 checks them. Azure accepts a container SAS (sr=c, sp=r) for reading any blob of
// the container, snapshots included; Azurite puts the request's snapshot= value into the
// string-to-sign of a container SAS (its "TODO: Check whether validating the snapshot is
// necessary", Azure/Azurite#1857) and answers 403 AuthorizationFailure. The re-signed SAS keeps the
// same permissions, times and resource, so SAS rules (no list, expiry) are still enforced.
type azuriteSnapshotSAS struct{}

func (a azuriteSnapshotSAS) Do(req *http.Request) (*http.Response, error) {
	q := req.URL.Query()
	if snap := q.Get("snapshot"); snap != "" && q.Get("sig") != "" && q.Get("sr") == "c" {
		container := strings.Split(strings.TrimPrefix(req.URL.Path, "/"+azurite.Account+"/"), "/")[0]
		sts := strings.Join([]string{q.Get("sp"), q.Get("st"), q.Get("se"),
			"/blob/" + azurite.Account + "/" + container, q.Get("si"), q.Get("sip"), q.Get("spr"), q.Get("sv"), "c", snap,
			q.Get("ses"), "", "", "", "", ""}, "\n")
		key, err := base64.StdEncoding.DecodeString(azurite.Key)
		if err != nil {
			return nil, err
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(sts))
		q.Set("sig", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		req = req.Clone(req.Context())
		req.URL.RawQuery = q.Encode()
	}
	return http.DefaultTransport.RoundTrip(req)
}

// sasURL mints a container SAS like SharePoint's: sp=rw only (no list), here over http too.
func (w *world) sasURL(t testing.TB, cc *container.Client, start, expiry time.Time) string {
	t.Helper()
	name := containerName(cc)
	qp, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		StartTime:     start,
		ExpiryTime:    expiry,
		Permissions:   (&sas.ContainerPermissions{Read: true, Write: true}).String(),
		ContainerName: name,
	}.SignWithSharedKey(w.cred)
	if err != nil {
		t.Fatal(err)
	}
	return cc.URL() + "?" + qp.Encode()
}

func (w *world) dest(key []byte) Destination {
	return Destination{DataContainerURI: w.dataSAS, MetadataContainerURI: w.metaSAS, Key: key}
}

// snapshots lists the snapshots of name (oldest first) with the shared key.
func snapshots(t testing.TB, cc *container.Client, name string) []string {
	t.Helper()
	var out []string
	pager := cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &name,
		Include: container.ListBlobsInclude{Snapshots: true}})
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, it := range page.Segment.BlobItems {
			if *it.Name == name && it.Snapshot != nil && *it.Snapshot != "" {
				out = append(out, *it.Snapshot)
			}
		}
	}
	slices.Sort(out) // ISO timestamps sort chronologically
	return out
}

// latest returns the latest snapshot of name, downloaded with the shared key: its ciphertext and
// the properties SPO would use.
type downloaded struct {
	snapshot   string
	ciphertext []byte
	iv         []byte
	contentMD5 []byte
}

func latest(t testing.TB, cc *container.Client, name string) downloaded {
	t.Helper()
	snaps := snapshots(t, cc, name)
	if len(snaps) == 0 {
		t.Fatalf("%q has no snapshot", name)
	}
	s := snaps[len(snaps)-1]
	sbb, err := cc.NewBlockBlobClient(name).WithSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := sbb.DownloadStream(context.Background(), nil)
	if err != nil {
		t.Fatalf("download snapshot: %v", err)
	}
	defer resp.Body.Close()
	ct, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	iv, ok := metadataIV(resp.Metadata)
	if !ok {
		t.Fatalf("snapshot %s of %q has no IV metadata: %v", s, name, keys(resp.Metadata))
	}
	return downloaded{snapshot: s, ciphertext: ct, iv: iv, contentMD5: resp.ContentMD5}
}

func keys(m map[string]*string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// checkLatest asserts that the latest snapshot of name is res, decrypts to plain, and that its
// Content-MD5 is the MD5 of its ciphertext.
func checkLatest(t testing.TB, cc *container.Client, name string, plain []byte, key []byte, res Result) {
	t.Helper()
	d := latest(t, cc, name)
	if d.snapshot != res.Snapshot {
		t.Errorf("%q: latest snapshot %s, result says %s", name, d.snapshot, res.Snapshot)
	}
	if !bytes.Equal(d.iv, res.IV) {
		t.Errorf("%q: snapshot IV differs from the result's", name)
	}
	if int64(len(d.ciphertext)) != res.CipherSize || res.CipherSize != crypt.EncryptedSize(int64(len(plain))) {
		t.Errorf("%q: ciphertext %d bytes, result %d, want %d", name, len(d.ciphertext), res.CipherSize, crypt.EncryptedSize(int64(len(plain))))
	}
	sum := md5.Sum(d.ciphertext)
	if !bytes.Equal(d.contentMD5, sum[:]) || !bytes.Equal(res.ContentMD5, sum[:]) {
		t.Errorf("%q: Content-MD5 %x, result %x, MD5 of the ciphertext %x", name, d.contentMD5, res.ContentMD5, sum)
	}
	dec, err := crypt.NewDecryptReader(bytes.NewReader(d.ciphertext), key, d.iv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(dec)
	if err != nil {
		t.Fatalf("%q: decrypt latest snapshot: %v", name, err)
	}
	if sha256.Sum256(got) != sha256.Sum256(plain) {
		t.Errorf("%q: latest snapshot decrypts to %d bytes that differ from the %d-byte source", name, len(got), len(plain))
	}
	// The base blob carries the same IV (no newer commit without a snapshot).
	props, err := cc.NewBlockBlobClient(name).GetProperties(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if iv, _ := metadataIV(props.Metadata); !bytes.Equal(iv, d.iv) {
		t.Errorf("%q: base blob IV differs from the latest snapshot's", name)
	}
}

// failAfter yields r's bytes and then err once n bytes were read.
type failAfter struct {
	r   io.Reader
	n   int64
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// onRead calls fn once, when at least n bytes were read.
type onRead struct {
	r    io.Reader
	n    int64
	fn   func()
	once sync.Once
}

func (o *onRead) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.n -= int64(n)
	if o.n <= 0 {
		o.once.Do(o.fn)
	}
	return n, err
}

// patternReader yields n pseudo-random bytes (a fixed 64 KiB pattern repeated) without allocating.
type patternReader struct {
	n   int64
	off int
}

var pattern = testData(64<<10, 7)

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	n := 0
	for n < len(b) {
		c := copy(b[n:], pattern[p.off:])
		n += c
		p.off = (p.off + c) % len(pattern)
	}
	p.n -= int64(n)
	return n, nil
}

// fakeBlob is an in-process, discarding Blob service: it implements just enough of Put Block,
// Put Block List, Put Blob and Snapshot for the uploads of this package, reads every body and
// drops it. fail, when set, may answer a request with an error instead (status, x-ms-error-code).
type fakeBlob struct {
	srv      *httptest.Server
	fail     func(r *http.Request) (int, string)
	requests atomic.Int64
	bytes    atomic.Int64
	mu       sync.Mutex
	ops      []string // "comp name" of every successful request, for assertions
	record   bool
}

var discardBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func newFakeBlob(t testing.TB) *fakeBlob {
	f := &fakeBlob{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// containerURL is a container URL with a fake SAS, as the uploads take it.
func (f *fakeBlob) containerURL(name string) string {
	return f.srv.URL + "/devstoreaccount1/" + name + "?sv=2025-01-05&sr=c&sp=rw&sig=FAKESIGNATURE%3D"
}

func (f *fakeBlob) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	bp := discardBufs.Get().(*[]byte)
	for {
		n, err := r.Body.Read(*bp)
		f.bytes.Add(int64(n))
		if err != nil {
			break
		}
	}
	discardBufs.Put(bp)
	h := w.Header()
	h.Set("x-ms-request-id", "00000000-0000-0000-0000-000000000000")
	h.Set("x-ms-version", "2026-12-06")
	if f.fail != nil {
		if status, code := f.fail(r); status != 0 {
			h.Set("x-ms-error-code", code)
			h.Set("Content-Type", "application/xml")
			w.WriteHeader(status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>injected</Message></Error>`, code)
			return
		}
	}
	comp := r.URL.Query().Get("comp")
	if f.record {
		f.mu.Lock()
		f.ops = append(f.ops, comp+" "+r.URL.Path)
		f.mu.Unlock()
	}
	now := time.Now().UTC()
	h.Set("Date", now.Format(http.TimeFormat))
	switch {
	case r.Method == http.MethodPut && comp == "snapshot":
		h.Set("x-ms-snapshot", now.Format("2006-01-02T15:04:05.0000000Z"))
	case r.Method == http.MethodPut && (comp == "block" || comp == "blocklist" || comp == ""):
		h.Set("ETag", fmt.Sprintf(`"0x%X"`, now.UnixNano()))
		h.Set("Last-Modified", now.Format(http.TimeFormat))
	default:
		w.WriteHeader(http.StatusNotImplemented)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// noRetry are client options without azcore's own retries (the failure-shape tests count attempts).
func noRetry() *azblob.ClientOptions {
	return &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}}
}

// respErr is an *azcore.ResponseError as azcore builds it for a status and code.
func respErr(status int, code string) error {
	return &azcore.ResponseError{StatusCode: status, ErrorCode: code}
}

var errBoom = errors.New("boom")

// nopCloser adapts a reader to Item.Open.
func opener(b []byte, opened *atomic.Int32) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		if opened != nil {
			opened.Add(1)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

func containsSig(s string) bool {
	return strings.Contains(s, "FAKESIGNATURE") || strings.Contains(s, "sig=") && !strings.Contains(s, "sig=REDACTED")
}
