package migpkg

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"strings"
	"testing"
	"testing/iotest"
)

func file(name string, body string) zipEntry {
	return zipEntry{hdr: zip.FileHeader{Name: name, Method: zip.Deflate}, body: []byte(body)}
}

func deflated(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	fw.Close()
	return buf.Bytes()
}

// rawDeflate is an entry whose compressed data is deflate(real) but whose header declares size and crc.
func rawDeflate(t testing.TB, name string, real []byte, declaredSize uint64, crc uint32) zipEntry {
	c := deflated(t, real)
	return zipEntry{raw: true, body: c, hdr: zip.FileHeader{Name: name, Method: zip.Deflate,
		CompressedSize64: uint64(len(c)), UncompressedSize64: declaredSize, CRC32: crc}}
}

func TestOpenRejects(t *testing.T) {
	zeros := make([]byte, 2<<20)
	symlink := zipEntry{hdr: zip.FileHeader{Name: "link", Method: zip.Store}, body: []byte("/etc/passwd")}
	symlink.hdr.SetMode(fs.ModeSymlink | 0o777)
	fifo := zipEntry{hdr: zip.FileHeader{Name: "fifo", Method: zip.Store}}
	fifo.hdr.SetMode(fs.ModeNamedPipe | 0o644)
	encrypted := zipEntry{raw: true, body: []byte("0123456789ab"), hdr: zip.FileHeader{Name: "secret.bin", Method: zip.Store,
		Flags: 0x1, CompressedSize64: 12, UncompressedSize64: 12}}
	bzip2 := zipEntry{raw: true, body: []byte("BZh9"), hdr: zip.FileHeader{Name: "data.bz2", Method: 12,
		CompressedSize64: 4, UncompressedSize64: 100}}
	storedLie := zipEntry{raw: true, body: []byte("abc"), hdr: zip.FileHeader{Name: "stored.bin", Method: zip.Store,
		CompressedSize64: 3, UncompressedSize64: 300, CRC32: crc32.ChecksumIEEE([]byte("abc"))}}
	// archive/zip refuses to write data to a directory: write "dirx" and rename it in the raw bytes.
	dirWithData := bytes.ReplaceAll(makeZip(t, zipEntry{raw: true, body: []byte("x"), hdr: zip.FileHeader{Name: "dirx",
		Method: zip.Store, CompressedSize64: 1, UncompressedSize64: 1, CRC32: crc32.ChecksumIEEE([]byte("x"))}}), []byte("dirx"), []byte("dir/"))
	var many []zipEntry
	for i := range 5 {
		many = append(many, file(fmt.Sprintf("f%d.txt", i), "x"))
	}
	var longNames []zipEntry
	for i := range 2000 {
		longNames = append(longNames, zipEntry{hdr: zip.FileHeader{Name: fmt.Sprintf("%0100d", i), Method: zip.Store}})
	}

	tests := []struct {
		desc    string
		entries []zipEntry
		data    []byte // instead of entries
		opts    Options
		code    string
		entry   string
	}{
		{desc: "absolute path", entries: []zipEntry{file("/etc/passwd", "x")}, code: CodeZipAbsolutePath, entry: "/etc/passwd"},
		{desc: "dot-dot", entries: []zipEntry{file("../x", "x")}, code: CodeZipDotDot, entry: "../x"},
		{desc: "inner dot-dot", entries: []zipEntry{file("a/../../x", "x")}, code: CodeZipDotDot, entry: "a/../../x"},
		{desc: "backslash", entries: []zipEntry{file(`a\b`, "x")}, code: CodeZipBackslash, entry: `a\b`},
		{desc: "drive letter", entries: []zipEntry{file("C:x", "x")}, code: CodeZipDriveLetter, entry: "C:x"},
		{desc: "dot segment", entries: []zipEntry{file("a/./b", "x")}, code: CodeZipUncleanPath, entry: "a/./b"},
		{desc: "empty segment", entries: []zipEntry{file("a//b", "x")}, code: CodeZipUncleanPath, entry: "a//b"},
		{desc: "empty name", entries: []zipEntry{file("", "x")}, code: CodeZipEmptyName, entry: ""},
		{desc: "invalid utf-8", entries: []zipEntry{file("bad\xff.txt", "x")}, code: CodeZipInvalidName, entry: "bad\xff.txt"},
		{desc: "control character", entries: []zipEntry{file("a\x01b", "x")}, code: CodeZipInvalidName, entry: "a\x01b"},
		{desc: "name too long", entries: []zipEntry{file(strings.Repeat("é", 1025), "x")}, code: CodeZipInvalidName, entry: strings.Repeat("é", 1025)},
		{desc: "duplicate", entries: []zipEntry{file("a.txt", "1"), file("a.txt", "2")}, code: CodeZipDuplicate, entry: "a.txt"},
		{desc: "case duplicate", entries: []zipEntry{file("Docs/A.txt", "1"), file("docs/a.TXT", "2")}, code: CodeZipCaseDuplicate, entry: "docs/a.TXT"},
		{desc: "symlink", entries: []zipEntry{symlink}, code: CodeZipSymlink, entry: "link"},
		{desc: "named pipe", entries: []zipEntry{fifo}, code: CodeZipSpecialFile, entry: "fifo"},
		{desc: "encrypted flag", entries: []zipEntry{encrypted}, code: CodeZipEncrypted, entry: "secret.bin"},
		{desc: "unsupported method", entries: []zipEntry{bzip2}, code: CodeZipUnsupportedMethod, entry: "data.bz2"},
		{desc: "stored sizes differ", entries: []zipEntry{storedLie}, code: CodeZipSizeMismatch, entry: "stored.bin"},
		{desc: "directory with data", data: dirWithData, code: CodeZipSizeMismatch, entry: "dir/"},
		{desc: "bomb by ratio", entries: []zipEntry{{hdr: zip.FileHeader{Name: "bomb.bin", Method: zip.Deflate}, body: zeros}},
			code: CodeZipCompressionRatio, entry: "bomb.bin"},
		{desc: "ratio with declared size of a huge bomb", entries: []zipEntry{rawDeflate(t, "huge.bin", zeros, 1<<40, 0)},
			code: CodeZipCompressionRatio, entry: "huge.bin"},
		{desc: "too many entries", entries: many, opts: Options{MaxEntries: 3}, code: CodeZipTooManyEntries, entry: ""},
		{desc: "total over limit", entries: many, opts: Options{MaxTotalSize: 4}, code: CodeZipTotalTooLarge, entry: ""},
		{desc: "file over SharePoint limit", entries: []zipEntry{file("big.bin", "0123456789")}, opts: Options{MaxFileSize: 9},
			code: CodeZipFileTooLarge, entry: "big.bin"},
		{desc: "directory over limit", entries: longNames, opts: Options{MaxDirectorySize: 1}, code: CodeZipDirectoryTooLarge, entry: ""},
		{desc: "not a zip", data: []byte("this is not a zip archive at all"), code: CodeZipMalformed, entry: ""},
		{desc: "empty input", data: []byte{}, code: CodeZipMalformed, entry: ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			data := tt.data
			if data == nil {
				data = makeZip(t, tt.entries...)
			}
			p, err := Open(bytes.NewReader(data), int64(len(data)), tt.opts)
			if p != nil {
				t.Errorf("Open returned a package with error %v", err)
			}
			pr := wantProblem(t, err, tt.code, tt.entry)
			if !strings.Contains(err.Error(), tt.code) {
				t.Errorf("Error() %q does not mention %s", err.Error(), tt.code)
			}
			t.Logf("%s", pr)
		})
	}
}

// TestOpenCollectsAllProblems checks problems are collected, not first-error.
func TestOpenCollectsAllProblems(t *testing.T) {
	link := zipEntry{hdr: zip.FileHeader{Name: "ok/link", Method: zip.Store}, body: []byte("x")}
	link.hdr.SetMode(fs.ModeSymlink | 0o777)
	data := makeZip(t, file("/abs", "x"), file("../up", "x"), link, file("ok/fine.txt", "x"), file("OK/FINE.txt", "y"))
	_, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []struct{ code, entry string }{
		{CodeZipAbsolutePath, "/abs"}, {CodeZipDotDot, "../up"}, {CodeZipSymlink, "ok/link"}, {CodeZipCaseDuplicate, "OK/FINE.txt"},
	} {
		wantProblem(t, err, want.code, want.entry)
	}
	if len(ve.Problems) != 4 {
		t.Errorf("got %d problems, want 4: %v", len(ve.Problems), err)
	}
}

func TestOpenMaxProblems(t *testing.T) {
	var entries []zipEntry
	for i := range 30 {
		entries = append(entries, file(fmt.Sprintf("/abs%d", i), "x"))
	}
	data := makeZip(t, entries...)
	_, err := Open(bytes.NewReader(data), int64(len(data)), Options{MaxProblems: 10})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatal(err)
	}
	if len(ve.Problems) != 11 || ve.Problems[10].Code != CodePackageTooManyProblems {
		t.Fatalf("problems = %v", ve.Problems)
	}
	if !strings.Contains(ve.Problems[10].Message, "20 more") {
		t.Errorf("message %q", ve.Problems[10].Message)
	}
}

// TestOpenAcceptsSmallCompressibleFile checks the ratio check spares small entries.
func TestOpenAcceptsSmallCompressibleFile(t *testing.T) {
	data := makeZip(t, file("blank.txt", strings.Repeat(" ", 100_000)))
	if _, err := Open(bytes.NewReader(data), int64(len(data)), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bytes.NewReader(data), int64(len(data)), Options{CompressionRatioMinSize: 1}); err == nil {
		t.Fatal("CompressionRatioMinSize 1: blank file accepted")
	}
}

// TestEntryReadGuards checks that reading never trusts the header: a lying size, a bad CRC or corrupt
// data are reported as *ValidationError while reading.
func TestEntryReadGuards(t *testing.T) {
	real := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	crc := crc32.ChecksumIEEE(real)
	corrupt := zipEntry{raw: true, body: []byte{0xff, 0xff, 0xff, 0xff, 0xff}, hdr: zip.FileHeader{Name: "corrupt.bin",
		Method: zip.Deflate, CompressedSize64: 5, UncompressedSize64: 10}}
	storedShort := zipEntry{raw: true, body: []byte("abc"), hdr: zip.FileHeader{Name: "short.bin", Method: zip.Store,
		CompressedSize64: 3, UncompressedSize64: 3, CRC32: crc32.ChecksumIEEE([]byte("abd"))}}
	tests := []struct {
		desc  string
		entry zipEntry
		code  string
	}{
		{"declares fewer bytes than it holds", rawDeflate(t, "liar.bin", real, 1000, crc), CodeZipSizeMismatch},
		{"declares more bytes than it holds", rawDeflate(t, "short.bin", real, uint64(len(real))+1, crc), CodeZipSizeMismatch},
		{"bad CRC-32", rawDeflate(t, "crc.bin", real, uint64(len(real)), crc^1), CodeZipChecksum},
		{"corrupt deflate data", corrupt, CodeZipCorruptData},
		{"stored bad CRC-32", storedShort, CodeZipChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			data := makeZip(t, tt.entry)
			p, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			rc, err := p.openEntry(p.entries[0])
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			wantProblem(t, err, tt.code, tt.entry.hdr.Name)
			if n > int64(tt.entry.hdr.UncompressedSize64) {
				t.Errorf("reader produced %d bytes, more than the declared %d", n, tt.entry.hdr.UncompressedSize64)
			}
		})
	}
}

func TestEntryReaderStream(t *testing.T) {
	want := make([]byte, 300_000)
	io.ReadFull(GeneratedContent("x", int64(len(want))), want)
	for _, method := range []uint16{zip.Store, zip.Deflate} {
		data := makeZip(t, zipEntry{hdr: zip.FileHeader{Name: "x.bin", Method: method}, body: want})
		p, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := p.openEntry(p.entries[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := iotest.TestReader(rc, want); err != nil {
			t.Errorf("method %d: %v", method, err)
		}
		rc.Close()
	}
}

// strictReaderAt fails out-of-range reads as a blob client does (HTTP 416), an I/O error.
type strictReaderAt struct{ data []byte }

func (s strictReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > int64(len(s.data)) {
		return 0, errors.New("416 range not satisfiable")
	}
	return copy(b, s.data[off:]), nil
}

// TestCorruptOffsetsAreFormatErrors checks offsets from a corrupt directory never reach the caller's
// ReaderAt out of range, so they are reported as an invalid package, not as I/O errors.
func TestCorruptOffsetsAreFormatErrors(t *testing.T) {
	data := makeZip(t, file(FileManifest, "<SPObjects/>"))
	cd := bytes.LastIndex(data, []byte("PK\x01\x02"))
	for _, off := range []uint32{0x7ffffff0, uint32(len(data) - 10)} {
		bad := bytes.Clone(data)
		bad[cd+42], bad[cd+43], bad[cd+44], bad[cd+45] = byte(off), byte(off>>8), byte(off>>16), byte(off>>24)
		p, err := Open(strictReaderAt{bad}, int64(len(bad)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = p.Validate(context.Background())
		wantProblem(t, err, CodeZipCorruptData, FileManifest)
	}
	tr := &tagReaderAt{r: bytes.NewReader(data), size: int64(len(data))}
	if _, err := tr.ReadAt(make([]byte, 1), -1); err == nil || classifyIO(err, "") != nil {
		t.Errorf("negative offset: %v", err)
	}
}
