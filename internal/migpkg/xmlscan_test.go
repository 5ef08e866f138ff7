package migpkg

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// referenceManifest is the minimal package example of reference §5.4, plus a version and an unrelated
// element.
const referenceManifest = `<?xml version="1.0" encoding="utf-8"?>
<SPObjects xmlns="urn:deployment-manifest-schema">
  <SPObject Id="ROOTF" ObjectType="SPFolder" ParentId="WEB" ParentWebId="WEB" ParentWebUrl="/sites/x" Url="/sites/x/Shared Documents">
    <Folder Id="ROOTF" Url="Shared Documents" Name="Shared Documents" ParentFolderId="WEB" ParentWebId="WEB" ParentWebUrl="/sites/x"
            ContainingDocumentLibrary="LIST" TimeCreated="2024-01-01T00:00:00" TimeLastModified="2024-01-01T00:00:00" SortBehavior="1"/>
  </SPObject>
  <SPObject Id="LIST" ObjectType="SPDocumentLibrary" ParentId="WEB" ParentWebId="WEB" ParentWebUrl="/sites/x" Url="/sites/x/Shared Documents">
    <DocumentLibrary Id="LIST" BaseTemplate="DocumentLibrary" RootFolderId="ROOTF" RootFolderUrl="/sites/x/Shared Documents"
                     ParentWebId="WEB" ParentWebUrl="/sites/x" Title="Documents"><ContentTypes/></DocumentLibrary>
  </SPObject>
  <SPObject Id="F1" ObjectType="SPFile" ParentId="ROOTF" ParentWebId="WEB" ParentWebUrl="/sites/x" Url="/sites/x/Shared Documents/a.txt">
    <File Url="Shared Documents/a.txt" Id="F1" ParentWebId="WEB" ParentWebUrl="/sites/x" Name="a.txt" ListItemIntId="1"
          ListId="LIST" ParentId="ROOTF" TimeCreated="2024-01-01T00:00:00" TimeLastModified="2024-01-01T00:00:00"
          Version="1.0" FileValue="F1.dat" FileSize="5" Author="1" ModifiedBy="1">
      <Properties><Property Name="File" Value="not a version"/></Properties>
      <Versions><File Version="0.1" FileValue="F1.dat.v1" FileSize="3"/><File Version="0.2" FileValue="F1.dat.v2"/></Versions>
    </File>
  </SPObject>
  <SPObject Id="I1" ObjectType="SPListItem" ParentId="LIST" ParentWebId="WEB" ParentWebUrl="/sites/x" Url="/sites/x/Shared Documents/a.txt">
    <ListItem FileUrl="Shared Documents/a.txt" DocType="File" ParentFolderId="ROOTF" Order="100" Id="I1" ParentWebId="WEB"
              ParentListId="LIST" Name="a.txt" DirName="/sites/x/Shared Documents" IntId="1" DocId="F1" Version="1.0"
              Author="1" ModifiedBy="1" TimeCreated="2024-01-01T00:00:00" TimeLastModified="2024-01-01T00:00:00"
              ModerationStatus="Approved"><Fields/></ListItem>
  </SPObject>
</SPObjects>
`

func TestScanManifest(t *testing.T) {
	var got []SPObject
	err := ScanManifest(strings.NewReader(referenceManifest), func(o SPObject) error {
		got = append(got, o)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, o := range got {
		types = append(types, o.ObjectType)
	}
	if want := []string{"SPFolder", "SPDocumentLibrary", "SPFile", "SPListItem"}; !slices.Equal(types, want) {
		t.Fatalf("types %v, want %v", types, want)
	}
	f := got[2]
	if f.ID != "F1" || f.URL != "/sites/x/Shared Documents/a.txt" || f.ParentWebURL != "/sites/x" || f.ParentID != "ROOTF" || f.Line != 11 {
		t.Errorf("SPFile object %+v", f)
	}
	if f.File == nil {
		t.Fatal("no File")
	}
	if f.File.FileValue != "F1.dat" || !f.File.HasFileValue || f.File.FileSize != 5 || f.File.Name != "a.txt" ||
		f.File.URL != "Shared Documents/a.txt" || f.File.ListID != "LIST" || f.File.ListItemIntID != "1" || f.File.Version != "1.0" {
		t.Errorf("File %+v", f.File)
	}
	wantVers := []FileVersion{
		{Version: "0.1", FileValue: "F1.dat.v1", HasFileValue: true, FileSize: 3, FileSizeAttr: "3"},
		{Version: "0.2", FileValue: "F1.dat.v2", HasFileValue: true, FileSize: -1},
	}
	if !slices.Equal(f.File.Versions, wantVers) {
		t.Errorf("versions %+v", f.File.Versions)
	}
	li := got[3].ListItem
	if li == nil || li.DocID != "F1" || li.DocType != "File" || li.IntID != "1" || li.FileURL != "Shared Documents/a.txt" {
		t.Errorf("ListItem %+v", li)
	}
	if got[0].File != nil || got[0].ListItem != nil {
		t.Errorf("folder has File or ListItem: %+v", got[0])
	}
}

// TestScanManifestReaders reads through odd readers (one byte, half reads, data with EOF).
func TestScanManifestReaders(t *testing.T) {
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"OneByteReader": iotest.OneByteReader,
		"HalfReader":    iotest.HalfReader,
		"DataErrReader": iotest.DataErrReader,
	} {
		n := 0
		err := ScanManifest(wrap(strings.NewReader(referenceManifest)), func(SPObject) error { n++; return nil })
		if err != nil || n != 4 {
			t.Errorf("%s: %d objects, %v", name, n, err)
		}
	}
}

func TestScanManifestErrors(t *testing.T) {
	errStop := errors.New("stop")
	if err := ScanManifest(strings.NewReader(referenceManifest), func(SPObject) error { return errStop }); err != errStop {
		t.Errorf("callback error: %v", err)
	}
	errRead := errors.New("read failed")
	r := io.MultiReader(strings.NewReader(referenceManifest[:500]), iotest.ErrReader(errRead))
	err := ScanManifest(r, func(SPObject) error { return nil })
	var ve *ValidationError
	if !errors.Is(err, errRead) || errors.As(err, &ve) {
		t.Errorf("reader error: %v", err)
	}
}

func TestScanManifestMalformed(t *testing.T) {
	deep := "<SPObjects>" + strings.Repeat("<a>", 200) + strings.Repeat("</a>", 200) + "</SPObjects>"
	tests := []struct {
		desc string
		doc  string
		code string
	}{
		{"empty", "", CodeXMLMalformed},
		{"not XML", "hello", CodeXMLMalformed},
		{"only a declaration", `<?xml version="1.0"?>`, CodeXMLMalformed},
		{"unclosed", "<SPObjects><SPObject>", CodeXMLMalformed},
		{"mismatched", "<SPObjects></SPObject>", CodeXMLMalformed},
		{"two roots", "<SPObjects/><SPObjects/>", CodeXMLMalformed},
		{"text before root", "x<SPObjects/>", CodeXMLMalformed},
		{"text after root", "<SPObjects/>x", CodeXMLMalformed},
		{"undefined entity", "<SPObjects>&bogus;</SPObjects>", CodeXMLMalformed},
		{"bad attribute", `<SPObjects a="1" a="2"/>`, CodeXMLMalformed},
		{"too deep", deep, CodeXMLMalformed},
		{"wrong root", `<SystemData xmlns="urn:deployment-systemdata-schema"/>`, CodeXMLWrongRoot},
		{"UTF-16", `<?xml version="1.0" encoding="utf-16"?><SPObjects/>`, CodeXMLUnsupportedEncoding},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := ScanManifest(strings.NewReader(tt.doc), func(SPObject) error { return nil })
			wantProblem(t, err, tt.code, "")
		})
	}
	t.Run("accepts comments, PIs, DOCTYPE and whitespace around the root", func(t *testing.T) {
		doc := "\ufeff<?xml version=\"1.0\"?>\n<!-- c --><!DOCTYPE SPObjects>\n<SPObjects/>\n<!-- end -->\n"
		if err := ScanManifest(strings.NewReader(doc), func(SPObject) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})
}

func TestXMLTokenLimit(t *testing.T) {
	doc := `<SPObjects><SPObject Id="` + strings.Repeat("x", 100_000) + `"/></SPObjects>`
	x := newXMLReader(context.Background(), strings.NewReader(doc), 10_000)
	err := scanManifest(x, func(SPObject) error { return nil })
	wantProblem(t, err, CodeXMLTokenTooLarge, "")
	// Many small tokens are fine however long the document.
	var b strings.Builder
	b.WriteString("<SPObjects>")
	for range 10_000 {
		b.WriteString(`<SPObject Id="a" ObjectType="SPFolder"/>`)
	}
	b.WriteString("</SPObjects>")
	x = newXMLReader(context.Background(), strings.NewReader(b.String()), 10_000)
	n := 0
	if err := scanManifest(x, func(SPObject) error { n++; return nil }); err != nil || n != 10_000 {
		t.Fatalf("%d objects, %v", n, err)
	}
}

func TestScanManifestTooManyVersions(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(`<SPObjects><SPObject Id="F" ObjectType="SPFile"><File FileValue="f"><Versions>`))
		for range maxVersionsPerFile + 1 {
			pw.Write([]byte(`<File FileValue="v"/>`))
		}
		pw.Write([]byte(`</Versions></File></SPObject></SPObjects>`))
		pw.Close()
	}()
	err := ScanManifest(pr, func(SPObject) error { return nil })
	pr.Close()
	wantProblem(t, err, CodeManifestTooManyVersions, "")
}

func TestParseSystemData(t *testing.T) {
	doc := `<SystemData xmlns="urn:deployment-systemdata-schema"><SchemaVersion Version="15.0.0.0"/>
  <ManifestFiles><ManifestFile Name="Manifest.xml"/><ManifestFile Name="Manifest2.xml"/><ManifestFile/></ManifestFiles>
  <SystemObjects><SystemObject Id="WEB" Type="Web" Url="/sites/x"/></SystemObjects><RootWebOnlyLists/></SystemData>`
	names, err := ParseSystemData(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Manifest.xml", "Manifest2.xml", ""}; !slices.Equal(names, want) {
		t.Errorf("names %q, want %q", names, want)
	}
	// Prefixed namespaces match on local names.
	doc = `<s:SystemData xmlns:s="urn:deployment-systemdata-schema"><s:ManifestFiles><s:ManifestFile Name="M.xml"/></s:ManifestFiles></s:SystemData>`
	if names, err := ParseSystemData(strings.NewReader(doc)); err != nil || !slices.Equal(names, []string{"M.xml"}) {
		t.Errorf("prefixed: %q, %v", names, err)
	}
	_, err = ParseSystemData(strings.NewReader(`<SystemData><ManifestFiles>`))
	wantProblem(t, err, CodeXMLMalformed, "")
}

func TestParseExportSettings(t *testing.T) {
	doc := `<ExportSettings xmlns="urn:deployment-exportsettings-schema" SiteUrl="https://contoso.sharepoint.com/sites/x" FileLocation="C:\Temp"
  IncludeSecurity="None" SourceType="FileShare"><ExportObjects><DeploymentObject Id="LIST" Type="List" ParentId="WEB"/></ExportObjects></ExportSettings>`
	es, err := ParseExportSettings(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := ExportSettings{SiteURL: "https://contoso.sharepoint.com/sites/x", SourceType: "FileShare", HasSourceType: true,
		FileLocation: `C:\Temp`, IncludeSecurity: "None"}
	if es != want {
		t.Errorf("got %+v, want %+v", es, want)
	}
	es, err = ParseExportSettings(strings.NewReader(`<ExportSettings SiteUrl="x"/>`))
	if err != nil || es.HasSourceType {
		t.Errorf("no SourceType: %+v, %v", es, err)
	}
	// Well-formedness of the whole document is checked.
	_, err = ParseExportSettings(strings.NewReader(`<ExportSettings SourceType="Box"><ExportObjects></ExportSettings>`))
	wantProblem(t, err, CodeXMLMalformed, "")
	_, err = ParseExportSettings(bytes.NewReader(nil))
	wantProblem(t, err, CodeXMLMalformed, "")
}
