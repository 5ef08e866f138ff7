package migpkg

import (
	"fmt"
	"strings"
)

// Problem codes. They are stable: callers, logs and reports may match on them. A code names the kind of
// problem; [Problem.Entry] names where it is and [Problem.Message] says what exactly is wrong.
const (
	// CodeZipMalformed: the package is not a readable zip archive (no end of central directory, corrupt
	// directory headers).
	CodeZipMalformed = "zip.malformed"
	// CodeZipDirectoryTooLarge: the central directory is larger than Options.MaxDirectorySize.
	CodeZipDirectoryTooLarge = "zip.directory-too-large"
	// CodeZipTooManyEntries: the archive has more entries than Options.MaxEntries.
	CodeZipTooManyEntries = "zip.too-many-entries"
	// CodeZipTotalTooLarge: the declared uncompressed sizes add up to more than Options.MaxTotalSize.
	CodeZipTotalTooLarge = "zip.total-too-large"
	// CodeZipEmptyName: an entry has an empty name.
	CodeZipEmptyName = "zip.empty-name"
	// CodeZipInvalidName: an entry name is not valid UTF-8, contains control characters or is longer than
	// a blob name may be (1,024 characters).
	CodeZipInvalidName = "zip.invalid-name"
	// CodeZipAbsolutePath: an entry name starts with "/".
	CodeZipAbsolutePath = "zip.absolute-path"
	// CodeZipDotDot: an entry name has a ".." segment.
	CodeZipDotDot = "zip.dot-dot"
	// CodeZipUncleanPath: an entry name has a "." segment or an empty segment ("a//b").
	CodeZipUncleanPath = "zip.unclean-path"
	// CodeZipBackslash: an entry name contains a backslash.
	CodeZipBackslash = "zip.backslash"
	// CodeZipDriveLetter: an entry name starts with a drive letter ("C:").
	CodeZipDriveLetter = "zip.drive-letter"
	// CodeZipDuplicate: two entries have the same name.
	CodeZipDuplicate = "zip.duplicate"
	// CodeZipCaseDuplicate: two entries have names that differ only in case (SharePoint URLs are
	// case-insensitive).
	CodeZipCaseDuplicate = "zip.case-duplicate"
	// CodeZipSymlink: an entry is a symbolic link (mode bits in the external attributes).
	CodeZipSymlink = "zip.symlink"
	// CodeZipSpecialFile: an entry is a device, named pipe, socket or other non-regular file.
	CodeZipSpecialFile = "zip.special-file"
	// CodeZipEncrypted: an entry is encrypted (general purpose flag bit 0).
	CodeZipEncrypted = "zip.encrypted"
	// CodeZipUnsupportedMethod: an entry uses a compression method other than Store (0) or Deflate (8).
	CodeZipUnsupportedMethod = "zip.unsupported-method"
	// CodeZipCompressionRatio: an entry's uncompressed/compressed ratio exceeds Options.MaxCompressionRatio.
	CodeZipCompressionRatio = "zip.compression-ratio"
	// CodeZipFileTooLarge: an entry is larger than Options.MaxFileSize (SharePoint's file size limit).
	CodeZipFileTooLarge = "zip.file-too-large"
	// CodeZipSizeMismatch: an entry's data does not have its declared size (detected from the directory for
	// stored entries, or while reading).
	CodeZipSizeMismatch = "zip.size-mismatch"
	// CodeZipChecksum: an entry's data does not match its CRC-32.
	CodeZipChecksum = "zip.checksum"
	// CodeZipCorruptData: an entry's local header or compressed data is corrupt.
	CodeZipCorruptData = "zip.corrupt-data"

	// CodePackageMissingFile: a required package XML (or a manifest listed in SystemData.xml) is absent.
	CodePackageMissingFile = "package.missing-file"
	// CodePackageUnsupportedFile: the package holds a file this service cannot stage (ArchivedFiles.xml).
	CodePackageUnsupportedFile = "package.unsupported-file"
	// CodePackageUnknownXML (warning): an XML at the zip root is neither a known package file nor a listed
	// manifest nor referenced by a FileValue; it is uploaded to the metadata container anyway.
	CodePackageUnknownXML = "package.unknown-xml"
	// CodePackageOptionalFileAdded (warning): an optional package XML is absent and an empty document is
	// added in its place (see [Item.Synthetic]).
	CodePackageOptionalFileAdded = "package.optional-file-added"
	// CodePackageUnreferencedContent (warning): a content entry no FileValue refers to.
	CodePackageUnreferencedContent = "package.unreferenced-content"
	// CodePackageOverItemGuidance (warning): more content files than SharePoint's guidance (250 items).
	CodePackageOverItemGuidance = "package.over-item-guidance"
	// CodePackageOverSizeGuidance (warning): more content bytes than SharePoint's guidance (250 MB) in a
	// package with more than one file.
	CodePackageOverSizeGuidance = "package.over-size-guidance"
	// CodePackageTooManyProblems: more problems than Options.MaxProblems; the rest were not recorded.
	CodePackageTooManyProblems = "package.too-many-problems"

	// CodeXMLMalformed: an XML document is not well-formed.
	CodeXMLMalformed = "xml.malformed"
	// CodeXMLUnsupportedEncoding: an XML document declares an encoding other than UTF-8.
	CodeXMLUnsupportedEncoding = "xml.unsupported-encoding"
	// CodeXMLTokenTooLarge: a single XML token (a start tag with its attributes, a text run) is larger than
	// Options.MaxXMLTokenSize.
	CodeXMLTokenTooLarge = "xml.token-too-large"
	// CodeXMLWrongRoot: an XML document's root element is not the one its file name requires.
	CodeXMLWrongRoot = "xml.wrong-root"
	// CodeXMLNamespace (warning): the root element is in an unexpected namespace.
	CodeXMLNamespace = "xml.namespace"

	// CodeManifestMissingFileElement: an SPObject of ObjectType SPFile has no File child.
	CodeManifestMissingFileElement = "manifest.missing-file-element"
	// CodeManifestMissingFileValue: a File (or version File) element has no FileValue attribute.
	CodeManifestMissingFileValue = "manifest.missing-filevalue"
	// CodeManifestMissingContent: a FileValue names no entry of the package.
	CodeManifestMissingContent = "manifest.missing-content"
	// CodeManifestFileValueNotContent: a FileValue names a package XML or a directory entry.
	CodeManifestFileValueNotContent = "manifest.filevalue-not-content"
	// CodeManifestSizeMismatch: a FileSize attribute differs from the entry's uncompressed size.
	CodeManifestSizeMismatch = "manifest.size-mismatch"
	// CodeManifestBadFileSize: a FileSize attribute is not a non-negative integer.
	CodeManifestBadFileSize = "manifest.bad-filesize"
	// CodeManifestUnknownObjectType: an SPObject's ObjectType is not allowed by the import schema.
	CodeManifestUnknownObjectType = "manifest.unknown-objecttype"
	// CodeManifestDeploymentRoles (warning): the manifest has a DeploymentRoles object, reported to fail
	// with "Updates to system roles is not allowed".
	CodeManifestDeploymentRoles = "manifest.deployment-roles"
	// CodeManifestFileWithoutListItem (warning): an SPFile has no SPListItem with DocId equal to its Id;
	// SharePoint is reported to skip such files silently.
	CodeManifestFileWithoutListItem = "manifest.file-without-listitem"
	// CodeManifestTooManyVersions: a File element has more Versions than SharePoint keeps (50,000).
	CodeManifestTooManyVersions = "manifest.too-many-versions"
	// CodeManifestBadURL: an SPObject's or SPFile's Url has a "." or ".." segment, a backslash or a
	// control character; SharePoint refuses such items one by one.
	CodeManifestBadURL = "manifest.bad-url"
	// CodeManifestWrongWeb: an SPObject's ParentWebId is not the target web's id (Options.WebID).
	// SharePoint would fail every such object (as a JobError each), so the package is refused up front.
	CodeManifestWrongWeb = "manifest.wrong-web"

	// CodeSystemDataBadManifestName: a ManifestFile Name is empty or not a zip-root name.
	CodeSystemDataBadManifestName = "systemdata.bad-manifest-name"
	// CodeSystemDataDuplicateManifest (warning): a manifest is listed twice.
	CodeSystemDataDuplicateManifest = "systemdata.duplicate-manifest"
	// CodeSystemDataManifestNotListed (warning): Manifest.xml is present but not listed in SystemData.xml.
	CodeSystemDataManifestNotListed = "systemdata.manifest-not-listed"
	// CodeSystemDataNoManifests (warning): SystemData.xml lists no ManifestFile.
	CodeSystemDataNoManifests = "systemdata.no-manifests"

	// CodeExportSettingsMissingSourceType: ExportSettings has no SourceType (mandatory since April 2023).
	CodeExportSettingsMissingSourceType = "exportsettings.missing-sourcetype"
	// CodeExportSettingsUnknownSourceType (warning): SourceType is not one of the documented values.
	CodeExportSettingsUnknownSourceType = "exportsettings.unknown-sourcetype"
	// CodeExportSettingsMissingSiteURL: ExportSettings has no (or an empty) SiteUrl.
	CodeExportSettingsMissingSiteURL = "exportsettings.missing-siteurl"

	// CodeUserGroupMissingSystemID: a User has no SystemId attribute (reported to kill the job).
	CodeUserGroupMissingSystemID = "usergroup.missing-systemid"
)

// Problem is one thing wrong with (or, as a warning, worth knowing about) a package.
type Problem struct {
	// Entry is the zip entry (or package file) the problem is about; empty when it concerns the whole
	// archive.
	Entry string
	// Code is a stable machine code, one of the Code… constants.
	Code string
	// Message says precisely what is wrong.
	Message string
}

// String formats the problem as "[code] entry: message".
func (p Problem) String() string {
	if p.Entry == "" {
		return "[" + p.Code + "] " + p.Message
	}
	return fmt.Sprintf("[%s] %q: %s", p.Code, p.Entry, p.Message)
}

// ValidationError reports an invalid package: retrying cannot fix it. I/O errors of the underlying
// [io.ReaderAt] are never reported as a ValidationError; use errors.As to tell the two apart.
type ValidationError struct {
	// Problems lists every problem found (at most Options.MaxProblems, then one
	// CodePackageTooManyProblems).
	Problems []Problem
}

// maxErrorProblems bounds how many problems Error spells out.
const maxErrorProblems = 20

// Error lists the problems (the first 20, then a count of the rest).
func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "migpkg: invalid package (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteByte('s')
	}
	b.WriteString(")")
	for i, p := range e.Problems {
		if i == maxErrorProblems {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Has reports whether the error holds a problem with the given code.
func (e *ValidationError) Has(code string) bool {
	for _, p := range e.Problems {
		if p.Code == code {
			return true
		}
	}
	return false
}

// problems collects problems up to a cap.
type problems struct {
	max     int
	list    []Problem
	dropped int
}

func (ps *problems) add(entry, code, format string, args ...any) {
	if ps.max > 0 && len(ps.list) >= ps.max {
		ps.dropped++
		return
	}
	ps.list = append(ps.list, Problem{Entry: entry, Code: code, Message: fmt.Sprintf(format, args...)})
}

func (ps *problems) addProblem(p Problem) {
	if ps.max > 0 && len(ps.list) >= ps.max {
		ps.dropped++
		return
	}
	ps.list = append(ps.list, p)
}

// result returns the collected problems, with a closing CodePackageTooManyProblems when some were dropped.
func (ps *problems) result() []Problem {
	if ps.dropped == 0 {
		return ps.list
	}
	return append(ps.list, Problem{Code: CodePackageTooManyProblems,
		Message: fmt.Sprintf("%d more problems not recorded (Options.MaxProblems is %d)", ps.dropped, ps.max)})
}

// err returns a *ValidationError for the collected problems, or nil.
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps.result()}
}

// invalid returns a *ValidationError with one problem.
func invalid(entry, code, format string, args ...any) *ValidationError {
	return &ValidationError{Problems: []Problem{{Entry: entry, Code: code, Message: fmt.Sprintf(format, args...)}}}
}
