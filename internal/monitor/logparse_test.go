package monitor

import (
	"bytes"
	"encoding/csv"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/spomig/spomig/internal/jobs"
)

const emuHeader = "Time\tLevel\tErrorCode\tObjectUrl\tMessage\r\n"

func parse(t *testing.T, kind jobs.ItemKind, text string, reader func(io.Reader) io.Reader) []itemRow {
	t.Helper()
	var rows []itemRow
	p := newLineParser(kind, func(r itemRow) { rows = append(rows, r) })
	if _, err := io.Copy(p, reader(strings.NewReader(text))); err != nil {
		t.Fatal(err)
	}
	p.Close()
	return rows
}

func TestLineParser(t *testing.T) {
	errLine := "05/20/2025 09:18:48.132\tError\t-2147024894\tShared Documents/a.txt\tThe file 'x' does not exist.\r\n"
	warnLine := "05/20/2025 09:18:49.000\tWarning\t-2147024894\t\tThe optional package file Requirements.xml is missing.\r\n"
	infoLine := "05/20/2025 09:18:50.000\tInformation\t\tShared Documents/b.txt\tFile imported.\r\n"
	wantErr := itemRow{Kind: "error", URL: "Shared Documents/a.txt", ErrorCode: "-2147024894", Message: "The file 'x' does not exist."}
	wantWarn := itemRow{Kind: "warning", ErrorCode: "-2147024894", Message: "The optional package file Requirements.xml is missing."}
	for _, tc := range []struct {
		name string
		kind jobs.ItemKind
		text string
		want []itemRow
	}{
		{"err file", jobs.ItemError, emuHeader + errLine, []itemRow{wantErr}},
		{"wrn file", jobs.ItemWarning, emuHeader + warnLine, []itemRow{wantWarn}},
		{"full log: errors and warnings only", "", emuHeader + infoLine + errLine + warnLine + infoLine, []itemRow{wantErr, wantWarn}},
		{"no trailing newline", jobs.ItemError, emuHeader + strings.TrimSuffix(errLine, "\r\n"), []itemRow{wantErr}},
		{"BOM and LF", jobs.ItemError, "\uFEFF" + strings.ReplaceAll(emuHeader+errLine, "\r\n", "\n"), []itemRow{wantErr}},
		{"columns in another order", jobs.ItemError, "message\tobjecttype\turl\tcode\nboom\tFile\t/x\t42\n",
			[]itemRow{{Kind: "error", ObjectType: "File", URL: "/x", ErrorCode: "42", Message: "boom"}}},
		{"no header: whole lines", jobs.ItemWarning, "something odd\n\nanother\n",
			[]itemRow{{Kind: "warning", Message: "something odd"}, {Kind: "warning", Message: "another"}}},
		{"no header in a full log: nothing", "", "something odd\n", nil},
		{"short lines", jobs.ItemError, emuHeader + "t\tError\n", []itemRow{{Kind: "error"}}},
		{"empty", jobs.ItemError, "", nil},
	} {
		for rname, reader := range map[string]func(io.Reader) io.Reader{
			"whole": func(r io.Reader) io.Reader { return r }, "one byte": iotest.OneByteReader, "half": iotest.HalfReader,
		} {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				got := parse(t, tc.kind, tc.text, reader)
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("rows\n%+v\nwant\n%+v", got, tc.want)
				}
			})
		}
	}
}

func TestLineParserLongLines(t *testing.T) {
	long := strings.Repeat("x", 3*maxLineBytes)
	rows := parse(t, jobs.ItemError, long+"\nshort\n", iotest.HalfReader)
	if len(rows) != 2 || len(rows[0].Message) != maxLineBytes || rows[1].Message != "short" {
		t.Fatalf("%d rows, first %d bytes", len(rows), len(rows[0].Message))
	}
}

func TestCSVCells(t *testing.T) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	rows := []itemRow{
		{Kind: "error", ObjectType: "File", URL: "=HYPERLINK(\"http://evil\")", ErrorCode: "-2147024894", Message: "a,b \"q\"\nline"},
		{Kind: "warning", URL: "+1", ErrorCode: "-x", Message: "@cmd"},
		{Kind: "error", Message: strings.Repeat("é", maxCellBytes)},
	}
	for _, r := range rows {
		if err := writeRow(w, r); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	got, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got[0][2] != "'=HYPERLINK(\"http://evil\")" || got[0][3] != "-2147024894" || got[0][4] != "a,b \"q\" line" {
		t.Fatalf("row 0 %q", got[0])
	}
	if got[1][2] != "'+1" || got[1][3] != "'-x" || got[1][4] != "'@cmd" {
		t.Fatalf("row 1 %q", got[1])
	}
	if len(got[2][4]) > maxCellBytes || !strings.HasPrefix(got[2][4], "é") {
		t.Fatalf("row 2 is %d bytes", len(got[2][4]))
	}
}

func FuzzLineParser(f *testing.F) {
	f.Add(emuHeader+"t\tError\t1\t/u\tm\r\n", uint8(0), uint16(7))
	f.Add("a\tb\nc", uint8(1), uint16(1))
	f.Add("\uFEFFmessage\tlevel\nx\twarning\n", uint8(2), uint16(3))
	f.Fuzz(func(t *testing.T, text string, kind uint8, chunk uint16) {
		k := []jobs.ItemKind{"", jobs.ItemError, jobs.ItemWarning}[int(kind)%3]
		var whole, pieces []itemRow
		p := newLineParser(k, func(r itemRow) { whole = append(whole, r) })
		p.Write([]byte(text))
		p.Close()
		q := newLineParser(k, func(r itemRow) { pieces = append(pieces, r) })
		n := max(int(chunk)%97, 1)
		for b := []byte(text); len(b) > 0; {
			c := min(n, len(b))
			q.Write(b[:c])
			b = b[c:]
		}
		q.Close()
		if !reflect.DeepEqual(whole, pieces) {
			t.Fatalf("rows depend on how the stream is cut")
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		for _, r := range whole {
			if r.Kind != "error" && r.Kind != "warning" {
				t.Fatalf("kind %q", r.Kind)
			}
			if err := writeRow(w, r); err != nil {
				t.Fatal(err)
			}
		}
		w.Flush()
		if recs, err := csv.NewReader(&buf).ReadAll(); err != nil || len(recs) != len(whole) {
			t.Fatalf("CSV does not read back: %d records, %v", len(recs), err)
		}
	})
}
