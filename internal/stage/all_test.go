package stage

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/crypt"
)

var oddNames = []string{
	"Shared Documents/Ünïcødé folder/a #1%.docx",
	"Shared Documents/100% done.xlsx",
	"Shared Documents/space  twice/  lead.txt",
	"Shared Documents/#hash/#.txt",
	"Shared Documents/?query?.txt",
	"Shared Documents/amp&eq=plus+.txt",
	"Shared Documents/日本語/ファイル.pptx",
	"Shared Documents/emoji 😀/file.bin",
	"Shared Documents/%2F not a slash.txt",
	"Shared Documents/semi;colon,comma'quote\".txt",
}

func TestUploadAll(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	var mu sync.Mutex
	var ups []ProgressUpdate
	u := w.uploader(Options{Concurrency: 3, Progress: func(p ProgressUpdate) { mu.Lock(); ups = append(ups, p); mu.Unlock() }})
	sizes := []int{0, 1, 15, 16, 17, testBlockSize - 1, testBlockSize, testBlockSize + 1, 2*testBlockSize + 5, 3*testBlockSize + 7}
	var items []Item
	plains := map[string][]byte{}
	for i := range 20 {
		meta := i%4 == 3
		name := fmt.Sprintf("%s.%02d", oddNames[i%len(oddNames)], i)
		if meta {
			name = fmt.Sprintf("Manifest %02d #%%.xml", i)
		}
		plain := testData(sizes[i%len(sizes)], uint64(i))
		plains[name] = plain
		items = append(items, Item{Name: name, Metadata: meta, Size: int64(len(plain)), Open: opener(plain, nil)})
	}
	g0 := runtime.NumGoroutine()
	results, err := u.UploadAll(t.Context(), w.dest(key), items)
	if err != nil {
		t.Fatalf("UploadAll: %v", err)
	}
	if len(results) != len(items) {
		t.Fatalf("%d results for %d items", len(results), len(items))
	}
	var total int64
	for i, r := range results {
		it := items[i]
		if r.Name != it.Name || r.Metadata != it.Metadata || !r.Done() || r.Attempts != 1 {
			t.Errorf("result %d = %+v for item %q", i, r, it.Name)
			continue
		}
		cc := w.data
		uri := w.dataSAS
		if it.Metadata {
			cc, uri = w.meta, w.metaSAS
		}
		checkLatest(t, cc, it.Name, plains[it.Name], key, r.Result)
		v, err := u.Verify(t.Context(), uri, it.Name, key, it.Size, VerifyOptions{Snapshot: r.Snapshot, Deep: true})
		if err != nil || !v.OK {
			t.Errorf("Verify(%q) = %+v, %v", it.Name, v, err)
		}
		total += crypt.EncryptedSize(it.Size)
	}
	// Nothing of the data container went to the metadata container and vice versa.
	for _, it := range items {
		other := w.meta
		if it.Metadata {
			other = w.data
		}
		if _, err := other.NewBlockBlobClient(it.Name).GetProperties(t.Context(), nil); err == nil {
			t.Errorf("%q is also in the other container", it.Name)
		}
	}
	mu.Lock()
	last := ups[len(ups)-1]
	mu.Unlock()
	if !last.Done || last.FilesDone != 20 || last.Files != 20 || last.BytesDone != total || last.Bytes != total {
		t.Errorf("last progress %+v, want 20 files and %d bytes", last, total)
	}
	waitGoroutines(t, g0)
}

// waitGoroutines fails when the goroutine count does not come back to g0 (HTTP keep-alive
// connections may linger briefly; they are closed first).
func waitGoroutines(t *testing.T, g0 int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		n := runtime.NumGoroutine()
		if n <= g0+4 { // the shared azcore transport may keep a few idle connections' goroutines
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", n, g0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUploadAllFirstErrorWins: one source fails; the others are cancelled; the read error is
// returned (not a cancellation), the finished items are Done, nothing leaks.
func TestUploadAllFirstErrorWins(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{Concurrency: 3})
	big := testData(6*testBlockSize, 1)
	var items []Item
	for i := range 12 {
		it := Item{Name: fmt.Sprintf("first error/%02d", i), Size: int64(len(big)), Open: opener(big, nil)}
		if i == 4 {
			it.Open = func() (io.ReadCloser, error) {
				return io.NopCloser(&failAfter{r: strings.NewReader(string(big)), n: 2 * testBlockSize, err: errBoom}), nil
			}
		}
		items = append(items, it)
	}
	g0 := runtime.NumGoroutine()
	results, err := u.UploadAll(t.Context(), w.dest(key), items)
	var se *SourceError
	if !errors.Is(err, errBoom) || !errors.As(err, &se) || se.Blob != "first error/04" {
		t.Fatalf("err = %v, want the source error of item 4", err)
	}
	if results[4].Done() {
		t.Error("the failing item is Done")
	}
	done := 0
	for i, r := range results {
		if r.Done() {
			done++
			checkLatest(t, w.data, items[i].Name, big, key, r.Result)
		} else if snaps := snapshots(t, w.data, items[i].Name); len(snaps) != 0 {
			t.Errorf("%q not Done but snapshotted", items[i].Name)
		}
	}
	if done == len(items)-1 {
		t.Error("the failure cancelled nothing")
	}
	t.Logf("%d of %d items done before the failure stopped the rest", done, len(items))
	waitGoroutines(t, g0)

	t.Run("open error", func(t *testing.T) {
		items := []Item{{Name: "open error", Size: 1, Open: func() (io.ReadCloser, error) { return nil, errBoom }}}
		_, err := u.UploadAll(t.Context(), w.dest(key), items)
		if !errors.Is(err, errBoom) || !errors.As(err, &se) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		items := []Item{{Name: "cancel", Size: int64(len(big)), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(&onRead{r: strings.NewReader(string(big)), n: testBlockSize, fn: cancel}), nil
		}}}
		_, err := u.UploadAll(ctx, w.dest(key), items)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("invalid items", func(t *testing.T) {
		for _, items := range [][]Item{
			{{Name: "", Open: opener(nil, nil)}},
			{{Name: "x"}},
			{{Name: "dup", Open: opener(nil, nil)}, {Name: "dup", Open: opener(nil, nil)}},
		} {
			if _, err := u.UploadAll(t.Context(), w.dest(key), items); err == nil {
				t.Errorf("UploadAll(%+v): no error", items)
			}
		}
		// The same name in both containers is fine.
		if _, err := u.UploadAll(t.Context(), w.dest(key), []Item{{Name: "same", Open: opener([]byte("a"), nil), Size: 1},
			{Name: "same", Metadata: true, Open: opener([]byte("b"), nil), Size: 1}}); err != nil {
			t.Errorf("same name in both containers: %v", err)
		}
		if _, err := u.UploadAll(t.Context(), Destination{DataContainerURI: w.dataSAS, MetadataContainerURI: w.metaSAS, Key: key[:16]}, nil); !errors.Is(err, crypt.ErrKeySize) {
			t.Errorf("short key: %v", err)
		}
	})
}

// TestUploadAllRetries drives the retry loop against failure shapes of an in-process server, with
// azcore's own retries off so that every failure reaches the classifier.
func TestUploadAllRetries(t *testing.T) {
	key := newKey(t)
	for _, tc := range []struct {
		name         string
		status       int
		code         string
		failures     int // how many Put Block List / Put Blob requests fail
		wantAttempts int
		wantErr      bool
		sas          bool
	}{
		{"503 ServerBusy once", 503, "ServerBusy", 1, 2, false, false},
		{"500 InternalError twice", 500, "InternalError", 2, 3, false, false},
		{"429 three times gives up", 429, "", 3, 3, true, false},
		{"408 once", 408, "", 1, 2, false, false},
		{"400 OperationTimedOut once", 400, "OperationTimedOut", 1, 2, false, false},
		{"400 InvalidHeaderValue not retried", 400, "InvalidHeaderValue", 1, 1, true, false},
		{"403 AuthenticationFailed not retried", 403, "AuthenticationFailed", 1, 1, true, true},
		{"404 ContainerNotFound not retried", 404, "ContainerNotFound", 1, 1, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{100, 3 * testBlockSize} {
				f := newFakeBlob(t)
				var failed atomic.Int32
				f.fail = func(r *http.Request) (int, string) {
					comp := r.URL.Query().Get("comp")
					if (comp == "blocklist" || comp == "") && failed.Add(1) <= int32(tc.failures) {
						return tc.status, tc.code
					}
					return 0, ""
				}
				var opened atomic.Int32
				var logs bytes.Buffer
				u := testUploader(Options{ClientOptions: noRetry(), Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
				res, err := u.UploadAll(t.Context(), Destination{DataContainerURI: f.containerURL("data"), MetadataContainerURI: f.containerURL("meta"), Key: key},
					[]Item{{Name: oddName, Size: int64(size), Open: opener(testData(size, 1), &opened)}})
				if (err != nil) != tc.wantErr {
					t.Fatalf("size %d: err = %v", size, err)
				}
				if res[0].Attempts != tc.wantAttempts || int(opened.Load()) != tc.wantAttempts {
					t.Errorf("size %d: %d attempts, %d opens; want %d", size, res[0].Attempts, opened.Load(), tc.wantAttempts)
				}
				if tc.sas != errors.Is(err, ErrSASExpired) {
					t.Errorf("size %d: errors.Is(%v, ErrSASExpired) = %v", size, err, !tc.sas)
				}
				if err != nil && containsSig(err.Error()) {
					t.Errorf("error shows the SAS: %v", err)
				}
				if err != nil && strings.Contains(err.Error(), "\n") {
					t.Errorf("multi-line error: %q", err)
				}
				if !tc.wantErr && !res[0].Done() {
					t.Errorf("size %d: not done: %+v", size, res[0])
				}
				if l := logs.String(); containsSig(l) || strings.Contains(l, base64.StdEncoding.EncodeToString(key)) ||
					strings.Contains(l, base64.StdEncoding.EncodeToString(res[0].IV)) && res[0].IV != nil {
					t.Errorf("logs hold a secret:\n%s", l)
				}
			}
		})
	}
}

func TestShouldRetry(t *testing.T) {
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"503", respErr(503, ""), true},
		{"500 InternalError", respErr(500, "InternalError"), true},
		{"502", respErr(502, ""), true},
		{"504", respErr(504, ""), true},
		{"408", respErr(408, ""), true},
		{"429", respErr(429, ""), true},
		{"ServerBusy", respErr(503, "ServerBusy"), true},
		{"OperationTimedOut on 400", respErr(400, "OperationTimedOut"), true},
		{"wrapped 503", fmt.Errorf("x: %w", storageErr("put block", "x", respErr(503, ""))), true},
		{"400", respErr(400, "InvalidBlockList"), false},
		{"404", respErr(404, "BlobNotFound"), false},
		{"409", respErr(409, "BlobAlreadyExists"), false},
		{"403 as SASError", storageErr("put blob", "x", respErr(403, "AuthorizationFailure")), false},
		{"403 AuthenticationFailed", storageErr("put blob", "x", respErr(403, "AuthenticationFailed")), false},
		{"raw 403 from a source", respErr(403, "AuthorizationFailure"), false},
		{"source 503", &SourceError{Blob: "x", Err: respErr(503, "ServerBusy")}, true},
		{"canceled", context.Canceled, false},
		{"deadline", context.DeadlineExceeded, false},
		{"wrapped canceled", fmt.Errorf("x: %w", &url.Error{Op: "Put", URL: "u", Err: context.Canceled}), false},
		{"connection refused", &url.Error{Op: "Put", URL: "u", Err: opErr}, true},
		{"net.OpError", opErr, true},
		{"reset", fmt.Errorf("x: %w", syscall.ECONNRESET), true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"size mismatch", fmt.Errorf("x: %w", ErrSizeMismatch), false},
		{"bad key", crypt.ErrKeySize, false},
		{"other", errBoom, false},
	} {
		if got := shouldRetry(tc.err); got != tc.want {
			t.Errorf("%s: shouldRetry(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestTransportErrorRedacted: net/http puts the full request URL (with its SAS) in transport
// errors; they come out with sig= redacted, still classified as retryable.
func TestTransportErrorRedacted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	key := newKey(t)
	u := testUploader(Options{ClientOptions: noRetry(), MaxAttempts: 2})
	uri := "http://" + addr + "/devstoreaccount1/c?sv=2025-01-05&sp=rw&sig=FAKESIGNATURE%3D"
	for _, size := range []int{10, 2 * testBlockSize} {
		_, err := u.UploadOne(t.Context(), uri, oddName, strings.NewReader(string(testData(size, 1))), int64(size), key)
		if err == nil {
			t.Fatal("no error")
		}
		if strings.Contains(err.Error(), "FAKESIGNATURE") || !strings.Contains(err.Error(), "sig=REDACTED") {
			t.Errorf("error not redacted: %v", err)
		}
		if !shouldRetry(err) {
			t.Errorf("shouldRetry(%v) = false", err)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			t.Errorf("the *url.Error (and its URL) is still in the chain")
		}
	}
	_, err = u.Verify(t.Context(), uri, "x", key, 1, VerifyOptions{})
	if err == nil || strings.Contains(err.Error(), "FAKESIGNATURE") {
		t.Errorf("Verify error %v", err)
	}
	if _, err := u.UploadOne(t.Context(), "::not a url", "x", strings.NewReader("x"), 1, key); err == nil || strings.Contains(err.Error(), "not a url") {
		t.Errorf("bad URL error %v", err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://a/c?sv=1&sig=abc%3D&sp=rw":  "https://a/c?sv=1&sig=REDACTED&sp=rw",
		`Put "http://x/c/b?SIG=zz": refused`: `Put "http://x/c/b?SIG=REDACTED": refused`,
		"no signature":                       "no signature",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConcurrencyBound: UploadOne calls beyond Options.Concurrency wait for a file slot.
func TestConcurrencyBound(t *testing.T) {
	f := newFakeBlob(t)
	var inFlight, peak atomic.Int32
	f.fail = func(r *http.Request) (int, string) {
		if r.URL.Query().Get("comp") == "block" {
			n := inFlight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
			inFlight.Add(-1)
		}
		return 0, ""
	}
	key := newKey(t)
	u := testUploader(Options{Concurrency: 2, BlockConcurrency: 2})
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			if _, err := u.UploadOne(t.Context(), f.containerURL("data"), fmt.Sprint(i), &patternReader{n: 6 * testBlockSize}, 6*testBlockSize, key); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 2*2 {
		t.Errorf("%d Put Block in flight, want at most Concurrency × BlockConcurrency = 4", p)
	}
	t.Logf("peak Put Block in flight: %d", peak.Load())
}
