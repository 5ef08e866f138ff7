package migpkg

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
)

// fuzzOptions keeps each fuzz iteration cheap whatever sizes the input declares.
var fuzzOptions = Options{MaxFileSize: 1 << 20, MaxTotalSize: 4 << 20, MaxEntries: 1000, MaxProblems: 50}

func FuzzOpen(f *testing.F) {
	f.Add(buildPackage(f, BuilderOptions{}, BuildFile{Path: "a/b.txt", Size: 5, Content: strings.NewReader("hello")}))
	f.Add(buildPackage(f, BuilderOptions{KeepPaths: true, OmitOptionalFiles: true, ContentMethod: zip.Deflate},
		BuildFile{Path: "x.txt", Size: 100}, BuildFile{Path: "日本/y.txt", Size: 10}))
	link := zipEntry{hdr: zip.FileHeader{Name: "link", Method: zip.Store}, body: []byte("target")}
	link.hdr.SetMode(fs.ModeSymlink | 0o777)
	f.Add(makeZip(f, file("../x", "x"), file("/abs", "y"), link, file("A", "1"), file("a", "2")))
	f.Add(makeZip(f, rawDeflate(f, "liar.bin", bytes.Repeat([]byte("ab"), 5000), 10, 0)))
	f.Add(makeZip(f, file(FileManifest, `<SPObjects><SPObject ObjectType="SPFile"><File FileValue="nope" FileSize="1"/></SPObject></SPObjects>`)))
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Open(bytes.NewReader(data), int64(len(data)), fuzzOptions)
		if err != nil {
			mustBeValidation(t, "Open", err)
			return
		}
		if err := p.Validate(context.Background()); err != nil {
			mustBeValidation(t, "Validate", err)
			return
		}
		items, err := p.Items()
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			rc, err := it.Open()
			if err != nil {
				mustBeValidation(t, "Item.Open", err)
				continue
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				mustBeValidation(t, "Read", err)
				if n > it.Size {
					t.Fatalf("%s: read %d bytes, more than Size %d", it.Name, n, it.Size)
				}
				continue
			}
			if n != it.Size {
				t.Fatalf("%s: read %d bytes, Size %d", it.Name, n, it.Size)
			}
		}
	})
}

func FuzzScanManifest(f *testing.F) {
	f.Add([]byte(referenceManifest))
	f.Add([]byte(`<SPObjects><SPObject ObjectType="SPFile"><File FileValue="a" FileSize="-1"><Versions><File/></Versions></File></SPObject></SPObjects>`))
	f.Add([]byte(`<SystemData><ManifestFiles><ManifestFile Name="Manifest.xml"/></ManifestFiles></SystemData>`))
	f.Add([]byte(`<ExportSettings SiteUrl="https://x" SourceType="FileShare"/>`))
	f.Add([]byte("\ufeff<?xml version=\"1.0\" encoding=\"utf-16\"?><SPObjects/>"))
	f.Add([]byte(`<SPObjects a="1" a="2"><!DOCTYPE x></SPObjects>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := ScanManifest(bytes.NewReader(data), func(o SPObject) error {
			if o.File != nil && o.File.FileSize < -1 {
				t.Fatalf("FileSize %d", o.File.FileSize)
			}
			return nil
		})
		mustBeValidation(t, "ScanManifest", err)
		_, err = ParseSystemData(bytes.NewReader(data))
		mustBeValidation(t, "ParseSystemData", err)
		_, err = ParseExportSettings(bytes.NewReader(data))
		mustBeValidation(t, "ParseExportSettings", err)
	})
}

// mustBeValidation fails unless err is nil or a *ValidationError whose problems carry codes and messages:
// with an in-memory reader there is no I/O error to report.
func mustBeValidation(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%s: %v (%T) is not a *ValidationError", what, err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatalf("%s: ValidationError without problems", what)
	}
	for _, p := range ve.Problems {
		if p.Code == "" || p.Message == "" {
			t.Fatalf("%s: problem without code or message: %+v", what, p)
		}
	}
}
