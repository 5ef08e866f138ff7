package migpkg

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// fileValueOf is the FileValue a default Builder gives path.
func fileValueOf(b *Builder, path string) string {
	return nameGUID("file", b.Options().ListID+"|"+path) + ".dat"
}

func TestValidateBuiltPackage(t *testing.T) {
	for _, keepPaths := range []bool{false, true} {
		t.Run(fmt.Sprintf("KeepPaths=%v", keepPaths), func(t *testing.T) {
			opts := BuilderOptions{KeepPaths: keepPaths, ContentMethod: zip.Deflate}
			files := sampleFiles()
			data := buildPackage(t, opts, files...)
			p := openValid(t, data, Options{})
			if len(p.Warnings) != 0 {
				t.Errorf("warnings: %v", p.Warnings)
			}
			items, err := p.Items()
			if err != nil {
				t.Fatal(err)
			}
			b := NewBuilder(opts)
			var wantNames []string
			for _, f := range sampleFiles() {
				if keepPaths {
					wantNames = append(wantNames, f.Path)
				} else {
					wantNames = append(wantNames, fileValueOf(b, f.Path))
				}
			}
			wantNames = append(wantNames, FileExportSettings, FileLookupListMap, FileManifest, FileRequirements,
				FileRootObjectMap, FileSystemData, FileUserGroup, FileViewFormsList)
			var gotNames []string
			for i, it := range items {
				gotNames = append(gotNames, it.Name)
				if it.Synthetic {
					t.Errorf("%s: synthetic", it.Name)
				}
				body, err := readItem(it)
				if err != nil {
					t.Fatalf("%s: %v", it.Name, err)
				}
				if int64(len(body)) != it.Size {
					t.Errorf("%s: read %d bytes, Size %d", it.Name, len(body), it.Size)
				}
				if i < len(files) {
					if it.Container != Data {
						t.Errorf("%s: container %v, want data", it.Name, it.Container)
					}
					want := make([]byte, files[i].Size)
					src := io.Reader(GeneratedContent(files[i].Path, files[i].Size))
					if files[i].Path == "readme.txt" {
						src = strings.NewReader("hello")
					}
					io.ReadFull(src, want)
					if !bytes.Equal(body, want) {
						t.Errorf("%s: content differs", it.Name)
					}
				} else if it.Container != Metadata {
					t.Errorf("%s: container %v, want metadata", it.Name, it.Container)
				}
			}
			if !slices.Equal(gotNames, wantNames) {
				t.Errorf("items:\n got %q\nwant %q", gotNames, wantNames)
			}
			tot := p.Totals()
			want := Totals{ContentFiles: 5, ContentBytes: 5 + 1000 + 0 + 4096 + 77, MetadataFiles: 8, Manifests: 1,
				SPObjects: 2 + 2*4 + 2*5, SPFiles: 5}
			want.MetadataBytes = tot.MetadataBytes
			if tot != want {
				t.Errorf("totals %+v, want %+v", tot, want)
			}
			if tot.MetadataBytes <= 0 {
				t.Errorf("MetadataBytes %d", tot.MetadataBytes)
			}
			// Validate is idempotent.
			if err := p.Validate(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestValidateAddsOptionalFiles(t *testing.T) {
	data := buildPackage(t, BuilderOptions{OmitOptionalFiles: true}, sampleFiles()...)
	p := openValid(t, data, Options{})
	items, _ := p.Items()
	want := map[string]string{
		FileRequirements:  `<Requirements xmlns="urn:deployment-requirements-schema" />`,
		FileRootObjectMap: `<RootObjects xmlns="urn:deployment-rootobjectmap-schema" />`,
		FileLookupListMap: `<LookupLists xmlns="urn:deployment-lookuplistmap-schema" />`,
		FileViewFormsList: `<ViewFormsList xmlns="urn:deployment-viewformlist-schema" />`,
	}
	n := 0
	for _, it := range items {
		if !it.Synthetic {
			continue
		}
		n++
		body, err := readItem(it)
		if err != nil {
			t.Fatal(err)
		}
		if it.Container != Metadata || int64(len(body)) != it.Size {
			t.Errorf("%s: %v, %d bytes, Size %d", it.Name, it.Container, len(body), it.Size)
		}
		if !strings.HasPrefix(string(body), `<?xml version="1.0" encoding="utf-8"?>`) || !strings.Contains(string(body), want[it.Name]) {
			t.Errorf("%s: body %q, want %q", it.Name, body, want[it.Name])
		}
		// The body passes the package's own checks.
		f := packageFiles[slices.IndexFunc(packageFiles, func(f packageFile) bool { return f.name == it.Name })]
		x := newXMLReader(context.Background(), bytes.NewReader(body), DefaultMaxXMLTokenSize)
		if se, err := x.root(f.root); err != nil || se.Name.Space != f.ns {
			t.Errorf("%s: root %v, %v", it.Name, se.Name, err)
		}
		wantWarning(t, p, CodePackageOptionalFileAdded, it.Name)
	}
	if n != 4 {
		t.Errorf("%d synthetic items, want 4", n)
	}
	if p.Totals().MetadataFiles != 8 {
		t.Errorf("MetadataFiles %d", p.Totals().MetadataFiles)
	}
}

func TestValidateFailures(t *testing.T) {
	b := NewBuilder(BuilderOptions{})
	readme := fileValueOf(b, "readme.txt")
	good := buildPackage(t, BuilderOptions{}, sampleFiles()...)
	tests := []struct {
		desc  string
		edit  func(string, []byte) (string, []byte, bool)
		extra []zipEntry
		code  string
		entry string
		msg   []string // fragments of the message
	}{
		{desc: "missing Manifest.xml", edit: drop(FileManifest), code: CodePackageMissingFile, entry: FileManifest},
		{desc: "missing ExportSettings.xml", edit: drop(FileExportSettings), code: CodePackageMissingFile, entry: FileExportSettings},
		{desc: "missing SystemData.xml", edit: drop(FileSystemData), code: CodePackageMissingFile, entry: FileSystemData},
		{desc: "missing UserGroup.xml", edit: drop(FileUserGroup), code: CodePackageMissingFile, entry: FileUserGroup},
		{desc: "manifest name in wrong case", edit: func(n string, b []byte) (string, []byte, bool) {
			if n == FileManifest {
				n = "manifest.xml"
			}
			return n, b, true
		}, code: CodePackageMissingFile, entry: FileManifest, msg: []string{`found "manifest.xml"`}},
		{desc: "missing SourceType", edit: replaceIn(t, FileExportSettings, ` SourceType="FileShare"`, ""),
			code: CodeExportSettingsMissingSourceType, entry: FileExportSettings},
		{desc: "empty SourceType", edit: replaceIn(t, FileExportSettings, `SourceType="FileShare"`, `SourceType=""`),
			code: CodeExportSettingsMissingSourceType, entry: FileExportSettings},
		{desc: "empty SiteUrl", edit: replaceIn(t, FileExportSettings, `SiteUrl="https://contoso.sharepoint.com/sites/migration"`, `SiteUrl=""`),
			code: CodeExportSettingsMissingSiteURL, entry: FileExportSettings},
		{desc: "manifest listed in SystemData but absent",
			edit: replaceIn(t, FileSystemData, `<ManifestFile Name="Manifest.xml" />`, `<ManifestFile Name="Manifest.xml" /><ManifestFile Name="Manifest2.xml" />`),
			code: CodePackageMissingFile, entry: "Manifest2.xml", msg: []string{"SystemData.xml"}},
		{desc: "SystemData manifest name with a path",
			edit: replaceIn(t, FileSystemData, `<ManifestFile Name="Manifest.xml" />`, `<ManifestFile Name="Manifest.xml" /><ManifestFile Name="sub/M.xml" />`),
			code: CodeSystemDataBadManifestName, entry: FileSystemData},
		{desc: "malformed UserGroup.xml", edit: replaceIn(t, FileUserGroup, `</UserGroupMap>`, `</UserGroup>`),
			code: CodeXMLMalformed, entry: FileUserGroup},
		{desc: "malformed manifest", edit: replaceIn(t, FileManifest, `</SPObjects>`, ``),
			code: CodeXMLMalformed, entry: FileManifest},
		{desc: "malformed optional file", edit: replaceIn(t, FileRequirements, `/>`, `>`),
			code: CodeXMLMalformed, entry: FileRequirements},
		{desc: "text after the root", edit: replaceIn(t, FileLookupListMap, `/>`, `/> trailing`),
			code: CodeXMLMalformed, entry: FileLookupListMap},
		{desc: "wrong root element", edit: replaceIn(t, FileViewFormsList, `<ViewFormsList `, `<ViewFormList `),
			code: CodeXMLWrongRoot, entry: FileViewFormsList},
		{desc: "UTF-16 declaration", edit: replaceIn(t, FileSystemData, `encoding="utf-8"`, `encoding="utf-16"`),
			code: CodeXMLUnsupportedEncoding, entry: FileSystemData},
		{desc: "user without SystemId", edit: replaceIn(t, FileUserGroup, ` SystemId="`, ` X="`),
			code: CodeUserGroupMissingSystemID, entry: FileUserGroup, msg: []string{`Login="i:0#.f|membership|admin@contoso.onmicrosoft.com"`}},
		{desc: "FileValue names a missing entry", edit: drop(readme), code: CodeManifestMissingContent, entry: FileManifest,
			msg: []string{readme, `Url="Shared Documents/readme.txt"`, `Id="` + strings.TrimSuffix(readme, ".dat") + `"`}},
		{desc: "FileValue in wrong case", edit: func(n string, b []byte) (string, []byte, bool) {
			if n == readme {
				n = strings.ToUpper(n)
			}
			return n, b, true
		}, code: CodeManifestMissingContent, entry: FileManifest, msg: []string{"case-sensitive"}},
		{desc: "FileSize mismatch", edit: replaceIn(t, FileManifest, `FileSize="5"`, `FileSize="6"`),
			code: CodeManifestSizeMismatch, entry: FileManifest, msg: []string{"FileSize is 6", "is 5 bytes"}},
		{desc: "FileSize not a number", edit: replaceIn(t, FileManifest, `FileSize="5"`, `FileSize="five"`),
			code: CodeManifestBadFileSize, entry: FileManifest},
		{desc: "missing FileValue", edit: replaceIn(t, FileManifest, `FileValue="`+readme+`"`, ``),
			code: CodeManifestMissingFileValue, entry: FileManifest, msg: []string{`Url="Shared Documents/readme.txt"`}},
		{desc: "FileValue names a package XML", edit: replaceIn(t, FileManifest, `FileValue="`+readme+`"`, `FileValue="ExportSettings.xml"`),
			code: CodeManifestFileValueNotContent, entry: FileManifest},
		{desc: "SPFile without File", edit: replaceIn(t, FileManifest, `<File Url="Shared Documents/readme.txt"`, `<NotFile Url="Shared Documents/readme.txt"`),
			code: CodeManifestMissingFileElement, entry: FileManifest},
		{desc: "SPWeb object", edit: replaceIn(t, FileManifest, `ObjectType="SPDocumentLibrary"`, `ObjectType="SPWeb"`),
			code: CodeManifestUnknownObjectType, entry: FileManifest, msg: []string{`"SPWeb"`}},
		{desc: "ArchivedFiles.xml", extra: []zipEntry{file(FileArchivedFiles, `<ArchivedFiles/>`)},
			code: CodePackageUnsupportedFile, entry: FileArchivedFiles},
		{desc: "malformed unknown root XML", extra: []zipEntry{file("Notes.xml", `<a><b></a>`)},
			code: CodeXMLMalformed, entry: "Notes.xml"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			data := rewriteZip(t, good, tt.edit, tt.extra...)
			_, err := openAndValidate(data, Options{})
			pr := wantProblem(t, err, tt.code, tt.entry)
			for _, m := range tt.msg {
				if !strings.Contains(pr.Message, m) {
					t.Errorf("message %q lacks %q", pr.Message, m)
				}
			}
			t.Logf("%s", pr)
		})
	}
}

// TestValidateCollectsAllProblems checks Validate reports every problem, not the first.
func TestValidateCollectsAllProblems(t *testing.T) {
	b := NewBuilder(BuilderOptions{})
	good := buildPackage(t, BuilderOptions{}, sampleFiles()...)
	data := rewriteZip(t, good, func(n string, body []byte) (string, []byte, bool) {
		switch n {
		case fileValueOf(b, "readme.txt"), fileValueOf(b, "Reports/2024/q1.xlsx"), FileUserGroup:
			return n, body, false
		case FileExportSettings:
			return n, bytes.Replace(body, []byte(` SourceType="FileShare"`), nil, 1), true
		}
		return n, body, true
	})
	_, err := openAndValidate(data, Options{})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatal(err)
	}
	if len(ve.Problems) != 4 {
		t.Errorf("%d problems, want 4: %v", len(ve.Problems), err)
	}
	wantProblem(t, err, CodePackageMissingFile, FileUserGroup)
	wantProblem(t, err, CodeExportSettingsMissingSourceType, FileExportSettings)
	if n := strings.Count(err.Error(), CodeManifestMissingContent); n != 2 {
		t.Errorf("%d %s in %v", n, CodeManifestMissingContent, err)
	}
}

func TestValidateWarnings(t *testing.T) {
	t.Run("unreferenced content and unknown XML", func(t *testing.T) {
		good := buildPackage(t, BuilderOptions{}, sampleFiles()...)
		data := rewriteZip(t, good, nil, file("orphans/left.bin", "x"), file("Extra.xml", "<Extra/>"))
		p := openValid(t, data, Options{})
		wantWarning(t, p, CodePackageUnreferencedContent, "orphans/left.bin")
		wantWarning(t, p, CodePackageUnknownXML, "Extra.xml")
		items, _ := p.Items()
		kinds := map[string]Kind{}
		for _, it := range items {
			kinds[it.Name] = it.Container
		}
		if kinds["orphans/left.bin"] != Data || kinds["Extra.xml"] != Metadata {
			t.Errorf("containers %v", kinds)
		}
	})
	t.Run("XML content referenced by FileValue at the root", func(t *testing.T) {
		data := buildPackage(t, BuilderOptions{KeepPaths: true}, BuildFile{Path: "data.xml", Size: 10, Content: strings.NewReader("<a>x</a>\n\n")})
		p := openValid(t, data, Options{})
		items, _ := p.Items()
		if items[0].Name != "data.xml" || items[0].Container != Data {
			t.Errorf("first item %+v", items[0])
		}
	})
	t.Run("more than 250 items", func(t *testing.T) {
		var files []BuildFile
		for i := range GuidanceMaxItems + 1 {
			files = append(files, BuildFile{Path: fmt.Sprintf("f/%04d.txt", i), Size: 1})
		}
		p := openValid(t, buildPackage(t, BuilderOptions{}, files...), Options{})
		wantWarning(t, p, CodePackageOverItemGuidance, "")
		if p.Totals().ContentFiles != GuidanceMaxItems+1 {
			t.Errorf("ContentFiles %d", p.Totals().ContentFiles)
		}
	})
	t.Run("more than 250 MB in several files", func(t *testing.T) {
		if testing.Short() {
			t.Skip("writes 250 MB")
		}
		f, size := buildPackageFile(t, BuilderOptions{},
			BuildFile{Path: "a.bin", Size: GuidanceMaxBytes / 2}, BuildFile{Path: "b.bin", Size: GuidanceMaxBytes/2 + 1})
		p, err := Open(f, size, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Validate(context.Background()); err != nil {
			t.Fatal(err)
		}
		wantWarning(t, p, CodePackageOverSizeGuidance, "")
	})
	t.Run("one big file is within guidance", func(t *testing.T) {
		// A zero-byte Store entry cannot be big cheaply; check the rule on totals directly instead.
		p := openValid(t, buildPackage(t, BuilderOptions{}, BuildFile{Path: "one.bin", Size: 10}), Options{})
		for _, w := range p.Warnings {
			if w.Code == CodePackageOverSizeGuidance {
				t.Errorf("unexpected %v", w)
			}
		}
	})
	t.Run("SPFile without SPListItem", func(t *testing.T) {
		b := NewBuilder(BuilderOptions{})
		good := buildPackage(t, BuilderOptions{}, sampleFiles()...)
		id := strings.TrimSuffix(fileValueOf(b, "readme.txt"), ".dat")
		data := rewriteZip(t, good, replaceIn(t, FileManifest, `DocId="`+id+`"`, `DocId="00000000-0000-0000-0000-000000000000"`))
		p := openValid(t, data, Options{})
		w := wantWarning(t, p, CodeManifestFileWithoutListItem, FileManifest)
		if !strings.Contains(w.Message, id) {
			t.Errorf("message %q", w.Message)
		}
	})
	t.Run("namespace, unknown SourceType, unlisted manifest", func(t *testing.T) {
		good := buildPackage(t, BuilderOptions{}, sampleFiles()...)
		data := rewriteZip(t, good, func(n string, body []byte) (string, []byte, bool) {
			switch n {
			case FileRequirements:
				body = []byte(`<Requirements xmlns="urn:wrong"/>`)
			case FileExportSettings:
				body = bytes.Replace(body, []byte(`SourceType="FileShare"`), []byte(`SourceType="Floppy"`), 1)
			case FileSystemData:
				body = bytes.Replace(body, []byte(`<ManifestFile Name="Manifest.xml" />`), nil, 1)
			}
			return n, body, true
		})
		p := openValid(t, data, Options{})
		wantWarning(t, p, CodeXMLNamespace, FileRequirements)
		wantWarning(t, p, CodeExportSettingsUnknownSourceType, FileExportSettings)
		wantWarning(t, p, CodeSystemDataManifestNotListed, FileManifest)
		wantWarning(t, p, CodeSystemDataNoManifests, FileSystemData)
	})
}

func TestValidateSecondManifest(t *testing.T) {
	good := buildPackage(t, BuilderOptions{KeepPaths: true}, sampleFiles()...)
	second := `<?xml version="1.0" encoding="utf-8"?>
<SPObjects xmlns="urn:deployment-manifest-schema">
  <SPObject Id="F2" ObjectType="SPFile" ParentId="R" ParentWebId="W" ParentWebUrl="/sites/migration" Url="/sites/migration/Shared Documents/more.txt">
    <File Url="Shared Documents/more.txt" Id="F2" Name="more.txt" FileValue="more/more.txt" FileSize="4">
      <Versions><File Version="0.1" FileValue="more/more.txt.v1" FileSize="3"/></Versions>
    </File>
  </SPObject>
  <SPObject Id="I2" ObjectType="SPListItem" ParentId="L"><ListItem DocId="{F2}" DocType="File"><Fields/></ListItem></SPObject>
</SPObjects>`
	data := rewriteZip(t, good,
		replaceIn(t, FileSystemData, `<ManifestFile Name="Manifest.xml" />`, `<ManifestFile Name="Manifest.xml" /><ManifestFile Name="Manifest2.xml" />`),
		file("Manifest2.xml", second), file("more/more.txt", "more"), file("more/more.txt.v1", "old"))
	p := openValid(t, data, Options{})
	if len(p.Warnings) != 0 {
		t.Errorf("warnings %v", p.Warnings)
	}
	tot := p.Totals()
	if tot.Manifests != 2 || tot.SPFiles != 6 || tot.ContentFiles != 7 {
		t.Errorf("totals %+v", tot)
	}

	// The version's FileValue is checked too.
	bad := rewriteZip(t, data, drop("more/more.txt.v1"))
	_, err := openAndValidate(bad, Options{})
	pr := wantProblem(t, err, CodeManifestMissingContent, "Manifest2.xml")
	if !strings.Contains(pr.Message, `version "0.1"`) {
		t.Errorf("message %q", pr.Message)
	}
}

// TestValidateBOM checks a UTF-8 byte order mark (as .NET writes) is accepted.
func TestValidateBOM(t *testing.T) {
	good := buildPackage(t, BuilderOptions{}, sampleFiles()...)
	data := rewriteZip(t, good, func(n string, body []byte) (string, []byte, bool) {
		if hasXMLSuffix(n) {
			body = append([]byte("\xEF\xBB\xBF"), body...)
		}
		return n, body, true
	})
	openValid(t, data, Options{})
}

func TestItemsBeforeValidate(t *testing.T) {
	data := buildPackage(t, BuilderOptions{}, sampleFiles()...)
	p, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Items(); !errors.Is(err, ErrNotValidated) {
		t.Fatalf("Items before Validate: %v", err)
	}
	// A failed validation leaves Items unavailable.
	bad := rewriteZip(t, data, drop(FileUserGroup))
	p, err = Open(bytes.NewReader(bad), int64(len(bad)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(context.Background()); err == nil {
		t.Fatal("no error")
	}
	if _, err := p.Items(); !errors.Is(err, ErrNotValidated) {
		t.Fatalf("Items after failed Validate: %v", err)
	}
}

// TestOpenReadsOnlyDirectory proves Open reads the central directory region only, and Validate reads
// package XML but no content.
func TestOpenReadsOnlyDirectory(t *testing.T) {
	var files []BuildFile
	for i := range 5 {
		files = append(files, BuildFile{Path: fmt.Sprintf("big/%d.bin", i), Size: 10 << 20})
	}
	f, size := buildPackageFile(t, BuilderOptions{}, files...)
	cr := newCounting(f)

	// Find where the central directory starts, independently of archive/zip.
	eocd := make([]byte, 22)
	if _, err := f.ReadAt(eocd, size-22); err != nil || string(eocd[:4]) != "PK\x05\x06" {
		t.Fatalf("no plain end of central directory record: %v", err)
	}
	cdOffset := int64(eocd[16]) | int64(eocd[17])<<8 | int64(eocd[18])<<16 | int64(eocd[19])<<24
	cdLen := size - cdOffset

	p, err := Open(cr, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("package %d bytes, directory %d bytes at %d; Open read %d bytes in %d calls from offset %d",
		size, cdLen, cdOffset, cr.bytes, cr.calls, cr.minOf)
	if cr.minOf < min(cdOffset, size-65*1024) {
		t.Errorf("Open read at offset %d, before the directory region (%d)", cr.minOf, cdOffset)
	}
	if max := cdLen + 66*1024 + 8*1024; cr.bytes > max {
		t.Errorf("Open read %d bytes, more than the directory region (%d)", cr.bytes, max)
	}

	cr.reset()
	if err := p.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("Validate read %d bytes in %d calls", cr.bytes, cr.calls)
	if cr.bytes > 1<<20 {
		t.Errorf("Validate read %d bytes: it read content", cr.bytes)
	}
}

// TestReaderAtFailure checks I/O errors are returned wrapped, never as *ValidationError.
func TestReaderAtFailure(t *testing.T) {
	errBoom := errors.New("blob read failed: 503")
	data := buildPackage(t, BuilderOptions{}, sampleFiles()...)
	zr, _ := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	firstXML, _ := zr.File[len(sampleFiles())].DataOffset() // XML follows content

	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error")
		}
		var ve *ValidationError
		if errors.As(err, &ve) {
			t.Fatalf("I/O error reported as invalid package: %v", err)
		}
		if !errors.Is(err, errBoom) {
			t.Fatalf("error %v does not wrap the ReaderAt's error", err)
		}
	}
	t.Run("Open", func(t *testing.T) {
		_, err := Open(&failingReaderAt{r: bytes.NewReader(data), failFrom: 0, err: errBoom}, int64(len(data)), Options{})
		check(t, err)
	})
	t.Run("Validate", func(t *testing.T) {
		fr := &failingReaderAt{r: bytes.NewReader(data), failFrom: int64(len(data)), err: errBoom}
		p, err := Open(fr, int64(len(data)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		fr.failFrom = firstXML
		err = p.Validate(context.Background())
		t.Logf("Validate: %v", err)
		check(t, err)
		fr.failFrom = int64(len(data)) // a retry succeeds
		if err := p.Validate(context.Background()); err != nil {
			t.Fatalf("retry: %v", err)
		}
		items, _ := p.Items()
		fr.failFrom = 0
		_, err = readItem(items[0])
		check(t, err)
	})
	t.Run("mid-entry", func(t *testing.T) {
		fr := &failingReaderAt{r: bytes.NewReader(data), failFrom: int64(len(data)), err: errBoom}
		p := openValidAt(t, fr, int64(len(data)))
		items, _ := p.Items()
		off, _ := zr.File[1].DataOffset() // the 1000-byte q1.xlsx
		fr.failFrom = off + 10
		rc, err := items[1].Open()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, iotest.OneByteReader(rc))
		check(t, err)
	})
}

func openValidAt(t *testing.T, r io.ReaderAt, size int64) *Package {
	t.Helper()
	p, err := Open(r, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateContextCanceled(t *testing.T) {
	data := buildPackage(t, BuilderOptions{}, sampleFiles()...)
	p, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = p.Validate(ctx)
	var ve *ValidationError
	if !errors.Is(err, context.Canceled) || errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
}

// TestItemReaders runs the items' readers through iotest.TestReader.
func TestItemReaders(t *testing.T) {
	p := openValid(t, buildPackage(t, BuilderOptions{ContentMethod: zip.Deflate}, sampleFiles()...), Options{})
	items, _ := p.Items()
	for _, it := range items {
		want, err := readItem(it)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := it.Open()
		if err != nil {
			t.Fatal(err)
		}
		if err := iotest.TestReader(rc, want); err != nil {
			t.Errorf("%s: %v", it.Name, err)
		}
		rc.Close()
	}
}

// TestItemsConcurrent reads all items at once, as a parallel uploader does (run with -race).
func TestItemsConcurrent(t *testing.T) {
	p := openValid(t, buildPackage(t, BuilderOptions{ContentMethod: zip.Deflate}, sampleFiles()...), Options{})
	items, _ := p.Items()
	errs := make(chan error, len(items)*4)
	for range 4 {
		for _, it := range items {
			go func() {
				body, err := readItem(it)
				if err == nil && int64(len(body)) != it.Size {
					err = fmt.Errorf("%s: %d bytes, want %d", it.Name, len(body), it.Size)
				}
				errs <- err
			}()
		}
	}
	for range len(items) * 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestTargetWebMustMatchEveryObject(t *testing.T) {
	const built, other = "6b2f1a34-0c55-4e1b-9a0f-2d6c7e8f9a01", "0d9a1c2b-7e6f-4a3b-8c5d-1e2f3a4b5c6d"
	data := buildPackage(t, BuilderOptions{WebID: built}, sampleFiles()...)
	if _, err := openAndValidate(data, Options{WebID: "{" + strings.ToUpper(built) + "}"}); err != nil {
		t.Fatalf("the package's own web id (braced, upper case) refused: %v", err)
	}
	if _, err := openAndValidate(data, Options{}); err != nil {
		t.Fatalf("no target web: %v", err)
	}
	_, err := openAndValidate(data, Options{WebID: other})
	p := wantProblem(t, err, CodeManifestWrongWeb, FileManifest)
	if !strings.Contains(p.Message, built) || !strings.Contains(p.Message, other) {
		t.Fatalf("message %q does not name both web ids", p.Message)
	}
}

func TestObjectURLsMustBeImportable(t *testing.T) {
	data := buildPackage(t, BuilderOptions{}, sampleFiles()...)
	for _, tc := range []struct{ desc, old, new, why string }{
		{"dot-dot segment", `Url="/sites/migration/Shared Documents/Dokumente"`, `Url="/sites/migration/Shared Documents/../Dokumente"`, `".." segment`},
		{"backslash", `Url="/sites/migration/Shared Documents/Dokumente"`, `Url="/sites/migration/Shared Documents\Dokumente"`, "backslash"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bad := rewriteZip(t, data, replaceIn(t, FileManifest, tc.old, tc.new))
			_, err := openAndValidate(bad, Options{})
			p := wantProblem(t, err, CodeManifestBadURL, FileManifest)
			if !strings.Contains(p.Message, tc.why) {
				t.Fatalf("message %q does not say %q", p.Message, tc.why)
			}
		})
	}
}
