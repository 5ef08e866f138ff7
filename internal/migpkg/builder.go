package migpkg

import (
	"archive/zip"
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BuilderOptions describes the package a [Builder] writes. Every zero field takes its default (see
// setDefaults). For a real tenant, WebID and ListID must be the target web's and library's real ids
// (reference §5.2); the defaults are derived from SiteURL and LibraryURL so that tests are reproducible.
type BuilderOptions struct {
	// SiteURL is the absolute URL of the target site: ExportSettings SiteUrl; its path is the web's
	// server-relative URL (ParentWebUrl). Default "https://contoso.sharepoint.com/sites/migration".
	SiteURL string
	// WebID is the target web's id. Default: derived from SiteURL.
	WebID string
	// ListID is the target document library's id. Default: derived from SiteURL and LibraryURL.
	ListID string
	// RootFolderID is the library root folder's UniqueId. Default: derived like ListID.
	RootFolderID string
	// ListTitle is the library's title. Default "Documents".
	ListTitle string
	// LibraryURL is the library's web-relative URL. Default "Shared Documents".
	LibraryURL string
	// SourceType is ExportSettings SourceType. Default "FileShare".
	SourceType string
	// FileLocation is ExportSettings FileLocation. Default `C:\Temp`, as in the reference's example.
	FileLocation string
	// UserLogin is the login (UPN claim) of the one user, author of everything (UserGroup.xml user 1).
	// Default "i:0#.f|membership|admin@contoso.onmicrosoft.com".
	UserLogin string
	// UserName is that user's display name. Default "Migration Admin".
	UserName string
	// UserSystemID is that user's SystemId (base64). Default: base64 of UserLogin.
	UserSystemID string
	// Time is the created/modified time of folders and of files without their own. Default
	// 2024-01-01T00:00:00Z.
	Time time.Time
	// KeepPaths names content blobs after the file's library-relative path ("a/b.txt") instead of
	// "{file id}.dat", the choice of most working clients (reference §3.2).
	KeepPaths bool
	// ContentMethod is the zip method of content entries: zip.Store (default, 0) or zip.Deflate. Package
	// XML is always deflated.
	ContentMethod uint16
	// OmitOptionalFiles leaves out Requirements.xml, RootObjectMap.xml, LookupListMap.xml and
	// ViewFormsList.xml, as some tools do.
	OmitOptionalFiles bool
}

func (o *BuilderOptions) setDefaults() {
	if o.SiteURL == "" {
		o.SiteURL = "https://contoso.sharepoint.com/sites/migration"
	}
	if o.LibraryURL == "" {
		o.LibraryURL = "Shared Documents"
	}
	if o.WebID == "" {
		o.WebID = nameGUID("web", o.SiteURL)
	}
	if o.ListID == "" {
		o.ListID = nameGUID("list", o.SiteURL+"|"+o.LibraryURL)
	}
	if o.RootFolderID == "" {
		o.RootFolderID = nameGUID("rootfolder", o.SiteURL+"|"+o.LibraryURL)
	}
	if o.ListTitle == "" {
		o.ListTitle = "Documents"
	}
	if o.SourceType == "" {
		o.SourceType = "FileShare"
	}
	if o.FileLocation == "" {
		o.FileLocation = `C:\Temp`
	}
	if o.UserLogin == "" {
		o.UserLogin = "i:0#.f|membership|admin@contoso.onmicrosoft.com"
	}
	if o.UserName == "" {
		o.UserName = "Migration Admin"
	}
	if o.UserSystemID == "" {
		o.UserSystemID = base64.StdEncoding.EncodeToString([]byte(o.UserLogin))
	}
	if o.Time.IsZero() {
		o.Time = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	}
}

// BuildFile is a file of a built package.
type BuildFile struct {
	// Path is the file's path in the library, "/"-separated ("Reports/2024/q1.xlsx"). Folders are
	// created for every parent. Any Unicode is fine except SharePoint's invalid characters " * : < > ? \ |.
	Path string
	// Size is the file's size in bytes.
	Size int64
	// Content yields exactly Size bytes; nil means GeneratedContent(Path, Size).
	Content io.Reader
	// Modified is the file's created/modified time; zero means BuilderOptions.Time.
	Modified time.Time
}

// Builder writes a complete, valid migration package zip: content entries streamed from their readers
// (a multi-GiB package never sits in memory), Manifest.xml (root SPFolder, SPDocumentLibrary, an
// SPFolder and SPListItem per folder, an SPFile and SPListItem per file), ExportSettings.xml,
// SystemData.xml, UserGroup.xml, Requirements.xml, RootObjectMap.xml, LookupListMap.xml and
// ViewFormsList.xml, shaped after reference §5.4. There is no SPWeb object: the import schema does not
// allow one (reference §5.2).
type Builder struct {
	opts  BuilderOptions
	files []BuildFile
	fold  map[string]bool
}

// NewBuilder returns a Builder for the given options.
func NewBuilder(opts BuilderOptions) *Builder {
	opts.setDefaults()
	return &Builder{opts: opts, fold: map[string]bool{}}
}

// Options returns the builder's options, defaults filled in.
func (b *Builder) Options() BuilderOptions { return b.opts }

// AddFile adds a file. It rejects empty, unclean or duplicate (case-insensitively) paths and names with
// characters SharePoint does not allow.
func (b *Builder) AddFile(f BuildFile) error {
	if f.Size < 0 {
		return fmt.Errorf("migpkg: build: %q: negative size", f.Path)
	}
	if f.Path == "" || path.Clean(f.Path) != f.Path || strings.HasPrefix(f.Path, "/") || f.Path == "." ||
		slices.Contains(strings.Split(f.Path, "/"), "..") {
		return fmt.Errorf("migpkg: build: %q: not a clean relative path", f.Path)
	}
	for seg := range strings.SplitSeq(f.Path, "/") {
		if strings.ContainsAny(seg, "\"*:<>?\\|") || strings.TrimSpace(seg) != seg {
			return fmt.Errorf("migpkg: build: %q: segment %q is not a valid SharePoint name", f.Path, seg)
		}
	}
	if b.opts.KeepPaths && isRootName(f.Path) && hasXMLSuffix(f.Path) {
		reserved := strings.EqualFold(f.Path, FileArchivedFiles)
		for _, pf := range packageFiles {
			reserved = reserved || strings.EqualFold(pf.name, f.Path)
		}
		if reserved {
			return fmt.Errorf("migpkg: build: %q: with KeepPaths, the name of a package file", f.Path)
		}
	}
	key := foldName(f.Path)
	if b.fold[key] {
		return fmt.Errorf("migpkg: build: %q: duplicate path", f.Path)
	}
	b.fold[key] = true
	b.files = append(b.files, f)
	return nil
}

// builtFile is a file with its ids.
type builtFile struct {
	BuildFile
	id, itemID, folderID string
	fileValue            string
	intID                int
}

// builtFolder is a folder with its ids.
type builtFolder struct {
	path           string // library-relative
	id, itemID     string
	parentFolderID string
	intID          int
}

// Write writes the package zip to w. It reads every file's Content once; call it once.
func (b *Builder) Write(w io.Writer) error {
	o := b.opts
	u, err := url.Parse(o.SiteURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("migpkg: build: SiteURL %q is not an absolute URL", o.SiteURL)
	}
	webURL := strings.TrimSuffix(u.Path, "/")
	if webURL == "" {
		webURL = "/"
	}
	serverRel := func(webRel string) string {
		if webURL == "/" {
			return "/" + webRel
		}
		return webURL + "/" + webRel
	}
	libServer := serverRel(o.LibraryURL)

	// Folders (parents first) and files, with ids and list item int ids.
	folderIDs := map[string]string{"": o.RootFolderID}
	var folders []builtFolder
	var dirs []string
	for _, f := range b.files {
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if _, ok := folderIDs[d]; !ok {
				folderIDs[d] = nameGUID("folder", o.ListID+"|"+d)
				dirs = append(dirs, d)
			}
		}
	}
	slices.Sort(dirs) // a parent sorts before its children
	intID := 0
	for _, d := range dirs {
		intID++
		parent := path.Dir(d)
		if parent == "." {
			parent = ""
		}
		folders = append(folders, builtFolder{path: d, id: folderIDs[d], itemID: nameGUID("folderitem", o.ListID+"|"+d),
			parentFolderID: folderIDs[parent], intID: intID})
	}
	files := make([]builtFile, len(b.files))
	for i, f := range b.files {
		intID++
		dir := path.Dir(f.Path)
		if dir == "." {
			dir = ""
		}
		bf := builtFile{BuildFile: f, id: nameGUID("file", o.ListID+"|"+f.Path), itemID: nameGUID("fileitem", o.ListID+"|"+f.Path),
			folderID: folderIDs[dir], intID: intID}
		bf.fileValue = bf.id + ".dat"
		if o.KeepPaths {
			bf.fileValue = f.Path
		}
		if bf.Modified.IsZero() {
			bf.Modified = o.Time
		}
		files[i] = bf
	}

	zw := zip.NewWriter(w)
	// Content.
	for _, f := range files {
		hdr := &zip.FileHeader{Name: f.fileValue, Method: o.ContentMethod, Modified: f.Modified}
		hdr.SetMode(0o644)
		ew, err := zw.CreateHeader(hdr)
		if err != nil {
			return fmt.Errorf("migpkg: build: %w", err)
		}
		src := f.Content
		if src == nil {
			src = GeneratedContent(f.Path, f.Size)
		}
		n, err := io.Copy(ew, io.LimitReader(src, f.Size+1))
		if err != nil {
			return fmt.Errorf("migpkg: build: %s: %w", f.Path, err)
		}
		if n != f.Size {
			return fmt.Errorf("migpkg: build: %s: content is %s bytes, declared %d", f.Path, sizeText(n, f.Size), f.Size)
		}
	}

	ts := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05") }
	created := ts(o.Time)

	// Manifest.xml
	err = b.xmlFile(zw, FileManifest, func(x *xmlWriter) {
		x.open("SPObjects", "xmlns", NamespaceManifest)
		x.raw("\n")
		x.open("SPObject", "Id", o.RootFolderID, "ObjectType", "SPFolder", "ParentId", o.WebID, "ParentWebId", o.WebID,
			"ParentWebUrl", webURL, "Url", libServer)
		x.empty("Folder", "Id", o.RootFolderID, "Url", o.LibraryURL, "Name", path.Base(o.LibraryURL), "ParentFolderId", o.WebID,
			"ParentWebId", o.WebID, "ParentWebUrl", webURL, "ContainingDocumentLibrary", o.ListID,
			"TimeCreated", created, "TimeLastModified", created, "SortBehavior", "1")
		x.closeLine("SPObject")
		x.open("SPObject", "Id", o.ListID, "ObjectType", "SPDocumentLibrary", "ParentId", o.WebID, "ParentWebId", o.WebID,
			"ParentWebUrl", webURL, "Url", libServer)
		x.open("DocumentLibrary", "Id", o.ListID, "BaseTemplate", "DocumentLibrary", "RootFolderId", o.RootFolderID,
			"RootFolderUrl", libServer, "ParentWebId", o.WebID, "ParentWebUrl", webURL, "Title", o.ListTitle)
		x.empty("ContentTypes")
		x.close("DocumentLibrary")
		x.closeLine("SPObject")
		for _, d := range folders {
			webRel := o.LibraryURL + "/" + d.path
			parentDir := path.Dir(webRel)
			x.open("SPObject", "Id", d.id, "ObjectType", "SPFolder", "ParentId", d.parentFolderID, "ParentWebId", o.WebID,
				"ParentWebUrl", webURL, "Url", serverRel(webRel))
			x.empty("Folder", "Id", d.id, "Url", webRel, "Name", path.Base(d.path), "ParentFolderId", d.parentFolderID,
				"ParentWebId", o.WebID, "ParentWebUrl", webURL, "ContainingDocumentLibrary", o.ListID,
				"TimeCreated", created, "TimeLastModified", created)
			x.closeLine("SPObject")
			x.open("SPObject", "Id", d.itemID, "ObjectType", "SPListItem", "ParentId", o.ListID, "ParentWebId", o.WebID,
				"ParentWebUrl", webURL, "Url", serverRel(webRel))
			x.open("ListItem", "FileUrl", webRel, "DocType", "Folder", "ParentFolderId", d.parentFolderID,
				"Order", strconv.Itoa(d.intID*100), "Id", d.itemID, "ParentWebId", o.WebID, "ParentListId", o.ListID,
				"Name", path.Base(d.path), "DirName", serverRel(parentDir), "IntId", strconv.Itoa(d.intID), "DocId", d.id,
				"Version", "1.0", "Author", "1", "ModifiedBy", "1", "TimeCreated", created, "TimeLastModified", created,
				"ModerationStatus", "Approved")
			x.empty("Fields")
			x.close("ListItem")
			x.closeLine("SPObject")
		}
		for _, f := range files {
			webRel := o.LibraryURL + "/" + f.Path
			mod := ts(f.Modified)
			name := path.Base(f.Path)
			x.open("SPObject", "Id", f.id, "ObjectType", "SPFile", "ParentId", f.folderID, "ParentWebId", o.WebID,
				"ParentWebUrl", webURL, "Url", serverRel(webRel))
			x.empty("File", "Url", webRel, "Id", f.id, "ParentWebId", o.WebID, "ParentWebUrl", webURL, "Name", name,
				"ListItemIntId", strconv.Itoa(f.intID), "ListId", o.ListID, "ParentId", f.folderID,
				"TimeCreated", mod, "TimeLastModified", mod, "Version", "1.0", "FileValue", f.fileValue,
				"FileSize", strconv.FormatInt(f.Size, 10), "Author", "1", "ModifiedBy", "1")
			x.closeLine("SPObject")
			x.open("SPObject", "Id", f.itemID, "ObjectType", "SPListItem", "ParentId", o.ListID, "ParentWebId", o.WebID,
				"ParentWebUrl", webURL, "Url", serverRel(webRel))
			x.open("ListItem", "FileUrl", webRel, "DocType", "File", "ParentFolderId", f.folderID,
				"Order", strconv.Itoa(f.intID*100), "Id", f.itemID, "ParentWebId", o.WebID, "ParentListId", o.ListID,
				"Name", name, "DirName", serverRel(path.Dir(webRel)), "IntId", strconv.Itoa(f.intID), "DocId", f.id,
				"Version", "1.0", "Author", "1", "ModifiedBy", "1", "TimeCreated", mod, "TimeLastModified", mod,
				"ModerationStatus", "Approved")
			x.empty("Fields")
			x.close("ListItem")
			x.closeLine("SPObject")
		}
		x.close("SPObjects")
	})
	if err != nil {
		return err
	}

	err = b.xmlFile(zw, FileExportSettings, func(x *xmlWriter) {
		x.open("ExportSettings", "xmlns", NamespaceExportSettings, "SiteUrl", o.SiteURL, "FileLocation", o.FileLocation,
			"IncludeSecurity", "None", "SourceType", o.SourceType)
		x.open("ExportObjects")
		x.empty("DeploymentObject", "Id", o.ListID, "Type", "List", "ParentId", o.WebID)
		x.close("ExportObjects")
		x.close("ExportSettings")
	})
	if err != nil {
		return err
	}

	err = b.xmlFile(zw, FileSystemData, func(x *xmlWriter) {
		x.open("SystemData", "xmlns", NamespaceSystemData)
		x.empty("SchemaVersion", "Version", "15.0.0.0", "Build", "16.0.3111.1200", "DatabaseVersion", "11552", "SiteVersion", "15")
		x.open("ManifestFiles")
		x.empty("ManifestFile", "Name", FileManifest)
		x.close("ManifestFiles")
		x.open("SystemObjects")
		x.empty("SystemObject", "Id", o.WebID, "Type", "Web", "Url", webURL)
		x.empty("SystemObject", "Id", o.ListID, "Type", "List", "Url", libServer)
		x.close("SystemObjects")
		x.empty("RootWebOnlyLists")
		x.close("SystemData")
	})
	if err != nil {
		return err
	}

	email := o.UserLogin[strings.LastIndex(o.UserLogin, "|")+1:]
	err = b.xmlFile(zw, FileUserGroup, func(x *xmlWriter) {
		x.open("UserGroupMap", "xmlns", NamespaceUserGroupMap)
		x.open("Users")
		x.empty("User", "Id", "1", "Name", o.UserName, "Login", o.UserLogin, "Email", email, "IsDomainGroup", "false",
			"IsSiteAdmin", "true", "SystemId", o.UserSystemID, "IsDeleted", "false", "Flags", "0")
		x.close("Users")
		x.empty("Groups")
		x.close("UserGroupMap")
	})
	if err != nil {
		return err
	}

	if !o.OmitOptionalFiles {
		for _, f := range packageFiles {
			if f.required {
				continue
			}
			if f.name == FileRootObjectMap {
				err = b.xmlFile(zw, f.name, func(x *xmlWriter) {
					x.open("RootObjects", "xmlns", NamespaceRootObjectMap)
					x.empty("RootObject", "Id", o.ListID, "Type", "List", "ParentId", o.WebID, "WebUrl", webURL,
						"Url", libServer, "IsDependency", "false")
					x.close("RootObjects")
				})
			} else {
				err = b.xmlFile(zw, f.name, func(x *xmlWriter) { x.empty(f.root, "xmlns", f.ns) })
			}
			if err != nil {
				return err
			}
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("migpkg: build: %w", err)
	}
	return nil
}

func sizeText(n, declared int64) string {
	if n > declared {
		return "more than " + strconv.FormatInt(declared, 10)
	}
	return strconv.FormatInt(n, 10)
}

// xmlFile writes one deflated XML entry through a buffered writer.
func (b *Builder) xmlFile(zw *zip.Writer, name string, body func(x *xmlWriter)) error {
	hdr := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: b.opts.Time}
	hdr.SetMode(0o644)
	ew, err := zw.CreateHeader(hdr)
	if err != nil {
		return fmt.Errorf("migpkg: build: %w", err)
	}
	x := &xmlWriter{w: bufio.NewWriter(ew)}
	x.raw(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	body(x)
	x.raw("\n")
	if x.err == nil {
		x.err = x.w.Flush()
	}
	if x.err != nil {
		return fmt.Errorf("migpkg: build: %s: %w", name, x.err)
	}
	return nil
}

// xmlWriter writes elements with escaped attributes, keeping the first error.
type xmlWriter struct {
	w   *bufio.Writer
	err error
}

func (x *xmlWriter) raw(s string) {
	if x.err == nil {
		_, x.err = x.w.WriteString(s)
	}
}

func (x *xmlWriter) tag(name string, attrs []string, end string) {
	x.raw("<" + name)
	for i := 0; i+1 < len(attrs); i += 2 {
		x.raw(" " + attrs[i] + `="`)
		if x.err == nil {
			x.err = xml.EscapeText(x.w, []byte(attrs[i+1]))
		}
		x.raw(`"`)
	}
	x.raw(end)
}

func (x *xmlWriter) open(name string, attrs ...string)  { x.tag(name, attrs, ">") }
func (x *xmlWriter) empty(name string, attrs ...string) { x.tag(name, attrs, " />") }
func (x *xmlWriter) close(name string)                  { x.raw("</" + name + ">") }
func (x *xmlWriter) closeLine(name string)              { x.raw("</" + name + ">\n") }

// nameGUID derives a stable GUID from a kind and a name (a name-based, version 5 style UUID), so that a
// rebuilt package keeps its ids and re-importing replaces rather than duplicates.
func nameGUID(kind, name string) string {
	h := sha1.Sum([]byte("spomig/" + kind + "\x00" + name))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// GeneratedContent returns a reader of size deterministic, incompressible bytes derived from name: the
// content a Builder writes for a BuildFile without Content. It allocates nothing per byte.
func GeneratedContent(name string, size int64) io.Reader {
	seed := sha1.Sum([]byte(name))
	s := binary.LittleEndian.Uint64(seed[:8]) | 1
	return io.LimitReader(&xorshift{s: s}, size)
}

// xorshift is an endless xorshift64* byte stream.
type xorshift struct {
	s   uint64
	buf [8]byte
	n   int // unread bytes in buf
}

func (x *xorshift) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	i := 0
	for ; i < len(b) && x.n > 0; i++ {
		b[i] = x.buf[8-x.n]
		x.n--
	}
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], x.next())
	}
	if i < len(b) {
		binary.LittleEndian.PutUint64(x.buf[:], x.next())
		x.n = 8
		for ; i < len(b); i++ {
			b[i] = x.buf[8-x.n]
			x.n--
		}
	}
	return len(b), nil
}

func (x *xorshift) next() uint64 {
	x.s ^= x.s >> 12
	x.s ^= x.s << 25
	x.s ^= x.s >> 27
	return x.s * 2685821657736338717
}

var _ io.Reader = (*xorshift)(nil)
