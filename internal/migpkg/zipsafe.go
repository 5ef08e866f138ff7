package migpkg

import (
	"archive/zip"
	"compress/flate"
	"errors"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"strings"
	"unicode/utf8"
)

// directorySlack is what Open may read besides the central directory itself: archive/zip looks for the
// end of central directory record in the last 1 KiB and then the last 65 KiB, reads the zip64 records,
// and refills a 4 KiB buffer.
const directorySlack = 128 << 10

// maxBlobNameLen is Azure Blob storage's limit on a blob name, in characters.
const maxBlobNameLen = 1024

// zip general purpose flag bit 0: the entry is encrypted.
const flagEncrypted = 0x1

// entry is a checked zip entry.
type entry struct {
	f    *zip.File
	name string
	dir  bool
}

// size is the entry's declared uncompressed size.
func (e *entry) size() int64 { return int64(e.f.UncompressedSize64) }

// readDirectory parses the central directory within the directory budget and runs zip safety.
func (p *Package) readDirectory() error {
	budget := p.opts.MaxDirectorySize
	if budget > math.MaxInt64-directorySlack {
		budget = math.MaxInt64 - directorySlack
	}
	p.r.budget.Store(budget + directorySlack)
	p.r.limit.Store(true)
	zr, err := zip.NewReader(p.r, p.size)
	p.r.limit.Store(false)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // insecure paths are reported below, precisely
		if ioErr := classifyIO(err, "read zip directory"); ioErr != nil {
			return ioErr
		}
		if errors.Is(err, errDirectoryBudget) {
			return invalid("", CodeZipDirectoryTooLarge,
				"central directory is larger than %d bytes (Options.MaxDirectorySize)", p.opts.MaxDirectorySize)
		}
		return invalid("", CodeZipMalformed, "not a readable zip archive: %v", err)
	}

	ps := problems{max: p.opts.MaxProblems}
	if len(zr.File) > p.opts.MaxEntries {
		ps.add("", CodeZipTooManyEntries, "archive has %d entries, more than %d (Options.MaxEntries)",
			len(zr.File), p.opts.MaxEntries)
		return ps.err() // do not spend time (or problems) on each of them
	}

	p.entries = make([]*entry, 0, len(zr.File))
	p.byName = make(map[string]*entry, len(zr.File))
	p.byFold = make(map[string]*entry, len(zr.File))
	var total uint64
	for _, f := range zr.File {
		e := &entry{f: f, name: f.Name, dir: strings.HasSuffix(f.Name, "/")}
		p.checkEntry(&ps, e)
		if _, ok := p.byName[e.name]; ok {
			ps.add(e.name, CodeZipDuplicate, "name appears more than once in the archive")
			continue
		}
		fold := foldName(e.name)
		if prev, ok := p.byFold[fold]; ok {
			ps.add(e.name, CodeZipCaseDuplicate, "name differs only in case from %q (SharePoint URLs are case-insensitive)", prev.name)
		} else {
			p.byFold[fold] = e
		}
		p.byName[e.name] = e
		p.entries = append(p.entries, e)
		if s, carry := bits.Add64(total, f.UncompressedSize64, 0); carry != 0 {
			total = math.MaxUint64
		} else {
			total = s
		}
	}
	if total > uint64(p.opts.MaxTotalSize) {
		ps.add("", CodeZipTotalTooLarge, "entries total %d uncompressed bytes, more than %d (Options.MaxTotalSize)",
			total, p.opts.MaxTotalSize)
	}
	return ps.err()
}

// checkEntry runs the per-entry safety checks.
func (p *Package) checkEntry(ps *problems, e *entry) {
	f := e.f
	checkName(ps, e.name)

	mode := f.Mode()
	switch {
	case mode&fs.ModeSymlink != 0:
		ps.add(e.name, CodeZipSymlink, "entry is a symbolic link (mode %v)", mode)
	case mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeIrregular) != 0:
		ps.add(e.name, CodeZipSpecialFile, "entry is not a regular file (mode %v)", mode)
	case mode.IsDir() && !e.dir:
		ps.add(e.name, CodeZipSpecialFile, "entry has directory attributes but its name does not end with \"/\"")
	}
	if f.Flags&flagEncrypted != 0 {
		ps.add(e.name, CodeZipEncrypted, "entry is encrypted (general purpose flag bit 0); packages must be plain zips")
	}
	if f.Method != zip.Store && f.Method != zip.Deflate {
		ps.add(e.name, CodeZipUnsupportedMethod, "compression method %d is not supported (only 0 store and 8 deflate)", f.Method)
	}
	if e.dir && (f.UncompressedSize64 != 0 || f.CompressedSize64 != 0) {
		ps.add(e.name, CodeZipSizeMismatch, "directory entry declares %d bytes of data", f.UncompressedSize64)
	}
	if f.Method == zip.Store && f.CompressedSize64 != f.UncompressedSize64 {
		ps.add(e.name, CodeZipSizeMismatch, "stored entry declares %d compressed but %d uncompressed bytes",
			f.CompressedSize64, f.UncompressedSize64)
	}
	if f.UncompressedSize64 > uint64(p.opts.MaxFileSize) {
		ps.add(e.name, CodeZipFileTooLarge, "entry is %d bytes, larger than SharePoint's file size limit of %d bytes (Options.MaxFileSize)",
			f.UncompressedSize64, p.opts.MaxFileSize)
	}
	if f.UncompressedSize64 >= uint64(p.opts.CompressionRatioMinSize) && ratioAbove(f.UncompressedSize64, f.CompressedSize64, uint64(p.opts.MaxCompressionRatio)) {
		ps.add(e.name, CodeZipCompressionRatio, "entry expands %d compressed bytes to %d, a ratio above %d:1 (Options.MaxCompressionRatio)",
			f.CompressedSize64, f.UncompressedSize64, p.opts.MaxCompressionRatio)
	}
}

// ratioAbove reports whether uncompressed > compressed*ratio, without overflow.
func ratioAbove(uncompressed, compressed, ratio uint64) bool {
	hi, lo := bits.Mul64(compressed, ratio)
	return hi == 0 && uncompressed > lo
}

// checkName reports unsafe or unusable entry names.
func checkName(ps *problems, name string) {
	if name == "" {
		ps.add(name, CodeZipEmptyName, "entry has an empty name")
		return
	}
	if !utf8.ValidString(name) {
		ps.add(name, CodeZipInvalidName, "name is not valid UTF-8")
		return
	}
	if n := utf8.RuneCountInString(name); n > maxBlobNameLen {
		ps.add(name, CodeZipInvalidName, "name is %d characters long, more than a blob name may be (%d)", n, maxBlobNameLen)
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		ps.add(name, CodeZipInvalidName, "name contains control characters")
	}
	if strings.Contains(name, `\`) {
		ps.add(name, CodeZipBackslash, `name contains a backslash; zip names use "/" as separator`)
	}
	if len(name) >= 2 && name[1] == ':' && isASCIILetter(name[0]) {
		ps.add(name, CodeZipDriveLetter, "name starts with a drive letter (%q)", name[:2])
	}
	rel := name
	if strings.HasPrefix(name, "/") {
		ps.add(name, CodeZipAbsolutePath, "name is an absolute path")
		rel = strings.TrimLeft(name, "/")
	}
	rel = strings.TrimSuffix(rel, "/") // a directory entry
	var dotDot, unclean bool
	for seg := range strings.SplitSeq(rel, "/") {
		switch seg {
		case "..":
			dotDot = true
		case ".", "":
			unclean = true
		}
	}
	if dotDot {
		ps.add(name, CodeZipDotDot, `name has a ".." segment`)
	}
	if unclean {
		ps.add(name, CodeZipUncleanPath, `name has a "." or empty segment`)
	}
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// foldName is the key under which names differing only in case collide.
func foldName(name string) string { return strings.ToLower(name) }

// openEntry streams an entry's plaintext, enforcing its declared size and CRC-32.
func (p *Package) openEntry(e *entry) (io.ReadCloser, error) {
	raw, err := e.f.OpenRaw()
	if err != nil {
		if ioErr := classifyIO(err, "open "+e.name); ioErr != nil {
			return nil, ioErr
		}
		return nil, invalid(e.name, CodeZipCorruptData, "bad local file header: %v", err)
	}
	var rc io.ReadCloser
	switch e.f.Method {
	case zip.Store:
		rc = io.NopCloser(raw)
	case zip.Deflate:
		rc = flate.NewReader(raw)
	default:
		return nil, invalid(e.name, CodeZipUnsupportedMethod, "compression method %d is not supported", e.f.Method)
	}
	return &entryReader{name: e.name, rc: rc, declared: e.size(), left: e.size(),
		crc: crc32.NewIEEE(), wantCRC: e.f.CRC32}, nil
}

// entryReader yields exactly the declared number of bytes of an entry, then checks its CRC-32. It never
// asks the decompressor for more than one byte past the declared size, so a lying header cannot make it
// produce more.
type entryReader struct {
	name     string
	rc       io.ReadCloser
	declared int64
	left     int64
	crc      hash.Hash32
	wantCRC  uint32
	err      error // sticky
}

func (r *entryReader) Read(b []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(b) == 0 {
		return 0, nil
	}
	if int64(len(b)) > r.left+1 {
		b = b[:r.left+1]
	}
	n, err := r.rc.Read(b)
	if int64(n) > r.left {
		n = int(r.left)
		r.left = 0
		r.crc.Write(b[:n])
		r.err = invalid(r.name, CodeZipSizeMismatch, "entry data is longer than its declared %d bytes", r.declared)
		return n, r.err
	}
	r.crc.Write(b[:n])
	r.left -= int64(n)
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF:
		if r.left > 0 {
			r.err = invalid(r.name, CodeZipSizeMismatch, "entry data ends after %d bytes, declared %d", r.declared-r.left, r.declared)
			return n, r.err
		}
		if got := r.crc.Sum32(); got != r.wantCRC {
			r.err = invalid(r.name, CodeZipChecksum, "entry data has CRC-32 %08x, declared %08x", got, r.wantCRC)
			return n, r.err
		}
		r.err = io.EOF
		return n, io.EOF
	default:
		if ioErr := classifyIO(err, "read "+r.name); ioErr != nil {
			r.err = ioErr
		} else {
			r.err = invalid(r.name, CodeZipCorruptData, "entry data is corrupt: %v", err)
		}
		return n, r.err
	}
}

func (r *entryReader) Close() error { return r.rc.Close() }

var (
	_ io.ReadCloser = (*entryReader)(nil)
	_ io.ReaderAt   = (*tagReaderAt)(nil)
	_ error         = (*ValidationError)(nil)
	_ error         = (*ioError)(nil)
)
