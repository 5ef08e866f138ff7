package spoemu

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// checkXML streams an XML document, checks it is well-formed with the root element root (local name),
// and calls fn (when not nil) for every start element with its path of local names from the root and
// its attributes (lower-case local names).
func checkXML(r io.Reader, root string, fn func(path []string, attrs map[string]string) error) error {
	dec := xml.NewDecoder(r)
	dec.CharsetReader = func(charset string, _ io.Reader) (io.Reader, error) {
		return nil, fmt.Errorf("unsupported encoding %q", charset)
	}
	var stack []string
	seenRoot := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !seenRoot {
				return errors.New("there is no root element")
			}
			if len(stack) > 0 {
				return errors.New("unexpected end of file: elements are not closed")
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 {
				if seenRoot {
					return errors.New("there are multiple root elements")
				}
				seenRoot = true
				if t.Name.Local != root {
					return fmt.Errorf("the root element is <%s>, expected <%s>", t.Name.Local, root)
				}
			}
			stack = append(stack, t.Name.Local)
			if len(stack) > 128 {
				return errors.New("elements are nested too deeply")
			}
			if fn != nil {
				attrs := make(map[string]string, len(t.Attr))
				for _, a := range t.Attr {
					attrs[strings.ToLower(a.Name.Local)] = a.Value
				}
				if err := fn(stack, attrs); err != nil {
					return err
				}
			}
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 && strings.TrimSpace(string(t)) != "" {
				return errors.New("data at the root level is invalid")
			}
		}
	}
}
