package monitor

import (
	"bytes"
	"encoding/csv"
	"strings"
	"unicode/utf8"

	"github.com/spomig/spomig/internal/jobs"
)

// items.csv columns.
var itemsHeader = []string{"kind", "objectType", "url", "errorCode", "message"}

// Bounds of the log parser.
const (
	// maxLineBytes bounds one log line kept for parsing; the rest of a longer line is skipped (the log
	// blob itself is copied whole).
	maxLineBytes = 64 << 10
	// maxCellBytes bounds one items.csv cell.
	maxCellBytes = 4 << 10
)

// itemRow is one line of items.csv: an item error or warning.
type itemRow struct {
	Kind, ObjectType, URL, ErrorCode, Message string
}

// lineParser reads a SharePoint import log as it is copied (it is an io.Writer fed by a TeeReader) and
// emits its item errors and warnings. The log format is not documented (reference §11): the parser
// takes a first line of tab-separated column names as the header (Level, ErrorCode or Code, ObjectUrl
// or Url, ObjectType, Message, in any order and case) and maps the following lines through it.
// Without a header a whole line is the message. In a .err file every line is an error, in a .wrn file
// a warning; in a .log file (kind "") only lines whose level is Error, Fatal or Warning are items.
// Memory: one line of at most maxLineBytes.
type lineParser struct {
	kind    jobs.ItemKind // ItemError, ItemWarning, or "" for a full log
	emit    func(itemRow)
	cols    map[string]int
	line    []byte
	skip    bool // the current line overflowed maxLineBytes
	started bool // a first non-empty line was seen
	rows    int
}

func newLineParser(kind jobs.ItemKind, emit func(itemRow)) *lineParser {
	return &lineParser{kind: kind, emit: emit}
}

// Write consumes log bytes; it never fails.
func (p *lineParser) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		if !p.skip {
			if room := maxLineBytes - len(p.line); len(chunk) > room {
				p.line = append(p.line, chunk[:room]...)
				p.skip = true
			} else {
				p.line = append(p.line, chunk...)
			}
		}
		if i < 0 {
			break
		}
		p.flush()
		b = b[i+1:]
	}
	return n, nil
}

// Close parses the last line when it has no newline.
func (p *lineParser) Close() { p.flush() }

func (p *lineParser) flush() {
	line := strings.TrimRight(strings.ToValidUTF8(string(p.line), "\uFFFD"), "\r")
	p.line, p.skip = p.line[:0], false
	if !p.started {
		line = strings.TrimPrefix(line, "\uFEFF")
	}
	if strings.TrimSpace(line) == "" {
		return
	}
	first := !p.started
	p.started = true
	fields := strings.Split(line, "\t")
	if first && len(fields) > 1 {
		if cols := headerColumns(fields); cols != nil {
			p.cols = cols
			return
		}
	}
	get := func(names ...string) string {
		for _, n := range names {
			if i, ok := p.cols[n]; ok && i < len(fields) {
				return strings.TrimSpace(fields[i])
			}
		}
		return ""
	}
	row := itemRow{Message: strings.TrimSpace(line)}
	level := ""
	if p.cols != nil {
		level = get("level", "severity", "type")
		row = itemRow{ObjectType: get("objecttype"), URL: get("objecturl", "url", "itemurl", "sourceurl"),
			ErrorCode: get("errorcode", "code"), Message: get("message", "details")}
	}
	switch p.kind {
	case "":
		k, ok := levelKind(level)
		if !ok {
			return
		}
		row.Kind = string(k)
	default:
		row.Kind = string(p.kind)
	}
	p.rows++
	p.emit(row)
}

// headerColumns maps a header line's column names (lower case) to their indexes; nil when the line
// does not look like a header.
func headerColumns(fields []string) map[string]int {
	cols := map[string]int{}
	known := 0
	for i, f := range fields {
		name := strings.ToLower(strings.TrimSpace(f))
		cols[name] = i
		switch name {
		case "level", "severity", "message", "errorcode", "code", "objecturl", "url", "objecttype", "time":
			known++
		}
	}
	if known < 2 {
		return nil
	}
	return cols
}

func levelKind(level string) (jobs.ItemKind, bool) {
	switch l := strings.ToLower(level); {
	case strings.HasPrefix(l, "err"), strings.HasPrefix(l, "fatal"), strings.HasPrefix(l, "crit"):
		return jobs.ItemError, true
	case strings.HasPrefix(l, "warn"):
		return jobs.ItemWarning, true
	}
	return "", false
}

// writeRow writes a row to items.csv with every cell bounded and made safe to open in a spreadsheet: a
// cell starting like a formula (=, +, @, or - not followed by a digit, as error codes are) gets a
// leading apostrophe, and control characters become spaces.
func writeRow(w *csv.Writer, r itemRow) error {
	return w.Write([]string{cell(r.Kind), cell(r.ObjectType), cell(r.URL), cell(r.ErrorCode), cell(r.Message)})
}

func cell(s string) string {
	s = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, s)
	if len(s) > maxCellBytes {
		s = s[:maxCellBytes]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	if s != "" {
		switch c := s[0]; {
		case c == '=' || c == '+' || c == '@':
			s = "'" + s
		case c == '-' && (len(s) == 1 || s[1] < '0' || s[1] > '9'):
			s = "'" + s
		}
	}
	return s
}
