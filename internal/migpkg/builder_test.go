package migpkg

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestBuilderRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"", "/a", "a/", "a//b", "./a", "a/../b", "..", `a\b`, "a:b", "a|b", " a", "a ", `q"`, "a*", "a?"} {
		b := NewBuilder(BuilderOptions{})
		if err := b.AddFile(BuildFile{Path: p, Size: 1}); err == nil {
			t.Errorf("AddFile(%q) accepted", p)
		}
	}
	b := NewBuilder(BuilderOptions{})
	if err := b.AddFile(BuildFile{Path: "Docs/A.txt"}); err != nil {
		t.Fatal(err)
	}
	if err := b.AddFile(BuildFile{Path: "docs/a.TXT"}); err == nil {
		t.Error("case-insensitive duplicate accepted")
	}
	if err := b.AddFile(BuildFile{Path: "x", Size: -1}); err == nil {
		t.Error("negative size accepted")
	}
	b = NewBuilder(BuilderOptions{KeepPaths: true})
	if err := b.AddFile(BuildFile{Path: "manifest.XML"}); err == nil {
		t.Error("KeepPaths: package file name accepted")
	}
}

func TestBuilderContentSize(t *testing.T) {
	for _, tt := range []struct {
		content string
		size    int64
	}{{"abc", 4}, {"abcde", 4}} {
		b := NewBuilder(BuilderOptions{})
		if err := b.AddFile(BuildFile{Path: "f.txt", Size: tt.size, Content: strings.NewReader(tt.content)}); err != nil {
			t.Fatal(err)
		}
		if err := b.Write(io.Discard); err == nil || !strings.Contains(err.Error(), "declared 4") {
			t.Errorf("content %q, Size %d: err = %v", tt.content, tt.size, err)
		}
	}
	b := NewBuilder(BuilderOptions{SiteURL: "not a url"})
	if err := b.Write(io.Discard); err == nil {
		t.Error("relative SiteURL accepted")
	}
}

func TestBuilderManifestShape(t *testing.T) {
	data := buildPackage(t, BuilderOptions{SiteURL: "https://contoso.sharepoint.com/"}, sampleFiles()...)
	p := openValid(t, data, Options{})
	if len(p.Warnings) != 0 {
		t.Fatalf("warnings %v", p.Warnings)
	}
	items, _ := p.Items()
	var manifest Item
	for _, it := range items {
		if it.Name == FileManifest {
			manifest = it
		}
	}
	rc, err := manifest.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	counts := map[string]int{}
	err = ScanManifest(rc, func(o SPObject) error {
		counts[o.ObjectType]++
		if o.ParentWebURL != "/" || !strings.HasPrefix(o.URL, "/Shared Documents") {
			t.Errorf("root site URLs: %+v", o)
		}
		if o.ListItem != nil && o.ListItem.DocType == "File" && o.ListItem.DocID == "" {
			t.Errorf("list item without DocId: %+v", o.ListItem)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Root folder + 4 folders (Dokumente, Reports, Reports/2024, 日本語), library, 5 files, 9 list items.
	want := map[string]int{"SPFolder": 5, "SPDocumentLibrary": 1, "SPFile": 5, "SPListItem": 9}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s: %d, want %d (%v)", k, counts[k], v, counts)
		}
	}
	if counts["SPWeb"] != 0 {
		t.Error("SPWeb emitted")
	}
}

func TestGeneratedContent(t *testing.T) {
	a, _ := io.ReadAll(GeneratedContent("x", 1001))
	b, _ := io.ReadAll(io.MultiReader(io.LimitReader(GeneratedContent("x", 1001), 3), strings.NewReader("")))
	c, _ := io.ReadAll(GeneratedContent("y", 1001))
	if len(a) != 1001 || !bytes.Equal(a[:3], b) || bytes.Equal(a, c) {
		t.Fatalf("generated content: %d bytes, prefix %v/%v", len(a), a[:3], b)
	}
	// Odd read sizes give the same stream.
	var odd bytes.Buffer
	r := GeneratedContent("x", 1001)
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		odd.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !bytes.Equal(odd.Bytes(), a) {
		t.Error("stream depends on read size")
	}
}

// TestBuilderStreams checks a 1 GiB package is written without holding its content in memory.
func TestBuilderStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 1 GiB")
	}
	b := NewBuilder(BuilderOptions{})
	if err := b.AddFile(BuildFile{Path: "huge.bin", Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var cw countWriter
	if err := b.Write(&cw); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if cw.n < 1<<30 {
		t.Fatalf("wrote %d bytes", cw.n)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("allocated %d bytes to write a 1 GiB package", alloc)
	}
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(b []byte) (int, error) { w.n += int64(len(b)); return len(b), nil }
