package functions

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// readEnvelope reads an invocation body and returns it with the string values of Data.<name> for the
// names in skip replaced by "" — without ever holding those values in memory. A blob trigger with
// dataType binary carries the whole blob in Data (base64: 4/3 of the package size); the intake reads
// packages from storage with ranged reads, so the handler's memory must not grow with that payload.
// Everything else is kept, up to limit bytes (ErrBadPayload beyond). The result is not validated as
// JSON: DecodeInvokeRequest does that.
func readEnvelope(r io.Reader, skip map[string]bool, limit int64) ([]byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out bytes.Buffer
	type frame struct {
		object    bool
		expectKey bool
		key       []byte
	}
	var stack []frame
	emit := func(b ...byte) error {
		if int64(out.Len()+len(b)) > limit {
			return fmt.Errorf("%w: invocation body larger than %d bytes (without the skipped trigger payload)", ErrBadPayload, limit)
		}
		out.Write(b)
		return nil
	}
	// skipping reports whether a string value starting now is Data.<name in skip>.
	skipping := func() bool {
		return len(stack) == 2 && stack[0].object && string(stack[0].key) == "Data" &&
			stack[1].object && !stack[1].expectKey && skip[string(stack[1].key)]
	}
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		switch c {
		case '{', '[':
			stack = append(stack, frame{object: c == '{', expectKey: c == '{'})
			if err := emit(c); err != nil {
				return nil, err
			}
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			if err := emit(c); err != nil {
				return nil, err
			}
		case ':':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].expectKey = false
			}
			if err := emit(c); err != nil {
				return nil, err
			}
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].expectKey = true
			}
			if err := emit(c); err != nil {
				return nil, err
			}
		case '"':
			isKey := len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].expectKey
			drop := !isKey && skipping()
			var key []byte
			if !drop {
				if err := emit('"'); err != nil {
					return nil, err
				}
			}
			escaped := false
			for {
				b, err := br.ReadByte()
				if err != nil {
					if err == io.EOF {
						return nil, fmt.Errorf("%w: unterminated string", ErrBadPayload)
					}
					return nil, err
				}
				if isKey && len(key) < 256 {
					key = append(key, b)
				}
				if !drop {
					if err := emit(b); err != nil {
						return nil, err
					}
				}
				if escaped {
					escaped = false
					continue
				}
				if b == '\\' {
					escaped = true
					continue
				}
				if b == '"' {
					break
				}
			}
			if drop {
				if err := emit('"', '"'); err != nil {
					return nil, err
				}
			}
			if isKey {
				stack[len(stack)-1].key = key[:max(len(key)-1, 0)] // without the closing quote
			}
		default:
			if err := emit(c); err != nil {
				return nil, err
			}
		}
	}
}
