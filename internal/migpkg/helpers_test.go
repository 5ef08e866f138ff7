package migpkg

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// buildPackage builds a package in memory.
func buildPackage(t testing.TB, opts BuilderOptions, files ...BuildFile) []byte {
	t.Helper()
	b := NewBuilder(opts)
	for _, f := range files {
		if err := b.AddFile(f); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := b.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// buildPackageFile builds a package into a temporary file, for packages too big to keep in memory.
func buildPackageFile(t testing.TB, opts BuilderOptions, files ...BuildFile) (*os.File, int64) {
	t.Helper()
	b := NewBuilder(opts)
	for _, f := range files {
		if err := b.AddFile(f); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "package.zip"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := b.Write(f); err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return f, st.Size()
}

// sampleFiles is a small package with nested folders and non-ASCII names.
func sampleFiles() []BuildFile {
	return []BuildFile{
		{Path: "readme.txt", Size: 5, Content: strings.NewReader("hello")},
		{Path: "Reports/2024/q1.xlsx", Size: 1000},
		{Path: "Reports/2024/q2.xlsx", Size: 0},
		{Path: "Dokumente/Übersicht äöü.docx", Size: 4096},
		{Path: "日本語/ファイル 🎉.txt", Size: 77},
	}
}

// openValid opens and validates package bytes, failing the test on any error.
func openValid(t testing.TB, data []byte, opts Options) *Package {
	t.Helper()
	p, err := Open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := p.Validate(context.Background()); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return p
}

// openAndValidate returns the first error of Open or Validate.
func openAndValidate(data []byte, opts Options) (*Package, error) {
	p, err := Open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return nil, err
	}
	return p, p.Validate(context.Background())
}

// zipEntry is an entry of a hand-made zip.
type zipEntry struct {
	hdr  zip.FileHeader
	body []byte
	raw  bool // write body as is with CreateRaw (hdr sizes and CRC as given)
}

// makeZip writes entries with archive/zip, raw ones through CreateRaw so headers can lie.
func makeZip(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		var w io.Writer
		var err error
		if e.raw {
			w, err = zw.CreateRaw(&h)
		} else {
			w, err = zw.CreateHeader(&h)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rewriteZip copies a zip, letting edit change or drop (return false) each entry's name and body, then
// appends extra entries.
func rewriteZip(t testing.TB, data []byte, edit func(name string, body []byte) (string, []byte, bool), extra ...zipEntry) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		name, body, keep := f.Name, body, true
		if edit != nil {
			name, body, keep = edit(name, body)
		}
		if !keep {
			continue
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: f.Method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range extra {
		h := e.hdr
		w, err := zw.CreateHeader(&h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// replaceIn returns an edit func replacing old by new in the named entry (which must contain old).
func replaceIn(t testing.TB, entry, old, new string) func(string, []byte) (string, []byte, bool) {
	return func(name string, body []byte) (string, []byte, bool) {
		if name != entry {
			return name, body, true
		}
		if !bytes.Contains(body, []byte(old)) {
			t.Fatalf("%s does not contain %q:\n%s", entry, old, body)
		}
		return name, bytes.Replace(body, []byte(old), []byte(new), 1), true
	}
}

// drop returns an edit func dropping the named entry.
func drop(entry string) func(string, []byte) (string, []byte, bool) {
	return func(name string, body []byte) (string, []byte, bool) { return name, body, name != entry }
}

// wantProblem asserts err is a *ValidationError holding code for entry (any entry when entry is "*").
func wantProblem(t testing.TB, err error, code, entry string) Problem {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError, want %s", err, err, code)
	}
	for _, p := range ve.Problems {
		if p.Code == code && (entry == "*" || p.Entry == entry) {
			if p.Message == "" {
				t.Errorf("problem %s has an empty message", code)
			}
			return p
		}
	}
	t.Fatalf("no problem %s for entry %q in:\n%v", code, entry, err)
	return Problem{}
}

// wantWarning asserts p has a warning with code for entry (any when "*").
func wantWarning(t testing.TB, p *Package, code, entry string) Problem {
	t.Helper()
	for _, w := range p.Warnings {
		if w.Code == code && (entry == "*" || w.Entry == entry) {
			return w
		}
	}
	t.Fatalf("no warning %s for entry %q in %v", code, entry, p.Warnings)
	return Problem{}
}

// countingReaderAt records every read.
type countingReaderAt struct {
	r     io.ReaderAt
	mu    sync.Mutex
	bytes int64
	minOf int64
	calls int
}

func newCounting(r io.ReaderAt) *countingReaderAt { return &countingReaderAt{r: r, minOf: -1} }

func (c *countingReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(b, off)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes += int64(n)
	c.calls++
	if c.minOf < 0 || off < c.minOf {
		c.minOf = off
	}
	return n, err
}

func (c *countingReaderAt) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes, c.calls, c.minOf = 0, 0, -1
}

// failingReaderAt fails every read at or after failFrom.
type failingReaderAt struct {
	r        io.ReaderAt
	failFrom int64
	err      error
}

func (f *failingReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > f.failFrom {
		return 0, f.err
	}
	return f.r.ReadAt(b, off)
}

// readItem reads an item fully.
func readItem(it Item) ([]byte, error) {
	rc, err := it.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
