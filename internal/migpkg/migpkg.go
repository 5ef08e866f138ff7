// Package migpkg takes in a SharePoint Online migration package — a zip uploaded to a staging blob — and
// decides whether it can be staged into the SPO-provided containers.
//
// The package is read through an [io.ReaderAt] (the caller adapts a blob client with ranged reads), so
// memory stays bounded whatever the package size. Intake has two steps:
//
//  1. [Open] reads only the zip's central directory (at the end of the archive) and runs zip safety:
//     entry names, duplicates, symlinks, encryption, compression methods, sizes, ratios and counts.
//  2. [Package.Validate] streams every package XML at the zip root through an XML tokenizer (never a
//     DOM) and checks the package against the Migration API's rules: required files, manifests listed in
//     SystemData.xml, FileValue references, FileSize values, ExportSettings SourceType and SiteUrl.
//
// After a successful Validate, [Package.Items] lists every blob to upload: package XMLs (plus empty
// documents for absent optional files) for the metadata container, and content entries for the data
// container under their path, which equals the FileValue that refers to them.
//
// An invalid package is reported as a [*ValidationError] listing every [Problem]; retrying cannot fix it.
// A failure of the underlying ReaderAt is returned wrapped, never as a ValidationError.
//
// [ScanManifest], [ParseSystemData] and [ParseExportSettings] are the streaming parsers, reusable by
// the SPO emulator. [Builder] writes complete, valid packages for tests and the demo.
package migpkg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
)

// Defaults of [Options].
const (
	// DefaultMaxEntries is the default Options.MaxEntries.
	DefaultMaxEntries = 50_000
	// DefaultMaxDirectorySize is the default Options.MaxDirectorySize (16 MiB).
	DefaultMaxDirectorySize = 16 << 20
	// DefaultMaxFileSize is the default Options.MaxFileSize: 250 GiB, taken as SharePoint Online's current
	// per-file limit (Microsoft's service limits say 250 GB). The migration reference gives no number of its
	// own: §6 quotes "up to 15 GB (the limit set by SharePoint)" from the current Migration API page and
	// "over 15 GB, up to SPO's maximum" from the 2023 page, calls the two conflicting, and says to treat
	// SPO's current file limit as effective and verify. Set 15 << 30 to follow the stricter reading.
	DefaultMaxFileSize = 250 << 30
	// DefaultMaxTotalSize is the default Options.MaxTotalSize (256 GiB: one file at DefaultMaxFileSize plus
	// its metadata).
	DefaultMaxTotalSize = 256 << 30
	// DefaultMaxCompressionRatio is the default Options.MaxCompressionRatio (100:1).
	DefaultMaxCompressionRatio = 100
	// DefaultCompressionRatioMinSize is the default Options.CompressionRatioMinSize (1 MiB).
	DefaultCompressionRatioMinSize = 1 << 20
	// DefaultMaxXMLTokenSize is the default Options.MaxXMLTokenSize (1 MiB).
	DefaultMaxXMLTokenSize = 1 << 20
	// DefaultMaxProblems is the default Options.MaxProblems.
	DefaultMaxProblems = 1000
)

// SharePoint's package guidance: at most 250 items or 250 MB per package, whichever comes first; a bigger
// file goes in a package of its own (reference §6). Exceeding it is a warning, not an error.
const (
	// GuidanceMaxItems is the guidance's item count. Every content file (each version) counts.
	GuidanceMaxItems = 250
	// GuidanceMaxBytes is the guidance's size, 250 MB (decimal).
	GuidanceMaxBytes = 250_000_000
)

// Options bounds what Open and Validate accept. The zero value is usable: every zero field takes its
// default (see setDefaults).
type Options struct {
	// WebID, when set, is the target web's id (the job's gWebId): every SPObject's ParentWebId must equal
	// it (case-insensitively, braces ignored), because SharePoint checks each object against the web it
	// imports into and fails every mismatch. Empty: not checked.
	WebID string
	// MaxEntries is the most zip entries accepted (default 50,000). Memory: every entry costs its parsed
	// directory record, roughly 300 bytes plus its name, for the life of the Package.
	MaxEntries int
	// MaxDirectorySize bounds how many bytes of central directory Open reads and parses, whatever the
	// archive declares (default 16 MiB). Memory: the parsed directory takes up to a few times this.
	MaxDirectorySize int64
	// MaxTotalSize is the most total uncompressed bytes accepted (default 256 GiB).
	MaxTotalSize int64
	// MaxFileSize is the largest single entry accepted (default 250 GiB, see DefaultMaxFileSize).
	MaxFileSize int64
	// MaxCompressionRatio is the highest uncompressed/compressed ratio accepted for an entry at least
	// CompressionRatioMinSize bytes long (default 100, as Apache POI's zip bomb guard).
	MaxCompressionRatio int64
	// CompressionRatioMinSize exempts entries smaller than this from the ratio check (default 1 MiB): a
	// small file of blanks is not a bomb. Use 1 to check every non-empty entry.
	CompressionRatioMinSize int64
	// MaxXMLTokenSize bounds a single XML token (a start tag with its attributes, or a text run) while
	// streaming package XML (default 1 MiB). Memory: one token of this size is buffered at a time.
	MaxXMLTokenSize int
	// MaxProblems bounds how many problems (and, separately, warnings) are recorded (default 1000).
	// Memory: one Problem (a few hundred bytes) each.
	MaxProblems int
}

// setDefaults fills zero fields with their defaults.
func (o *Options) setDefaults() {
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.MaxDirectorySize <= 0 {
		o.MaxDirectorySize = DefaultMaxDirectorySize
	}
	if o.MaxTotalSize <= 0 {
		o.MaxTotalSize = DefaultMaxTotalSize
	}
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = DefaultMaxFileSize
	}
	if o.MaxCompressionRatio <= 0 {
		o.MaxCompressionRatio = DefaultMaxCompressionRatio
	}
	if o.CompressionRatioMinSize <= 0 {
		o.CompressionRatioMinSize = DefaultCompressionRatioMinSize
	}
	if o.MaxXMLTokenSize <= 0 {
		o.MaxXMLTokenSize = DefaultMaxXMLTokenSize
	}
	if o.MaxProblems <= 0 {
		o.MaxProblems = DefaultMaxProblems
	}
}

// Kind says which SPO container an item goes to.
type Kind int

const (
	// Metadata is the metadata (manifest) container: package XMLs, at its root.
	Metadata Kind = iota + 1
	// Data is the data (content) container: content files, under their FileValue.
	Data
)

// String returns "metadata" or "data".
func (k Kind) String() string {
	switch k {
	case Metadata:
		return "metadata"
	case Data:
		return "data"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Item is one blob to upload.
type Item struct {
	// Name is the blob name in its container: the zip entry name (for content, equal to the FileValue
	// that refers to it).
	Name string
	// Container is the container the blob goes to.
	Container Kind
	// Size is the plaintext size in bytes.
	Size int64
	// Open streams the plaintext. The reader yields exactly Size bytes: an entry producing more or fewer,
	// or failing its CRC-32, makes Read return a *ValidationError; a failure of the package's ReaderAt is
	// returned wrapped. Open may be called concurrently and repeatedly (each call reads the entry again).
	// Memory: about 40 KiB per open deflated entry (the decompressor's window).
	Open func() (io.ReadCloser, error)
	// Synthetic marks an absent optional package XML added as an empty document.
	Synthetic bool
}

// Totals sums up a validated package.
type Totals struct {
	// ContentFiles is the number of content entries (data container).
	ContentFiles int
	// ContentBytes is their total uncompressed size.
	ContentBytes int64
	// MetadataFiles is the number of metadata items, synthetic ones included.
	MetadataFiles int
	// MetadataBytes is their total size.
	MetadataBytes int64
	// Manifests is the number of manifests scanned.
	Manifests int
	// SPObjects is the number of SPObject elements in all manifests.
	SPObjects int
	// SPFiles is the number of SPObjects of ObjectType SPFile.
	SPFiles int
}

// ErrNotValidated is returned by [Package.Items] before a successful [Package.Validate].
var ErrNotValidated = errors.New("migpkg: package not validated")

// Package is an opened migration package. Validate must be called (and succeed) before Items.
// A Package is not safe for concurrent use, except for the Open functions of its Items.
type Package struct {
	// Warnings lists what is worth knowing but does not make the package invalid (unreferenced content,
	// optional files added, guidance exceeded…). Validate sets it, also when it finds the package invalid.
	Warnings []Problem

	opts    Options
	r       *tagReaderAt
	size    int64
	entries []*entry
	byName  map[string]*entry // exact entry name → entry
	byFold  map[string]*entry // case-folded entry name → first entry

	validated bool
	items     []Item
	totals    Totals
}

// Open reads the zip directory of a package of size bytes through r and checks it for safety. It reads
// only the end of the archive (the central directory), never entry data. An unsafe or unreadable archive
// yields a *ValidationError listing every problem; a failing r yields its error, wrapped.
func Open(r io.ReaderAt, size int64, opts Options) (*Package, error) {
	opts.setDefaults()
	tr := &tagReaderAt{r: r, size: size}
	p := &Package{opts: opts, r: tr, size: size}
	if err := p.readDirectory(); err != nil {
		return nil, err
	}
	return p, nil
}

// Items returns the blobs to upload: content entries (data container) in zip order, then the metadata
// items in name order, synthetic ones included. It returns ErrNotValidated before a successful Validate.
func (p *Package) Items() ([]Item, error) {
	if !p.validated {
		return nil, ErrNotValidated
	}
	return p.items, nil
}

// Totals returns the package's totals; zero before a successful Validate.
func (p *Package) Totals() Totals {
	return p.totals
}

// ioError marks an error of the caller's ReaderAt, to tell it apart from format errors surfacing through
// archive/zip and compress/flate.
type ioError struct{ err error }

func (e *ioError) Error() string { return e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// errNegativeOffset is returned by tagReaderAt for a negative offset, from a corrupt directory.
var errNegativeOffset = errors.New("migpkg: negative offset in zip structures")

// errDirectoryBudget is returned by tagReaderAt once Open has read more than its directory budget.
var errDirectoryBudget = errors.New("migpkg: central directory read budget exceeded")

// tagReaderAt wraps the caller's ReaderAt: it tags failures as ioError, keeps reads within the package
// size (offsets from a corrupt directory must not reach the caller's ReaderAt as out-of-range reads, which
// a blob adapter would fail as I/O errors), and while a budget is set (during Open) it refuses to read
// more than the budget in total.
type tagReaderAt struct {
	r      io.ReaderAt
	size   int64
	budget atomic.Int64 // bytes left while limited; ignored when !limited
	limit  atomic.Bool
	read   atomic.Int64 // bytes read, for tests
}

func (t *tagReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if off >= t.size {
		return 0, io.EOF
	}
	short := false
	if int64(len(b)) > t.size-off {
		b, short = b[:t.size-off], true
	}
	if t.limit.Load() && t.budget.Add(-int64(len(b))) < 0 {
		return 0, errDirectoryBudget
	}
	n, err := t.r.ReadAt(b, off)
	if short && err == nil {
		err = io.EOF
	}
	t.read.Add(int64(n))
	if err != nil && err != io.EOF {
		err = &ioError{err: err}
	}
	return n, err
}

// classifyIO turns an error met while reading the package into either a wrapped I/O error (ioError,
// context) or nil, meaning the caller should report it as a format problem.
func classifyIO(err error, what string) error {
	var ioe *ioError
	if errors.As(err, &ioe) {
		return fmt.Errorf("migpkg: %s: %w", what, ioe.err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("migpkg: %s: %w", what, err)
	}
	return nil
}

// isRootName reports whether an entry name is at the zip root.
func isRootName(name string) bool {
	return name != "" && !strings.Contains(name, "/")
}
