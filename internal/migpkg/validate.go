package migpkg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// allowedObjectTypes are the SPObject ObjectType values of the constrained import schema (reference
// §5.2); notably there is no SPWeb.
var allowedObjectTypes = map[string]bool{
	"SPList": true, "SPDocumentLibrary": true, "SPListItem": true, "SPFolder": true, "SPFile": true,
	"SPContentType": true, "SPDocumentTemplate": true, "DeploymentUserX": true, "DeploymentGroupX": true,
	"DeploymentRoles": true, "DeploymentRoleX": true, "DeploymentRoleAssignments": true,
	"DeploymentRoleAssignmentX": true,
}

// Validate checks the package's XML and its references to content, streaming every package XML at the
// zip root through a tokenizer (memory stays bounded by Options.MaxXMLTokenSize, whatever the manifest
// size). It reads the package XML entries but no content entry.
//
// It checks that Manifest.xml, ExportSettings.xml (with SiteUrl and SourceType), SystemData.xml and
// UserGroup.xml (every User with a SystemId) are present and well-formed, that every manifest SystemData
// lists is present, that every FileValue of every SPFile (and of its versions) names a content entry
// whose size equals FileSize, and that every other root XML is well-formed. Absent optional files
// (Requirements.xml, RootObjectMap.xml, LookupListMap.xml, ViewFormsList.xml) become synthetic Items.
//
// An invalid package yields a *ValidationError listing every problem; an I/O error of the ReaderAt or a
// context error is returned wrapped (and Validate may be called again). Warnings go to p.Warnings.
// After success, Items and Totals are available and further calls return nil at once; after a failure,
// a further call validates again.
func (p *Package) Validate(ctx context.Context) error {
	if p.validated {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("migpkg: validate: %w", err)
	}
	v := &validator{
		p:          p,
		ctx:        ctx,
		errs:       problems{max: p.opts.MaxProblems},
		warns:      problems{max: p.opts.MaxProblems},
		metaNames:  map[string]bool{},
		referenced: map[*entry]bool{},
		fileIDs:    map[string]fileRef{},
		docIDs:     map[string]bool{},
	}
	if err := v.run(); err != nil {
		return err
	}
	p.Warnings = append(p.Warnings[:0:0], v.warns.result()...)
	if err := v.errs.err(); err != nil {
		return err
	}
	p.items, p.totals = v.items, v.totals
	p.validated = true
	return nil
}

// fileRef locates an SPFile, for the file-without-list-item check.
type fileRef struct {
	manifest string
	url      string
	line     int
}

type validator struct {
	p     *Package
	ctx   context.Context
	errs  problems
	warns problems

	metaNames  map[string]bool // entry names that go to the metadata container
	referenced map[*entry]bool // content entries some FileValue names
	fileIDs    map[string]fileRef
	docIDs     map[string]bool
	trackIDs   bool // false once the SPFile/ListItem id sets reached their bound

	items  []Item
	totals Totals
}

func (v *validator) run() error {
	p := v.p
	v.trackIDs = true
	for _, f := range packageFiles {
		v.metaNames[f.name] = true
	}
	for _, f := range packageFiles {
		if f.required && p.byName[f.name] == nil {
			v.missing(f.name, "required package file is absent")
		}
	}
	if e := p.byName[FileArchivedFiles]; e != nil {
		v.metaNames[FileArchivedFiles] = true
		v.errs.add(e.name, CodePackageUnsupportedFile, "archived small-file batches (ArchivedFiles.xml) are not supported; put the files in the package directly")
	}

	// ExportSettings.xml
	if e := p.byName[FileExportSettings]; e != nil {
		err := v.withXML(e, packageFiles[1], func(x *xmlReader) error {
			es, err := parseExportSettings(x)
			if err != nil {
				return err
			}
			if strings.TrimSpace(es.SiteURL) == "" {
				v.errs.add(e.name, CodeExportSettingsMissingSiteURL, "<ExportSettings> has no SiteUrl (or an empty one); it must be the package's source site URL")
			}
			switch {
			case !es.HasSourceType || strings.TrimSpace(es.SourceType) == "":
				v.errs.add(e.name, CodeExportSettingsMissingSourceType, "<ExportSettings> has no SourceType; it is mandatory since 1 April 2023 (one of %s)", strings.Join(SourceTypes, ", "))
			case !slices.Contains(SourceTypes, es.SourceType):
				v.warns.add(e.name, CodeExportSettingsUnknownSourceType, "SourceType %q is not one of the documented values (%s)", es.SourceType, strings.Join(SourceTypes, ", "))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}

	// SystemData.xml → the manifests.
	var manifests []string
	if e := p.byName[FileSystemData]; e != nil {
		err := v.withXML(e, packageFiles[2], func(x *xmlReader) error {
			names, err := parseSystemData(x, p.opts.MaxEntries)
			if err != nil {
				return err
			}
			if len(names) == 0 {
				v.warns.add(e.name, CodeSystemDataNoManifests, "<ManifestFiles> lists no ManifestFile")
			}
			seen := map[string]bool{}
			for _, n := range names {
				switch {
				case n == "" || strings.ContainsAny(n, `/\`) || n != strings.TrimSpace(n):
					v.errs.add(e.name, CodeSystemDataBadManifestName, "ManifestFile Name %q is not a file name at the package root", n)
				case seen[n]:
					v.warns.add(e.name, CodeSystemDataDuplicateManifest, "ManifestFile %q is listed more than once", n)
				default:
					seen[n] = true
					manifests = append(manifests, n)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if p.byName[FileManifest] != nil && !slices.Contains(manifests, FileManifest) {
		if p.byName[FileSystemData] != nil {
			v.warns.add(FileManifest, CodeSystemDataManifestNotListed, "Manifest.xml is not listed in SystemData.xml <ManifestFiles>")
		}
		manifests = append([]string{FileManifest}, manifests...)
	}
	for _, m := range manifests {
		v.metaNames[m] = true
		if m != FileManifest && p.byName[m] == nil {
			v.missing(m, "manifest listed in SystemData.xml <ManifestFiles> is absent")
		}
	}

	// UserGroup.xml
	if e := p.byName[FileUserGroup]; e != nil {
		err := v.withXML(e, packageFiles[3], func(x *xmlReader) error {
			users, err := parseUserGroup(x, p.opts.MaxProblems)
			if err != nil {
				return err
			}
			for _, u := range users {
				v.errs.add(e.name, CodeUserGroupMissingSystemID, "line %d: <User Id=%q Login=%q> has no SystemId attribute", u.line, u.id, u.login)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}

	// Optional files: well-formed when present, added empty when absent.
	var synthetic []Item
	for _, f := range packageFiles {
		if f.required {
			continue
		}
		if e := p.byName[f.name]; e != nil {
			if err := v.withXML(e, f, func(x *xmlReader) error {
				if _, err := x.root(f.root); err != nil {
					return err
				}
				return x.drain()
			}); err != nil {
				return err
			}
			continue
		}
		body := f.body()
		v.warns.add(f.name, CodePackageOptionalFileAdded, "optional file is absent; an empty <%s xmlns=%q/> is added (jobs are reported to fail without it)", f.root, f.ns)
		synthetic = append(synthetic, Item{Name: f.name, Container: Metadata, Size: int64(len(body)), Synthetic: true,
			Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }})
	}

	// Manifests.
	for _, m := range manifests {
		e := p.byName[m]
		if e == nil {
			continue
		}
		v.totals.Manifests++
		if err := v.withXML(e, manifestFile, func(x *xmlReader) error {
			return scanManifest(x, func(o SPObject) error { v.object(m, o); return nil })
		}); err != nil {
			return err
		}
	}

	// Classify entries; check unknown root XMLs.
	var meta []Item
	for _, e := range p.entries {
		if e.dir {
			continue
		}
		if isRootName(e.name) && !v.metaNames[e.name] && !v.referenced[e] && hasXMLSuffix(e.name) {
			v.warns.add(e.name, CodePackageUnknownXML, "XML at the package root is not a package file, not listed in SystemData.xml and not named by any FileValue; it is uploaded to the metadata container")
			if err := v.withXML(e, packageFile{}, func(x *xmlReader) error {
				if _, err := x.root(""); err != nil {
					return err
				}
				return x.drain()
			}); err != nil {
				return err
			}
			v.metaNames[e.name] = true
		}
		if v.metaNames[e.name] {
			meta = append(meta, v.item(e, Metadata))
			continue
		}
		if !v.referenced[e] {
			v.warns.add(e.name, CodePackageUnreferencedContent, "content entry is not named by any FileValue; SharePoint will not import it")
		}
		v.items = append(v.items, v.item(e, Data))
		v.totals.ContentFiles++
		v.totals.ContentBytes += e.size()
	}
	meta = append(meta, synthetic...)
	slices.SortFunc(meta, func(a, b Item) int { return strings.Compare(a.Name, b.Name) })
	for _, it := range meta {
		v.totals.MetadataFiles++
		v.totals.MetadataBytes += it.Size
	}
	v.items = append(v.items, meta...)

	if v.totals.ContentFiles > GuidanceMaxItems {
		v.warns.add("", CodePackageOverItemGuidance, "package has %d content files, more than SharePoint's guidance of %d items per package", v.totals.ContentFiles, GuidanceMaxItems)
	}
	if v.totals.ContentFiles > 1 && v.totals.ContentBytes > GuidanceMaxBytes {
		v.warns.add("", CodePackageOverSizeGuidance, "package has %d content bytes in %d files, more than SharePoint's guidance of 250 MB per package (a bigger file belongs in a package of its own)", v.totals.ContentBytes, v.totals.ContentFiles)
	}
	if v.trackIDs {
		type missingItem struct {
			id  string
			ref fileRef
		}
		var lonely []missingItem
		for id, ref := range v.fileIDs {
			if !v.docIDs[id] {
				lonely = append(lonely, missingItem{id, ref})
			}
		}
		slices.SortFunc(lonely, func(a, b missingItem) int {
			if c := strings.Compare(a.ref.manifest, b.ref.manifest); c != 0 {
				return c
			}
			return a.ref.line - b.ref.line
		})
		for _, l := range lonely {
			v.warns.add(l.ref.manifest, CodeManifestFileWithoutListItem, "line %d: SPFile Url=%q Id=%q has no SPListItem with DocId %q; SharePoint is reported to skip it silently", l.ref.line, l.ref.url, l.id, l.id)
		}
	}
	return nil
}

// missing reports an absent package file, pointing out a name differing only in case.
func (v *validator) missing(name, why string) {
	if e := v.p.byFold[foldName(name)]; e != nil {
		v.errs.add(name, CodePackageMissingFile, "%s (found %q: names are case-sensitive)", why, e.name)
		return
	}
	v.errs.add(name, CodePackageMissingFile, "%s", why)
}

// object checks one SPObject of manifest m.
func (v *validator) object(m string, o SPObject) {
	v.totals.SPObjects++
	switch {
	case o.ObjectType == "DeploymentRoles":
		v.warns.add(m, CodeManifestDeploymentRoles, "line %d: SPObject Id=%q of ObjectType DeploymentRoles is reported to fail with \"Updates to system roles is not allowed\"", o.Line, o.ID)
	case !allowedObjectTypes[o.ObjectType]:
		v.errs.add(m, CodeManifestUnknownObjectType, "line %d: SPObject Id=%q Url=%q has ObjectType %q, not allowed by the import schema", o.Line, o.ID, o.URL, o.ObjectType)
	}
	for _, u := range []string{o.URL, fileURL(o)} {
		if why := badURL(u); why != "" {
			v.errs.add(m, CodeManifestBadURL, "line %d: SPObject Id=%q Url=%q: %s", o.Line, o.ID, u, why)
			break
		}
	}
	if want := normGUID(v.p.opts.WebID); want != "" && o.ParentWebID != "" && normGUID(o.ParentWebID) != want {
		v.errs.add(m, CodeManifestWrongWeb, "line %d: SPObject Id=%q Url=%q has ParentWebId %s, but the target web is %s: build the package for the web the job targets (the job's webId)", o.Line, o.ID, o.URL, o.ParentWebID, v.p.opts.WebID)
	}
	if o.ObjectType == "SPListItem" && o.ListItem != nil && o.ListItem.DocID != "" {
		v.trackDocID(normGUID(o.ListItem.DocID))
	}
	if o.ObjectType != "SPFile" {
		return
	}
	v.totals.SPFiles++
	f := o.File
	if f == nil {
		v.errs.add(m, CodeManifestMissingFileElement, "line %d: SPObject Id=%q Url=%q of ObjectType SPFile has no <File> element", o.Line, o.ID, o.URL)
		return
	}
	id := f.ID
	if id == "" {
		id = o.ID
	}
	v.trackFileID(normGUID(id), fileRef{manifest: m, url: firstNonEmpty(f.URL, o.URL), line: o.Line})
	what := fmt.Sprintf("line %d: SPFile Url=%q Id=%q", o.Line, firstNonEmpty(f.URL, o.URL), id)
	v.reference(m, what, f.FileValue, f.HasFileValue, f.FileSizeAttr, f.FileSize)
	for _, ver := range f.Versions {
		v.reference(m, what+fmt.Sprintf(" version %q", ver.Version), ver.FileValue, ver.HasFileValue, ver.FileSizeAttr, ver.FileSize)
	}
}

// trackDocID records a list item's DocId.
func (v *validator) trackDocID(id string) {
	if v.canTrack(id) {
		v.docIDs[id] = true
	}
}

// trackFileID records an SPFile's id.
func (v *validator) trackFileID(id string, ref fileRef) {
	if v.canTrack(id) {
		v.fileIDs[id] = ref
	}
}

// canTrack bounds the id sets to MaxEntries ids each; beyond that the file-without-list-item check is
// dropped rather than letting memory grow with the manifest.
func (v *validator) canTrack(id string) bool {
	if !v.trackIDs || id == "" {
		return false
	}
	if len(v.fileIDs) >= v.p.opts.MaxEntries || len(v.docIDs) >= v.p.opts.MaxEntries {
		v.trackIDs = false
		v.fileIDs, v.docIDs = nil, nil
		return false
	}
	return true
}

// reference checks one FileValue (and FileSize) of manifest m.
func (v *validator) reference(m, what, fileValue string, hasFileValue bool, sizeAttr string, size int64) {
	if !hasFileValue || fileValue == "" {
		v.errs.add(m, CodeManifestMissingFileValue, "%s has no FileValue", what)
		return
	}
	e := v.p.byName[fileValue]
	if e == nil {
		if alt := v.p.byFold[foldName(fileValue)]; alt != nil {
			v.errs.add(m, CodeManifestMissingContent, "%s: FileValue %q names no entry of the package (found %q: blob names are case-sensitive)", what, fileValue, alt.name)
			return
		}
		v.errs.add(m, CodeManifestMissingContent, "%s: FileValue %q names no entry of the package", what, fileValue)
		return
	}
	if e.dir || v.metaNames[e.name] {
		v.errs.add(m, CodeManifestFileValueNotContent, "%s: FileValue %q names a package XML or a directory, not content", what, fileValue)
		return
	}
	v.referenced[e] = true
	if sizeAttr == "" && size < 0 {
		return // FileSize is optional
	}
	if size < 0 {
		v.errs.add(m, CodeManifestBadFileSize, "%s: FileSize %q is not a non-negative integer", what, sizeAttr)
		return
	}
	if size != e.size() {
		v.errs.add(m, CodeManifestSizeMismatch, "%s: FileSize is %d but entry %q is %d bytes", what, size, e.name, e.size())
	}
}

// withXML streams entry e through fn. Format problems are recorded (under e's name); an I/O or context
// error is returned. want (when it has a root) is checked for namespace.
func (v *validator) withXML(e *entry, want packageFile, fn func(x *xmlReader) error) error {
	rc, err := v.p.openEntry(e)
	if err != nil {
		return v.record(e, err)
	}
	defer rc.Close()
	x := newXMLReader(v.ctx, rc, v.p.opts.MaxXMLTokenSize)
	if want.root != "" {
		// Check the namespace once the root is known, whatever fn does next.
		defer func() {
			if x.rootSeen && x.rootElem.Name.Local == want.root && x.rootElem.Name.Space != want.ns {
				v.warns.add(e.name, CodeXMLNamespace, "root element <%s> is in namespace %q, want %q", want.root, x.rootElem.Name.Space, want.ns)
			}
		}()
	}
	return v.record(e, fn(x))
}

// record files a *ValidationError's problems under entry e and returns other errors wrapped.
func (v *validator) record(e *entry, err error) error {
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		for _, pr := range ve.Problems {
			if pr.Entry == "" {
				pr.Entry = e.name
			}
			v.errs.addProblem(pr)
		}
		return nil
	}
	if ioErr := classifyIO(err, "read "+e.name); ioErr != nil {
		return ioErr // a context error, or an I/O error not yet wrapped
	}
	return err // an I/O error the entry reader already wrapped
}

// item makes the Item of an entry.
func (v *validator) item(e *entry, k Kind) Item {
	p := v.p
	return Item{Name: e.name, Container: k, Size: e.size(), Open: func() (io.ReadCloser, error) { return p.openEntry(e) }}
}

func hasXMLSuffix(name string) bool {
	return len(name) >= 4 && strings.EqualFold(name[len(name)-4:], ".xml")
}

// normGUID canonicalizes a GUID for comparison: lower case, without braces.
func fileURL(o SPObject) string {
	if o.File == nil {
		return ""
	}
	return o.File.URL
}

// badURL says why a server- or web-relative object URL cannot be imported ("" when it can).
func badURL(u string) string {
	if strings.Contains(u, "\\") {
		return "the URL has a backslash"
	}
	for _, r := range u {
		if r < 0x20 || r == 0x7f {
			return "the URL has a control character"
		}
	}
	for _, seg := range strings.Split(u, "/") {
		if seg == "." || seg == ".." {
			return "the URL has a \"" + seg + "\" segment"
		}
	}
	return ""
}

func normGUID(s string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(s), "{}"))
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
