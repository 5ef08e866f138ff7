package stage

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/spomig/spomig/internal/crypt"
)

func testUploader(opts Options) *Uploader {
	if opts.BlockSize == 0 {
		opts.BlockSize = testBlockSize
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return NewUploader(opts)
}

func TestUploadOneRoundTrip(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	const bs = testBlockSize
	for _, size := range []int{0, 1, 15, 16, bs - 1, bs, bs + 1, 3*bs + 7} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			name := fmt.Sprintf("%s/%d %s", oddName, size, "ü #%.bin")
			plain := testData(size, 1)
			res, err := u.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(plain), int64(size), key)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			checkLatest(t, w.data, name, plain, key, res)

			// Again under the same name: a fresh IV and a new snapshot that is now the latest.
			plain2 := testData(size, 2)
			res2, err := u.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(plain2), int64(size), key)
			if err != nil {
				t.Fatalf("re-upload: %v", err)
			}
			if bytes.Equal(res.IV, res2.IV) {
				t.Error("re-upload reused the IV")
			}
			if res2.Snapshot <= res.Snapshot {
				t.Errorf("re-upload snapshot %s is not after %s", res2.Snapshot, res.Snapshot)
			}
			if n := len(snapshots(t, w.data, name)); n != 2 {
				t.Errorf("%d snapshots, want 2", n)
			}
			checkLatest(t, w.data, name, plain2, key, res2)
		})
	}
}

// TestBlobNamesEscaped lists the container (shared key) to see that the names arrived intact, with
// their '/' as hierarchy separators.
func TestBlobNamesEscaped(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	names := []string{oddName, "a/b/c.txt", "100% sure?.txt", "x+y=z & more;,@$!'()[]~.txt", "日本語/ファイル.xlsx"}
	for _, n := range names {
		if _, err := u.UploadOne(t.Context(), w.dataSAS, n, strings.NewReader("x"), 1, key); err != nil {
			t.Fatalf("upload %q: %v", n, err)
		}
	}
	var got []string
	pager := w.data.NewListBlobsFlatPager(nil)
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Segment.BlobItems {
			got = append(got, *it.Name)
		}
	}
	for _, n := range names {
		found := false
		for _, g := range got {
			found = found || g == n
		}
		if !found {
			t.Errorf("blob %q not listed; listing has %q", n, got)
		}
	}
	// The hierarchy is real: a delimiter listing of the root shows the folder.
	hp := w.data.NewListBlobsHierarchyPager("/", &container.ListBlobsHierarchyOptions{})
	page, err := hp.NextPage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var prefixes []string
	for _, p := range page.Segment.BlobPrefixes {
		prefixes = append(prefixes, *p.Name)
	}
	if !strings.Contains(strings.Join(prefixes, "|"), "Shared Documents/") {
		t.Errorf("root prefixes %q lack %q", prefixes, "Shared Documents/")
	}
}

func TestUploadOneSourceShapes(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	const size = 2*testBlockSize + 5
	plain := testData(size, 3)
	for _, tc := range []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"OneByteReader", iotest.OneByteReader},
		{"HalfReader", iotest.HalfReader},
		{"DataErrReader", iotest.DataErrReader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "shapes/" + tc.name
			src := bytes.NewReader(plain)
			if tc.name == "OneByteReader" {
				// one byte per Read over 2 MiB is slow through CBC block carries: keep it small
				src = bytes.NewReader(plain[:testBlockSize+3])
			}
			want := plain[:src.Len()]
			res, err := u.UploadOne(t.Context(), w.dataSAS, name, tc.wrap(src), int64(len(want)), key)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			checkLatest(t, w.data, name, want, key, res)
		})
	}
	t.Run("unknown size", func(t *testing.T) {
		for _, n := range []int{5, testBlockSize - 16, testBlockSize, 2 * testBlockSize} { // ciphertext 16, BS, BS+16, 2BS+16
			name := fmt.Sprintf("shapes/unknown-%d", n)
			res, err := u.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(plain[:n]), -1, key)
			if err != nil {
				t.Fatalf("upload %d bytes of unknown size: %v", n, err)
			}
			checkLatest(t, w.data, name, plain[:n], key, res)
		}
	})
	t.Run("TimeoutReader fails", func(t *testing.T) {
		_, err := u.UploadOne(t.Context(), w.dataSAS, "shapes/timeout", iotest.TimeoutReader(bytes.NewReader(plain)), size, key)
		var se *SourceError
		if !errors.Is(err, iotest.ErrTimeout) || !errors.As(err, &se) {
			t.Fatalf("err = %v, want a *SourceError wrapping iotest.ErrTimeout", err)
		}
		if _, gerr := w.data.NewBlockBlobClient("shapes/timeout").GetProperties(t.Context(), nil); gerr == nil {
			t.Error("a blob was committed")
		}
	})
}

// TestFailingSourceKeepsPreviousSnapshot: a source error or a size mismatch commits nothing, so the
// previous upload stays the latest snapshot and the base blob keeps its IV.
func TestFailingSourceKeepsPreviousSnapshot(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	const size = 3*testBlockSize + 7
	plain := testData(size, 4)
	for _, tc := range []struct {
		name     string
		src      func() io.Reader
		declared int64
		want     error
	}{
		{"read error midway", func() io.Reader { return &failAfter{r: bytes.NewReader(plain), n: size / 2, err: errBoom} }, size, errBoom},
		{"read error in the first block", func() io.Reader { return &failAfter{r: bytes.NewReader(plain), n: 100, err: errBoom} }, size, errBoom},
		{"unexpected EOF from the source", func() io.Reader {
			return &failAfter{r: bytes.NewReader(plain), n: testBlockSize + 1, err: io.ErrUnexpectedEOF}
		}, -1, io.ErrUnexpectedEOF},
		{"shorter than declared", func() io.Reader { return bytes.NewReader(plain[:size-3]) }, size, ErrSizeMismatch},
		{"shorter, same padded size", func() io.Reader { return bytes.NewReader(plain[:size-1]) }, size, ErrSizeMismatch},
		{"longer than declared", func() io.Reader { return bytes.NewReader(plain) }, size - 1, ErrSizeMismatch},
		{"longer by whole blocks", func() io.Reader { return bytes.NewReader(plain) }, 2 * testBlockSize, ErrSizeMismatch},
		{"small, longer", func() io.Reader { return bytes.NewReader(plain[:40]) }, 8, ErrSizeMismatch},
		{"small, shorter", func() io.Reader { return bytes.NewReader(plain[:8]) }, 40, ErrSizeMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "fail/" + tc.name
			first, err := u.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(plain[:1000]), 1000, key)
			if err != nil {
				t.Fatal(err)
			}
			_, err = u.UploadOne(t.Context(), w.dataSAS, name, tc.src(), tc.declared, key)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if shouldRetry(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("shouldRetry(%v) = true", err)
			}
			if n := len(snapshots(t, w.data, name)); n != 1 {
				t.Errorf("%d snapshots after the failure, want 1", n)
			}
			checkLatest(t, w.data, name, plain[:1000], key, first)
			v, err := u.Verify(t.Context(), w.dataSAS, name, key, 1000, VerifyOptions{Snapshot: first.Snapshot, Deep: true})
			if err != nil || !v.OK {
				t.Errorf("Verify = %+v, %v", v, err)
			}
		})
	}
}

func TestExpiredSAS(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	expired := w.sasURL(t, w.data, time.Now().Add(-3*time.Hour), time.Now().Add(-time.Hour))
	sig, _ := url.Parse(expired)
	sigValue := sig.Query().Get("sig")
	check := func(t *testing.T, err error) {
		t.Helper()
		var se *SASError
		if !errors.Is(err, ErrSASExpired) || !errors.As(err, &se) {
			t.Fatalf("err = %v, want a *SASError matching ErrSASExpired", err)
		}
		if se.StatusCode != 403 || se.Code == "" {
			t.Errorf("SASError status %d code %q", se.StatusCode, se.Code)
		}
		if shouldRetry(err) {
			t.Error("shouldRetry(expired SAS) = true")
		}
		if strings.Contains(err.Error(), sigValue) || strings.Contains(err.Error(), url.QueryEscape(sigValue)) {
			t.Errorf("error shows the signature: %v", err)
		}
		t.Logf("%v", err)
	}
	for _, size := range []int{10, 3 * testBlockSize} {
		_, err := u.UploadOne(t.Context(), expired, fmt.Sprintf("expired-%d", size), bytes.NewReader(testData(size, 5)), int64(size), key)
		check(t, err)
	}
	_, err := u.Verify(t.Context(), expired, "expired-10", key, 10, VerifyOptions{})
	check(t, err)

	var opened int
	_, err = u.UploadAll(t.Context(), Destination{DataContainerURI: expired, MetadataContainerURI: w.metaSAS, Key: key},
		[]Item{{Name: "x", Size: 3, Open: func() (io.ReadCloser, error) { opened++; return io.NopCloser(strings.NewReader("abc")), nil }}})
	check(t, err)
	if opened != 1 {
		t.Errorf("an expired SAS was retried: opened %d times", opened)
	}
}

// TestCrashBeforeCommit: blocks staged, then the context is cancelled before Put Block List. Nothing
// is committed (the previous version stays the latest snapshot), and a retry ends consistent with
// only its own blocks committed.
func TestCrashBeforeCommit(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	const size = 4*testBlockSize + 100
	for _, prev := range []bool{false, true} {
		t.Run(fmt.Sprintf("previous version %v", prev), func(t *testing.T) {
			name := fmt.Sprintf("crash/before commit/%v.bin", prev)
			var first Result
			if prev {
				var err error
				if first, err = u.UploadOne(t.Context(), w.dataSAS, name, strings.NewReader("v1"), 2, key); err != nil {
					t.Fatal(err)
				}
			}
			plain := testData(size, 6)
			ctx, cancel := context.WithCancel(t.Context())
			src := &onRead{r: bytes.NewReader(plain), n: 3*testBlockSize + 10, fn: cancel}
			_, err := u.UploadOne(ctx, w.dataSAS, name, src, size, key)
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if shouldRetry(err) {
				t.Error("shouldRetry(context.Canceled) = true")
			}
			bl, err := w.data.NewBlockBlobClient(name).GetBlockList(t.Context(), blockblob.BlockListTypeAll, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(bl.UncommittedBlocks) == 0 {
				t.Error("the crash left no staged blocks: the test did not crash mid-upload")
			}
			v, err := u.Verify(t.Context(), w.dataSAS, name, key, size, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if prev {
				checkLatest(t, w.data, name, []byte("v1"), key, first)
				if v.Repair != RepairUpload { // the base blob is v1, not this item's size
					t.Errorf("Verify = %+v, want RepairUpload", v)
				}
			} else if v.OK || v.Repair != RepairUpload {
				t.Errorf("Verify of a never-committed blob = %+v, want RepairUpload", v)
			}

			res, err := u.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(plain), size, key)
			if err != nil {
				t.Fatalf("retry: %v", err)
			}
			checkLatest(t, w.data, name, plain, key, res)
			bl, err = w.data.NewBlockBlobClient(name).GetBlockList(t.Context(), blockblob.BlockListTypeAll, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(bl.UncommittedBlocks) != 0 || len(bl.CommittedBlocks) != 5 {
				t.Errorf("after the retry: %d committed, %d uncommitted blocks; want 5, 0", len(bl.CommittedBlocks), len(bl.UncommittedBlocks))
			}
			prefix := ""
			for _, b := range bl.CommittedBlocks {
				raw, _ := base64.StdEncoding.DecodeString(*b.Name)
				if len(raw) != 20 || (prefix != "" && string(raw[:16]) != prefix) {
					t.Errorf("committed block ID %q is not prefix+number of one upload", *b.Name)
				}
				prefix = string(raw[:16])
			}
			v, err = u.Verify(t.Context(), w.dataSAS, name, key, size, VerifyOptions{Snapshot: res.Snapshot, Deep: true})
			if err != nil || !v.OK {
				t.Errorf("Verify after the retry = %+v, %v", v, err)
			}
		})
	}
}

var errCrash = errors.New("simulated crash after commit")

// TestCrashAfterCommit: the commit succeeded, the snapshot did not happen. Verify reports it, and
// either Resnapshot or a new upload restores the invariant.
func TestCrashAfterCommit(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	const size = 2*testBlockSize + 33
	for _, tc := range []struct {
		name string
		size int
		fix  string
	}{
		{"blocks, fixed by resnapshot", size, "resnapshot"},
		{"blocks, fixed by upload", size, "upload"},
		{"single put, fixed by resnapshot", 100, "resnapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "crash/after commit/" + tc.name
			u := w.uploader(Options{})
			v1 := testData(tc.size, 8)
			first, err := u.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(v1), int64(tc.size), key)
			if err != nil {
				t.Fatal(err)
			}
			crashing := w.uploader(Options{})
			crashing.afterCommit = func(string) error { return errCrash }
			v2 := testData(tc.size, 9)
			if _, err := crashing.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(v2), int64(tc.size), key); !errors.Is(err, errCrash) {
				t.Fatalf("err = %v, want the simulated crash", err)
			}
			// The base blob is v2 with a new IV, the latest snapshot still v1: the P9 state.
			if d := latest(t, w.data, name); d.snapshot != first.Snapshot {
				t.Fatalf("latest snapshot %s, want the first %s", d.snapshot, first.Snapshot)
			}
			for _, opts := range []VerifyOptions{{Snapshot: first.Snapshot}, {Snapshot: first.Snapshot, Deep: true}, {}} {
				v, err := u.Verify(t.Context(), w.dataSAS, name, key, int64(tc.size), opts)
				if err != nil {
					t.Fatal(err)
				}
				if v.OK || v.Repair != RepairSnapshot {
					t.Errorf("Verify(%+v) = %+v, want RepairSnapshot", opts, v)
				}
				t.Logf("Verify(%+v): %s", opts, v.Reason)
			}
			var res Result
			switch tc.fix {
			case "resnapshot":
				res, err = u.Resnapshot(t.Context(), w.dataSAS, name, int64(tc.size))
			case "upload":
				res, err = u.UploadOne(t.Context(), w.dataSAS, name, bytes.NewReader(v2), int64(tc.size), key)
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.fix, err)
			}
			checkLatest(t, w.data, name, v2, key, res)
			v, err := u.Verify(t.Context(), w.dataSAS, name, key, int64(tc.size), VerifyOptions{Snapshot: res.Snapshot, Deep: true})
			if err != nil || !v.OK {
				t.Errorf("Verify after %s = %+v, %v", tc.fix, v, err)
			}
		})
	}
	t.Run("cancelled between commit and snapshot", func(t *testing.T) {
		// The snapshot runs on a context that ignores the cancellation: no inconsistent state.
		u := w.uploader(Options{})
		ctx, cancel := context.WithCancel(t.Context())
		u.afterCommit = func(string) error { cancel(); return nil }
		plain := testData(size, 10)
		res, err := u.UploadOne(ctx, w.dataSAS, "crash/cancel after commit", bytes.NewReader(plain), size, key)
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		checkLatest(t, w.data, "crash/cancel after commit", plain, key, res)
	})
}

func TestVerify(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	const size = testBlockSize + 1
	plain := testData(size, 11)
	res, err := u.UploadOne(t.Context(), w.dataSAS, "v/good", bytes.NewReader(plain), size, key)
	if err != nil {
		t.Fatal(err)
	}
	// A blob without IV metadata and one whose content does not decrypt, written with the shared key.
	if _, err := w.data.NewBlockBlobClient("v/no iv").UploadBuffer(t.Context(), make([]byte, 32), nil); err != nil {
		t.Fatal(err)
	}
	garbage := testData(int(crypt.EncryptedSize(size)), 12)
	ivb64 := base64.StdEncoding.EncodeToString(res.IV)
	if _, err := w.data.NewBlockBlobClient("v/garbage").UploadBuffer(t.Context(), garbage,
		&blockblob.UploadBufferOptions{Metadata: map[string]*string{"iv": &ivb64}}); err != nil {
		t.Fatal(err)
	}
	gres, err := u.Resnapshot(t.Context(), w.dataSAS, "v/garbage", size)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		blob string
		size int64
		key  []byte
		opts VerifyOptions
		want Repair
	}{
		{"ok", "v/good", size, key, VerifyOptions{Snapshot: res.Snapshot}, RepairNone},
		{"ok deep", "v/good", size, key, VerifyOptions{Snapshot: res.Snapshot, Deep: true}, RepairNone},
		{"ok unknown size", "v/good", -1, key, VerifyOptions{Snapshot: res.Snapshot, Deep: true}, RepairNone},
		{"no snapshot recorded", "v/good", size, key, VerifyOptions{}, RepairSnapshot},
		{"unknown snapshot", "v/good", size, key, VerifyOptions{Snapshot: "2020-01-01T00:00:00.0000000Z"}, RepairSnapshot},
		{"missing", "v/missing", size, key, VerifyOptions{Snapshot: res.Snapshot}, RepairUpload},
		{"wrong size", "v/good", size + 16, key, VerifyOptions{Snapshot: res.Snapshot}, RepairUpload},
		{"wrong size, same padded length", "v/good", size + 1, key, VerifyOptions{Snapshot: res.Snapshot, Deep: true}, RepairUpload},
		{"no IV metadata", "v/no iv", 16, key, VerifyOptions{}, RepairUpload},
		{"wrong key", "v/good", size, newKey(t), VerifyOptions{Snapshot: res.Snapshot, Deep: true}, RepairUpload},
		{"garbage, shallow", "v/garbage", size, key, VerifyOptions{Snapshot: gres.Snapshot}, RepairNone},
		{"garbage, deep", "v/garbage", size, key, VerifyOptions{Snapshot: gres.Snapshot, Deep: true}, RepairUpload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := u.Verify(t.Context(), w.dataSAS, tc.blob, tc.key, tc.size, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if v.Repair != tc.want || v.OK != (tc.want == RepairNone) {
				t.Errorf("Verify = %+v, want repair %v", v, tc.want)
			}
			t.Logf("%+v", v)
		})
	}
	t.Run("resnapshot refuses an incomplete blob", func(t *testing.T) {
		for _, blob := range []string{"v/missing", "v/no iv"} {
			if _, err := u.Resnapshot(t.Context(), w.dataSAS, blob, size); !errors.Is(err, ErrNotStaged) {
				t.Errorf("Resnapshot(%q) = %v, want ErrNotStaged", blob, err)
			}
		}
	})
	t.Run("snapshot unreadable through the SAS", func(t *testing.T) {
		// Without the test transport, Azurite refuses ?snapshot= requests signed by a container SAS.
		// Verify then cannot confirm the snapshot and asks for a fresh one instead of failing.
		plain := testUploader(Options{})
		v, err := plain.Verify(t.Context(), w.dataSAS, "v/good", key, size, VerifyOptions{Snapshot: res.Snapshot})
		if err != nil {
			t.Fatal(err)
		}
		if v.Repair != RepairSnapshot || !strings.Contains(v.Reason, "cannot be read") {
			t.Errorf("Verify = %+v, want RepairSnapshot for an unreadable snapshot", v)
		}
		t.Logf("%+v", v)
	})
	t.Run("missing container is an error", func(t *testing.T) {
		u2 := w.uploader(Options{})
		gone := strings.Replace(w.dataSAS, containerName(w.data), "no-such-container", 1)
		if _, err := u2.Verify(t.Context(), gone, "v/good", key, size, VerifyOptions{}); err == nil {
			t.Error("Verify in a missing container: no error")
		}
	})
}

func TestProgressUpdates(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	var ups []ProgressUpdate
	u := w.uploader(Options{Progress: func(p ProgressUpdate) { ups = append(ups, p) }, ProgressBytes: 2 * testBlockSize, ProgressInterval: time.Hour})
	const size = 9*testBlockSize + 3
	if _, err := u.UploadOne(t.Context(), w.dataSAS, "progress", &patternReader{n: size}, size, key); err != nil {
		t.Fatal(err)
	}
	if len(ups) < 3 || len(ups) > 7 {
		t.Errorf("%d updates for 10 blocks every 2 blocks: %+v", len(ups), ups)
	}
	last := ups[len(ups)-1]
	want := crypt.EncryptedSize(size)
	if !last.Done || last.BytesDone != want || last.Bytes != want || last.FilesDone != 1 || last.Files != 1 {
		t.Errorf("last update %+v, want done with %d bytes", last, want)
	}
	for i := 1; i < len(ups); i++ {
		if ups[i].BytesDone < ups[i-1].BytesDone {
			t.Errorf("progress went back: %+v", ups)
		}
	}
}

func TestBlockIDs(t *testing.T) {
	p1, _ := newBlockIDPrefix()
	p2, _ := newBlockIDPrefix()
	seen := map[string]bool{}
	for _, p := range [][16]byte{p1, p2} {
		for _, n := range []int{0, 1, 255, 256, 49_999} {
			id := blockID(p, n)
			if len(id) != 28 || seen[id] {
				t.Errorf("block ID %q: length %d or duplicate", id, len(id))
			}
			seen[id] = true
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{oddName, true},
		{"Manifest.xml", true},
		{"", false},
		{"a/", false},
		{"a.", false},
		{"a\x00b", false},
		{"a\nb", false},
		{string([]byte{0xff, 0xfe}), false},
		{strings.Repeat("a", 1024), true},
		{strings.Repeat("a", 1025), false},
	} {
		if err := validateName(tc.name); (err == nil) != tc.ok {
			t.Errorf("validateName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestBlockSizeFor(t *testing.T) {
	u := NewUploader(Options{})
	for _, tc := range []struct {
		cipher int64
		want   int64
		pooled bool
	}{
		{-1, DefaultBlockSize, true},
		{0, DefaultBlockSize, true},
		{DefaultBlockSize * maxBlocks, DefaultBlockSize, true},
		{DefaultBlockSize*maxBlocks + 1, 5 << 20, false},
		{250_000_000_000, 5 << 20, false},
	} {
		got, pooled, err := u.blockSizeFor(tc.cipher)
		if err != nil || got != tc.want || pooled != tc.pooled {
			t.Errorf("blockSizeFor(%d) = %d, %v, %v; want %d, %v", tc.cipher, got, pooled, err, tc.want, tc.pooled)
		}
	}
	if _, _, err := u.blockSizeFor(int64(maxStageBlockSize) * maxBlocks * 2); err == nil {
		t.Error("no error for a blob beyond 50,000 blocks of 4000 MiB")
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := NewUploader(Options{}).Options()
	if o.BlockSize != 4<<20 || o.Concurrency != 2 || o.BlockConcurrency != 2 || o.MaxAttempts != 3 {
		t.Errorf("defaults %+v", o)
	}
	if got := (Options{}).MemoryCost(); got != 16<<20+2*64<<10 {
		t.Errorf("MemoryCost() = %d", got)
	}
	if o := NewUploader(Options{BlockSize: 1}).Options(); o.BlockSize != MinBlockSize {
		t.Errorf("BlockSize 1 → %d", o.BlockSize)
	}
	if o := NewUploader(Options{BlockSize: 1 << 30}).Options(); o.BlockSize != MaxBlockSize {
		t.Errorf("BlockSize 1 GiB → %d", o.BlockSize)
	}
	t.Log(Options{}.String())
}

// TestMetadataKeyIsUpperCaseIV reads the container listing XML raw (azblob lower-cases metadata
// keys when it parses listings, and Get canonicalises them to "Iv"): the key stored is exactly "IV",
// on the base blob and on its snapshot.
func TestMetadataKeyIsUpperCaseIV(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	u := w.uploader(Options{})
	for _, size := range []int{10, 2 * testBlockSize} {
		if _, err := u.UploadOne(t.Context(), w.dataSAS, fmt.Sprintf("case/%d", size), bytes.NewReader(testData(size, 1)), int64(size), key); err != nil {
			t.Fatal(err)
		}
	}
	qp, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour),
		Permissions: (&sas.ContainerPermissions{Read: true, List: true}).String(), ContainerName: containerName(w.data)}.SignWithSharedKey(w.cred)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(w.data.URL() + "?restype=container&comp=list&include=metadata,snapshots&" + qp.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if n := strings.Count(string(body), "<IV>"); n != 4 { // 2 blobs + 2 snapshots
		t.Errorf("%d <IV> elements in the listing, want 4:\n%s", n, body)
	}
	if strings.Contains(string(body), "<Iv>") || strings.Contains(string(body), "<iv>") {
		t.Errorf("metadata key stored in another case:\n%s", body)
	}
}
