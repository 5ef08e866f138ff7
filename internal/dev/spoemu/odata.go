package spoemu

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// flavour is the OData JSON format a request asks for in Accept.
type flavour int

const (
	minimalMetadata flavour = iota // application/json, odata=minimalmetadata, odata.metadata=minimal
	noMetadata                     // odata=nometadata, odata.metadata=none
	verbose                        // odata=verbose
)

// flavourOf reads Accept. Anything that is not verbose or nometadata (including no Accept, */* and
// XML, which SharePoint would answer in Atom) gets minimal metadata JSON.
func flavourOf(r *http.Request) flavour {
	a := strings.ToLower(strings.Join(r.Header.Values("Accept"), ","))
	a = strings.ReplaceAll(a, " ", "")
	switch {
	case strings.Contains(a, "odata=verbose"):
		return verbose
	case strings.Contains(a, "odata=nometadata"), strings.Contains(a, "odata.metadata=none"):
		return noMetadata
	}
	return minimalMetadata
}

func (f flavour) contentType() string {
	switch f {
	case verbose:
		return "application/json;odata=verbose;charset=utf-8"
	case noMetadata:
		return "application/json;odata=nometadata;streaming=true;charset=utf-8"
	}
	return "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
}

// kv is one member of an ordered JSON object.
type kv struct {
	k string
	v any
}

// obj is a JSON object that keeps its member order, as SharePoint's serializer does.
type obj []kv

// MarshalJSON writes the members in order.
func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshal(m.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := marshal(m.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshal is json.Marshal without HTML escaping: SharePoint writes & < > as they are (SAS query
// strings are full of &).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// strList is a collection of strings (Collection(Edm.String)).
type strList []string

// complexList is a collection of complex values of one type.
type complexList struct {
	typeName string
	items    []obj
}

// answer is what a handler returns: a primitive (Edm type + value), a complex object (type name +
// properties), or an entity (type name + properties + URI).
type answer struct {
	method   string // function name: the verbose wrapper member ({"d":{"<method>":…}}); "" for entities
	typeName string // Edm.Guid, SP.ProvisionedMigrationContainersInfo, …
	value    any    // primitive value (when props is nil)
	props    obj    // complex or entity properties
	complex  bool
	entity   string // entity URI (verbose __metadata id/uri), for GET web/site
}

// render turns an answer into the JSON body of flavour f. base is the site's _api URL.
func (a answer) render(f flavour, base string) obj {
	ctx := base + "/$metadata#" + a.typeName
	if !a.complex {
		v := a.value
		switch f {
		case verbose:
			switch l := v.(type) {
			case strList:
				v = obj{{"__metadata", obj{{"type", "Collection(Edm.String)"}}}, {"results", []string(l)}}
			case complexList:
				items := make([]obj, 0, len(l.items))
				for _, it := range l.items {
					items = append(items, append(obj{{"__metadata", obj{{"type", l.typeName}}}}, it...))
				}
				v = obj{{"__metadata", obj{{"type", "Collection(" + l.typeName + ")"}}}, {"results", items}}
			}
			return obj{{"d", obj{{a.method, v}}}}
		}
		switch l := v.(type) {
		case strList:
			v = []string(l)
		case complexList:
			v = append([]obj{}, l.items...)
		}
		if f == noMetadata {
			return obj{{"value", v}}
		}
		return obj{{"@odata.context", ctx}, {"value", v}}
	}
	props := make(obj, 0, len(a.props)+2)
	for _, p := range a.props {
		v := p.v
		if l, ok := v.(strList); ok {
			if f == verbose {
				v = obj{{"__metadata", obj{{"type", "Collection(Edm.String)"}}}, {"results", []string(l)}}
			} else {
				v = []string(l)
			}
		}
		props = append(props, kv{p.k, v})
	}
	switch f {
	case verbose:
		md := obj{{"type", a.typeName}}
		if a.entity != "" {
			md = obj{{"id", a.entity}, {"uri", a.entity}, {"type", a.typeName}}
		}
		inner := append(obj{{"__metadata", md}}, props...)
		if a.method == "" {
			return obj{{"d", inner}}
		}
		return obj{{"d", obj{{a.method, inner}}}}
	case noMetadata:
		return props
	}
	head := obj{{"@odata.context", ctx}}
	if a.entity != "" {
		head = append(head, kv{"@odata.type", "#" + a.typeName}, kv{"@odata.id", a.entity}, kv{"@odata.editLink", a.entity})
	}
	return append(head, props...)
}

// spError is a SharePoint error answer.
type spError struct {
	status  int
	code    string // "-2147024809, System.ArgumentException"
	message string
}

func (e *spError) Error() string { return e.code + ": " + e.message }

// Errors SharePoint answers with (codes are HRESULTs with the .NET exception type, as SPO prints them).
const (
	codeArgument          = "-2147024809, System.ArgumentException"
	codeArgumentGeneric   = "-1, System.ArgumentException"
	codeInvalidOperation  = "-2146233079, System.InvalidOperationException"
	codeInvalidQuery      = "-1, Microsoft.SharePoint.Client.InvalidClientQueryException"
	codeResourceNotFound  = "-1, Microsoft.SharePoint.Client.ResourceNotFoundException"
	codeClientService     = "-1, Microsoft.SharePoint.Client.ClientServiceException"
	codeUnauthorized      = "-2147024891, System.UnauthorizedAccessException"
	codeFileNotFound      = "-2147024894, System.IO.FileNotFoundException"
	codeJobNotFound       = "-2147213145, Microsoft.SharePoint.SPException"
	codeJobExpired        = "-2147213146, Microsoft.SharePoint.SPException"
	codeThrottled         = "-2147024860, Microsoft.SharePoint.SPQueryThrottledException"
	codeServerTooBusy     = "-2130575152, Microsoft.SharePoint.SPServerTooBusyException"
	msgValueOutOfRange    = "Value does not fall within the expected range."
	msgAccessDenied       = "Access denied. You do not have permission to perform this action or access this resource."
	sharePointPrincipalID = "00000003-0000-0ff1-ce00-000000000000"
)

func argErr(param string) *spError {
	return &spError{http.StatusBadRequest, codeArgument, msgValueOutOfRange + "\r\nParameter name: " + param}
}

func argErrMsg(param, msg string) *spError {
	return &spError{http.StatusBadRequest, codeArgumentGeneric, msg + "\r\nParameter name: " + param}
}

// writeJSON writes v with status and the flavour's content type.
func writeJSON(w http.ResponseWriter, f flavour, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"odata.error":{"code":"-1, System.Exception","message":{"lang":"en-US","value":"serialization failed"}}}`)
	}
	w.Header().Set("Content-Type", f.contentType())
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError writes e in SharePoint's verbose ("error") or light ("odata.error") shape.
func writeError(w http.ResponseWriter, f flavour, e *spError) {
	body := obj{{"code", e.code}, {"message", obj{{"lang", "en-US"}, {"value", e.message}}}}
	name := "odata.error"
	if f == verbose {
		name = "error"
	}
	writeJSON(w, f, e.status, obj{{name, body}})
}
