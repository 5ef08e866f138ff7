package migpkg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
)

// Package file names (reference §5.1). All sit at the zip root and go to the root of the metadata
// container.
const (
	// FileManifest is the (first) manifest: required.
	FileManifest = "Manifest.xml"
	// FileExportSettings is required, with SiteUrl and SourceType.
	FileExportSettings = "ExportSettings.xml"
	// FileSystemData is required; it lists the manifests.
	FileSystemData = "SystemData.xml"
	// FileUserGroup is required (named UserGroup.xml, not UserGroupMap.xml, as every working client does).
	FileUserGroup = "UserGroup.xml"
	// FileRequirements is documented optional; added empty when absent.
	FileRequirements = "Requirements.xml"
	// FileRootObjectMap is documented optional; added empty when absent.
	FileRootObjectMap = "RootObjectMap.xml"
	// FileLookupListMap is optional; added empty when absent.
	FileLookupListMap = "LookupListMap.xml"
	// FileViewFormsList is optional; added empty when absent.
	FileViewFormsList = "ViewFormsList.xml"
	// FileArchivedFiles is the small-file batching index; this service does not stage archived files.
	FileArchivedFiles = "ArchivedFiles.xml"
)

// Namespaces of the package files' root elements (reference §5.1). Parsers match element names on their
// local name only; Validate warns when a root element is in another namespace.
const (
	// NamespaceManifest is the namespace of <SPObjects> (manifests).
	NamespaceManifest = "urn:deployment-manifest-schema"
	// NamespaceExportSettings is the namespace of <ExportSettings>.
	NamespaceExportSettings = "urn:deployment-exportsettings-schema"
	// NamespaceSystemData is the namespace of <SystemData>.
	NamespaceSystemData = "urn:deployment-systemdata-schema"
	// NamespaceUserGroupMap is the namespace of <UserGroupMap> (UserGroup.xml).
	NamespaceUserGroupMap = "urn:deployment-usergroupmap-schema"
	// NamespaceRequirements is the namespace of <Requirements>.
	NamespaceRequirements = "urn:deployment-requirements-schema"
	// NamespaceRootObjectMap is the namespace of <RootObjects> (RootObjectMap.xml).
	NamespaceRootObjectMap = "urn:deployment-rootobjectmap-schema"
	// NamespaceLookupListMap is the namespace of <LookupLists> (LookupListMap.xml).
	NamespaceLookupListMap = "urn:deployment-lookuplistmap-schema"
	// NamespaceViewFormList is the namespace of <ViewFormsList>; sic "viewformlist", singular.
	NamespaceViewFormList = "urn:deployment-viewformlist-schema"
)

// packageFile describes one standard package XML.
type packageFile struct {
	name     string
	root     string // root element local name
	ns       string
	required bool
}

// body is the empty document added for an absent optional file.
func (f packageFile) body() string {
	return `<?xml version="1.0" encoding="utf-8"?>` + "\n" + `<` + f.root + ` xmlns="` + f.ns + `" />` + "\n"
}

// packageFiles lists the standard package XMLs (reference §5.1). Manifests beyond Manifest.xml are named
// by SystemData.xml and use the manifest's root.
var packageFiles = []packageFile{
	{FileManifest, "SPObjects", NamespaceManifest, true},
	{FileExportSettings, "ExportSettings", NamespaceExportSettings, true},
	{FileSystemData, "SystemData", NamespaceSystemData, true},
	{FileUserGroup, "UserGroupMap", NamespaceUserGroupMap, true},
	{FileRequirements, "Requirements", NamespaceRequirements, false},
	{FileRootObjectMap, "RootObjects", NamespaceRootObjectMap, false},
	{FileLookupListMap, "LookupLists", NamespaceLookupListMap, false},
	{FileViewFormsList, "ViewFormsList", NamespaceViewFormList, false},
}

var manifestFile = packageFiles[0]

// xmlMaxDepth bounds element nesting. Package XML is about six levels deep; the bound keeps the
// decoder's element stack small on hostile input.
const xmlMaxDepth = 128

// maxVersionsPerFile is SharePoint's maximum number of major versions of a file.
const maxVersionsPerFile = 50_000

var errTokenTooLarge = errors.New("migpkg: xml token too large")

// tokenGuard fails a read once more than max bytes were pulled since the last token ended.
type tokenGuard struct {
	r      io.Reader
	pulled int64
	mark   int64
	max    int64
}

func (g *tokenGuard) Read(b []byte) (int, error) {
	if g.pulled-g.mark > g.max {
		return 0, errTokenTooLarge
	}
	n, err := g.r.Read(b)
	g.pulled += int64(n)
	return n, err
}

// xmlReader tokenizes one XML document, enforcing well-formedness beyond what encoding/xml checks (one
// root element, nothing but markup around it, bounded depth and token size). Format errors are returned
// as a *ValidationError without Entry; errors of the underlying reader are returned unchanged.
type xmlReader struct {
	ctx      context.Context
	dec      *xml.Decoder
	guard    *tokenGuard
	maxToken int
	depth    int
	rootElem xml.StartElement
	rootSeen bool
	rootDone bool
	tokens   int
	charset  string // an unsupported declared encoding
}

func newXMLReader(ctx context.Context, r io.Reader, maxToken int) *xmlReader {
	g := &tokenGuard{r: r, max: int64(maxToken)}
	br := bufio.NewReader(g)
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte{0xEF, 0xBB, 0xBF}) {
		_, _ = br.Discard(3) // UTF-8 byte order mark, as .NET writes it
	}
	x := &xmlReader{ctx: ctx, guard: g, maxToken: maxToken}
	x.dec = xml.NewDecoder(br)
	x.dec.CharsetReader = func(charset string, _ io.Reader) (io.Reader, error) {
		x.charset = charset
		return nil, errors.New("unsupported encoding")
	}
	return x
}

// line returns the decoder's current line.
func (x *xmlReader) line() int {
	l, _ := x.dec.InputPos()
	return l
}

// next returns the next token: StartElement, EndElement or CharData inside the root element (text around
// it is checked and skipped). It returns io.EOF after the root element has ended and the input is
// exhausted.
func (x *xmlReader) next() (xml.Token, error) {
	for {
		x.tokens++
		if x.tokens%4096 == 0 {
			if err := x.ctx.Err(); err != nil {
				return nil, err
			}
		}
		tok, err := x.dec.Token()
		x.guard.mark = x.guard.pulled
		if err != nil {
			return nil, x.mapErr(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if x.rootDone {
				return nil, x.malformed("a second root element <%s> after the end of <%s>", t.Name.Local, x.rootElem.Name.Local)
			}
			if !x.rootSeen {
				x.rootSeen = true
				x.rootElem = t.Copy()
			}
			x.depth++
			if x.depth > xmlMaxDepth {
				return nil, x.malformed("elements nested deeper than %d levels", xmlMaxDepth)
			}
			if dup, ok := duplicateAttr(t.Attr); ok {
				return nil, x.malformed("attribute %s repeated in <%s>", dup, t.Name.Local)
			}
			return t, nil
		case xml.EndElement:
			x.depth--
			if x.depth == 0 {
				x.rootDone = true
			}
			return t, nil
		case xml.CharData:
			if x.depth > 0 {
				return t, nil
			}
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, x.malformed("text outside the root element")
			}
		case xml.Directive:
			if x.rootSeen {
				return nil, x.malformed("markup declaration after the root element")
			}
		}
		// Comments and processing instructions are skipped.
	}
}

// duplicateAttr finds an attribute given twice, which encoding/xml does not reject but XML forbids.
func duplicateAttr(attrs []xml.Attr) (string, bool) {
	if len(attrs) <= 16 {
		for i := range attrs {
			for j := range i {
				if attrs[i].Name == attrs[j].Name {
					return attrs[i].Name.Local, true
				}
			}
		}
		return "", false
	}
	seen := make(map[xml.Name]bool, len(attrs))
	for _, a := range attrs {
		if seen[a.Name] {
			return a.Name.Local, true
		}
		seen[a.Name] = true
	}
	return "", false
}

// mapErr turns decoder errors into format problems; reader errors pass through.
func (x *xmlReader) mapErr(err error) error {
	if err == io.EOF {
		if !x.rootSeen {
			return x.malformed("no root element")
		}
		return io.EOF // encoding/xml reports unclosed elements itself
	}
	if errors.Is(err, errTokenTooLarge) {
		return invalid("", CodeXMLTokenTooLarge, "line %d: an XML token is larger than %d bytes (Options.MaxXMLTokenSize)", x.line(), x.maxToken)
	}
	if x.charset != "" {
		return invalid("", CodeXMLUnsupportedEncoding, "declared encoding %q is not supported; package XML must be UTF-8", x.charset)
	}
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		return invalid("", CodeXMLMalformed, "line %d: %s", se.Line, se.Msg)
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return err
	}
	if classifyIO(err, "") != nil {
		return err
	}
	if strings.HasPrefix(err.Error(), "xml: ") { // a decoder error without a SyntaxError type
		return invalid("", CodeXMLMalformed, "line %d: %s", x.line(), err.Error())
	}
	return err
}

func (x *xmlReader) malformed(format string, args ...any) *ValidationError {
	return invalid("", CodeXMLMalformed, "line %d: "+format, append([]any{x.line()}, args...)...)
}

// root reads up to the root element and checks its local name.
func (x *xmlReader) root(wantLocal string) (xml.StartElement, error) {
	tok, err := x.next()
	if err != nil {
		return xml.StartElement{}, err
	}
	se, ok := tok.(xml.StartElement)
	if !ok {
		return xml.StartElement{}, x.malformed("no root element")
	}
	if wantLocal != "" && se.Name.Local != wantLocal {
		return se, invalid("", CodeXMLWrongRoot, "root element is <%s>, want <%s xmlns=%q>", qname(se.Name), wantLocal, rootNamespace(wantLocal))
	}
	return se, nil
}

// drain reads to the end of the document, checking well-formedness.
func (x *xmlReader) drain() error {
	for {
		if _, err := x.next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func qname(n xml.Name) string {
	if n.Space == "" {
		return n.Local
	}
	return n.Local + ` xmlns="` + n.Space + `"`
}

func rootNamespace(local string) string {
	for _, f := range packageFiles {
		if f.root == local {
			return f.ns
		}
	}
	return ""
}

func attr(se xml.StartElement, local string) (string, bool) {
	for _, a := range se.Attr {
		if a.Name.Local == local && a.Name.Space != "xmlns" {
			return a.Value, true
		}
	}
	return "", false
}

func attrValue(se xml.StartElement, local string) string {
	v, _ := attr(se, local)
	return v
}

// SPObject is one <SPObject> of a manifest, with the facts of its File (for SPFile) or ListItem (for
// SPListItem) child.
type SPObject struct {
	// ObjectType is the ObjectType attribute: SPFile, SPFolder, SPListItem, SPDocumentLibrary…
	ObjectType string
	// ID is the Id attribute (a GUID).
	ID string
	// ParentID is the ParentId attribute.
	ParentID string
	// ParentWebID is the ParentWebId attribute.
	ParentWebID string
	// ParentWebURL is the ParentWebUrl attribute (server-relative).
	ParentWebURL string
	// URL is the Url attribute (server-relative).
	URL string
	// Line is the line of the SPObject's start tag.
	Line int
	// File is the <File> child, or nil.
	File *SPFile
	// ListItem is the <ListItem> child, or nil.
	ListItem *SPListItem
}

// SPFile holds the attributes of an SPFile's <File> element (reference §5.2, §5.4).
type SPFile struct {
	// ID is the file's Id (GUID); an SPListItem refers to it as DocId.
	ID string
	// URL is the Url attribute, web-relative ("Shared Documents/a.txt").
	URL string
	// Name is the file name.
	Name string
	// ListID is the ListId attribute: the library's id.
	ListID string
	// ListItemIntID is the ListItemIntId attribute: the list item's integer id.
	ListItemIntID string
	// ParentID is the ParentId attribute: the containing folder's id.
	ParentID string
	// ParentWebID is the ParentWebId attribute.
	ParentWebID string
	// ParentWebURL is the ParentWebUrl attribute (server-relative).
	ParentWebURL string
	// TimeCreated is the TimeCreated attribute, as written.
	TimeCreated string
	// TimeLastModified is the TimeLastModified attribute, as written.
	TimeLastModified string
	// Version is the Version attribute ("1.0").
	Version string
	// Author is the Author attribute (a UserGroup.xml user id).
	Author string
	// ModifiedBy is the ModifiedBy attribute (a UserGroup.xml user id).
	ModifiedBy string
	// FileValue is the blob name of the content in the data container; empty when absent.
	FileValue string
	// HasFileValue reports whether the FileValue attribute is present.
	HasFileValue bool
	// FileSize is the FileSize attribute, or -1 when it is absent or not a non-negative integer.
	FileSize int64
	// FileSizeAttr is the raw FileSize attribute ("" when absent).
	FileSizeAttr string
	// Versions lists the <Versions><File …/></Versions> children (older versions), at most 50,000.
	Versions []FileVersion
}

// FileVersion is an older version of a file: a <File> inside <Versions>.
type FileVersion struct {
	// Version is the Version attribute ("0.1").
	Version string
	// FileValue is the version's blob name in the data container.
	FileValue string
	// HasFileValue reports whether the FileValue attribute is present.
	HasFileValue bool
	// FileSize is the FileSize attribute, or -1 when it is absent or invalid.
	FileSize int64
	// FileSizeAttr is the raw FileSize attribute ("" when absent).
	FileSizeAttr string
}

// SPListItem holds the attributes of an SPListItem's <ListItem> element.
type SPListItem struct {
	// ID is the item's Id (GUID).
	ID string
	// IntID is the IntId attribute: the item's integer id.
	IntID string
	// DocID is the DocId attribute: the Id of the file or folder the item belongs to.
	DocID string
	// DocType is the DocType attribute: "File" or "Folder".
	DocType string
	// FileURL is the FileUrl attribute (web-relative).
	FileURL string
	// Name is the Name attribute.
	Name string
	// DirName is the DirName attribute: the containing folder's URL.
	DirName string
	// ParentListID is the ParentListId attribute.
	ParentListID string
	// ParentFolderID is the ParentFolderId attribute.
	ParentFolderID string
}

func parseFileSize(s string, ok bool) int64 {
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// ScanManifest streams a manifest (root <SPObjects>) and calls fn for each <SPObject>, in document
// order, once the object's element has ended. It never holds more than one object in memory. Element
// and attribute names are matched on their local names. A malformed document yields a *ValidationError
// (without Entry); an error of r or fn is returned unchanged.
func ScanManifest(r io.Reader, fn func(SPObject) error) error {
	x := newXMLReader(context.Background(), r, DefaultMaxXMLTokenSize)
	return scanManifest(x, fn)
}

func scanManifest(x *xmlReader, fn func(SPObject) error) error {
	if _, err := x.root(manifestFile.root); err != nil {
		return err
	}
	var (
		obj    *SPObject
		stack  []string // local names below the root
		inVers bool
	)
	for {
		tok, err := x.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, t.Name.Local)
			switch {
			case len(stack) == 1 && t.Name.Local == "SPObject":
				obj = &SPObject{
					ObjectType:   attrValue(t, "ObjectType"),
					ID:           attrValue(t, "Id"),
					ParentID:     attrValue(t, "ParentId"),
					ParentWebID:  attrValue(t, "ParentWebId"),
					ParentWebURL: attrValue(t, "ParentWebUrl"),
					URL:          attrValue(t, "Url"),
					Line:         x.line(),
				}
			case obj == nil:
			case len(stack) == 2 && t.Name.Local == "File" && obj.File == nil:
				obj.File = fileFrom(t)
			case len(stack) == 2 && t.Name.Local == "ListItem" && obj.ListItem == nil:
				obj.ListItem = &SPListItem{
					ID: attrValue(t, "Id"), IntID: attrValue(t, "IntId"), DocID: attrValue(t, "DocId"),
					DocType: attrValue(t, "DocType"), FileURL: attrValue(t, "FileUrl"), Name: attrValue(t, "Name"),
					DirName: attrValue(t, "DirName"), ParentListID: attrValue(t, "ParentListId"),
					ParentFolderID: attrValue(t, "ParentFolderId"),
				}
			case len(stack) == 3 && stack[1] == "File" && t.Name.Local == "Versions" && obj.File != nil:
				inVers = true
			case len(stack) == 4 && inVers && t.Name.Local == "File":
				if len(obj.File.Versions) >= maxVersionsPerFile {
					return invalid("", CodeManifestTooManyVersions, "line %d: SPObject %s has more than %d versions",
						x.line(), obj.ID, maxVersionsPerFile)
				}
				fv, hasFV := attr(t, "FileValue")
				fs, hasFS := attr(t, "FileSize")
				obj.File.Versions = append(obj.File.Versions, FileVersion{
					Version: attrValue(t, "Version"), FileValue: fv, HasFileValue: hasFV,
					FileSize: parseFileSize(fs, hasFS), FileSizeAttr: fs,
				})
			}
		case xml.EndElement:
			if len(stack) == 0 {
				continue // the root's end
			}
			if len(stack) == 3 && stack[2] == "Versions" {
				inVers = false
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 && obj != nil {
				o := *obj
				obj = nil
				if err := fn(o); err != nil {
					return err
				}
			}
		}
	}
}

func fileFrom(t xml.StartElement) *SPFile {
	fv, hasFV := attr(t, "FileValue")
	fs, hasFS := attr(t, "FileSize")
	return &SPFile{
		ID: attrValue(t, "Id"), URL: attrValue(t, "Url"), Name: attrValue(t, "Name"),
		ListID: attrValue(t, "ListId"), ListItemIntID: attrValue(t, "ListItemIntId"),
		ParentID: attrValue(t, "ParentId"), ParentWebID: attrValue(t, "ParentWebId"),
		ParentWebURL: attrValue(t, "ParentWebUrl"), TimeCreated: attrValue(t, "TimeCreated"),
		TimeLastModified: attrValue(t, "TimeLastModified"), Version: attrValue(t, "Version"),
		Author: attrValue(t, "Author"), ModifiedBy: attrValue(t, "ModifiedBy"),
		FileValue: fv, HasFileValue: hasFV, FileSize: parseFileSize(fs, hasFS), FileSizeAttr: fs,
	}
}

// ParseSystemData streams SystemData.xml and returns the Name of every <ManifestFiles><ManifestFile>,
// in document order (an entry without Name yields ""). A malformed document yields a *ValidationError.
func ParseSystemData(r io.Reader) ([]string, error) {
	return parseSystemData(newXMLReader(context.Background(), r, DefaultMaxXMLTokenSize), 0)
}

// parseSystemData collects at most max names (0: no bound); more yield a problem.
func parseSystemData(x *xmlReader, max int) ([]string, error) {
	if _, err := x.root("SystemData"); err != nil {
		return nil, err
	}
	var names []string
	var stack []string
	for {
		tok, err := x.next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, t.Name.Local)
			if len(stack) == 2 && stack[0] == "ManifestFiles" && t.Name.Local == "ManifestFile" {
				if max > 0 && len(names) >= max {
					return nil, invalid("", CodeSystemDataBadManifestName, "more than %d ManifestFile entries", max)
				}
				names = append(names, attrValue(t, "Name"))
			}
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}

// ExportSettings holds the attributes of ExportSettings.xml's root element.
type ExportSettings struct {
	// SiteURL is the SiteUrl attribute: the package's source site URL (required, not empty).
	SiteURL string
	// SourceType is the SourceType attribute (mandatory since 1 April 2023): AmazonS3, AzureStorage, Box,
	// Dropbox, Egnyte, FileShare, GoogleCloudStorage, GoogleDrive, MicrosoftStream, OneDrive,
	// SharePointOnline, SharePointOnPremServer or Other.
	SourceType string
	// HasSourceType reports whether the SourceType attribute is present.
	HasSourceType bool
	// DetailedSource is the DetailedSource attribute (with SourceType Other).
	DetailedSource string
	// FileLocation is the FileLocation attribute.
	FileLocation string
	// IncludeSecurity is the IncludeSecurity attribute.
	IncludeSecurity string
	// IgnoreWebParts is the IgnoreWebParts attribute.
	IgnoreWebParts string
}

// SourceTypes are the documented ExportSettings SourceType values (reference §5.1).
var SourceTypes = []string{"AmazonS3", "AzureStorage", "Box", "Dropbox", "Egnyte", "FileShare",
	"GoogleCloudStorage", "GoogleDrive", "MicrosoftStream", "OneDrive", "SharePointOnline",
	"SharePointOnPremServer", "Other"}

// ParseExportSettings streams ExportSettings.xml and returns its root's attributes, after checking the
// whole document is well-formed. A malformed document yields a *ValidationError.
func ParseExportSettings(r io.Reader) (ExportSettings, error) {
	return parseExportSettings(newXMLReader(context.Background(), r, DefaultMaxXMLTokenSize))
}

func parseExportSettings(x *xmlReader) (ExportSettings, error) {
	se, err := x.root("ExportSettings")
	if err != nil {
		return ExportSettings{}, err
	}
	st, hasST := attr(se, "SourceType")
	es := ExportSettings{
		SiteURL: attrValue(se, "SiteUrl"), SourceType: st, HasSourceType: hasST,
		DetailedSource: attrValue(se, "DetailedSource"), FileLocation: attrValue(se, "FileLocation"),
		IncludeSecurity: attrValue(se, "IncludeSecurity"), IgnoreWebParts: attrValue(se, "IgnoreWebParts"),
	}
	return es, x.drain()
}

// userWithoutSystemID describes a <User> lacking SystemId.
type userWithoutSystemID struct {
	line  int
	id    string
	login string
}

// parseUserGroup streams UserGroup.xml and returns the users without a SystemId (at most max).
func parseUserGroup(x *xmlReader, max int) ([]userWithoutSystemID, error) {
	if _, err := x.root("UserGroupMap"); err != nil {
		return nil, err
	}
	var missing []userWithoutSystemID
	var stack []string
	for {
		tok, err := x.next()
		if err == io.EOF {
			return missing, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, t.Name.Local)
			if len(stack) == 2 && stack[0] == "Users" && t.Name.Local == "User" {
				if _, ok := attr(t, "SystemId"); !ok && len(missing) < max {
					missing = append(missing, userWithoutSystemID{line: x.line(), id: attrValue(t, "Id"), login: attrValue(t, "Login")})
				}
			}
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}
