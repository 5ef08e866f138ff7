package spoemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds a REST request body (the migration calls carry a few URIs).
const maxBody = 1 << 20

// function is one bindable function of SP.Site the emulator serves under _api/site/.
type function struct {
	name   string
	get    bool     // may be called with GET
	post   bool     // may be called with POST
	params []string // parameter names, in signature order (positional arguments map onto them)
	handle func(c *call) (answer, *spError)
}

// call is one REST call of a site function.
type call struct {
	e    *Emulator
	r    *http.Request
	f    flavour
	s    *site
	fn   *function
	base string                     // https://<host><site>/_api
	args map[string]json.RawMessage // lower-case parameter name → JSON value
}

// siteFunctions are the functions served, by lower-case name.
var siteFunctions = func() map[string]*function {
	fns := []*function{
		{name: "ProvisionMigrationContainers", post: true, handle: (*call).provisionContainers},
		{name: "ProvisionMigrationQueue", post: true, handle: (*call).provisionQueue},
		{name: "CreateMigrationJobEncrypted", post: true,
			params: []string{"gWebId", "azureContainerSourceUri", "azureContainerManifestUri", "azureQueueReportUri", "options"},
			handle: func(c *call) (answer, *spError) { return c.createJob(true) }},
		{name: "CreateMigrationJob", post: true,
			params: []string{"gWebId", "azureContainerSourceUri", "azureContainerManifestUri", "azureQueueReportUri"},
			handle: func(c *call) (answer, *spError) { return c.createJob(false) }},
		{name: "GetMigrationJobStatus", post: true, params: []string{"id"}, handle: (*call).jobStatus},
		{name: "DeleteMigrationJob", post: true, params: []string{"id"}, handle: (*call).deleteJob},
		{name: "GetMigrationStatus", get: true, post: true, handle: (*call).migrationStatus},
		{name: "GetMigrationJobProgress", get: true, post: true, params: []string{"jobId", "nextToken"}, handle: (*call).jobProgress},
	}
	m := make(map[string]*function, len(fns))
	for _, f := range fns {
		m[strings.ToLower(f.name)] = f
	}
	return m
}()

// dispatch serves one _api call of site s; rest is the path after _api/.
func (e *Emulator) dispatch(w http.ResponseWriter, r *http.Request, f flavour, s *site, rest string) {
	base := "https://" + r.Host + s.path + "/_api"
	var a answer
	var spErr *spError
	lower := strings.ToLower(rest)
	switch {
	case lower == "web" || lower == "site" || lower == "web/id" || lower == "site/id":
		if r.Method != http.MethodGet {
			spErr = methodErr(r.Method, rest)
			break
		}
		a = e.entity(r, s, base, lower)
	case lower == "contextinfo":
		if r.Method != http.MethodPost {
			spErr = methodErr(r.Method, rest)
			break
		}
		a = e.contextInfo(r, s)
	case strings.HasPrefix(lower, "site/"):
		name, argText, hasArgs := strings.Cut(rest[len("site/"):], "(")
		fn := siteFunctions[strings.ToLower(name)]
		if fn == nil {
			spErr = &spError{http.StatusNotFound, codeResourceNotFound,
				fmt.Sprintf("Cannot find resource for the request %s.", name)}
			break
		}
		if (r.Method == http.MethodGet && !fn.get) || (r.Method == http.MethodPost && !fn.post) ||
			(r.Method != http.MethodGet && r.Method != http.MethodPost) {
			spErr = methodErr(r.Method, fn.name)
			break
		}
		c := &call{e: e, r: r, f: f, s: s, fn: fn, base: base, args: map[string]json.RawMessage{}}
		if hasArgs {
			if !strings.HasSuffix(argText, ")") {
				spErr = &spError{http.StatusBadRequest, codeInvalidQuery, "The expression \"" + rest + "\" is not valid."}
				break
			}
			if spErr = c.parsePathArgs(strings.TrimSuffix(argText, ")")); spErr != nil {
				break
			}
		}
		if spErr = c.parseBody(); spErr != nil {
			break
		}
		a, spErr = fn.handle(c)
	default:
		spErr = &spError{http.StatusNotFound, codeResourceNotFound,
			fmt.Sprintf("Cannot find resource for the request %s.", functionName(rest))}
	}
	if spErr != nil {
		writeError(w, f, spErr)
		return
	}
	writeJSON(w, f, http.StatusOK, a.render(f, base))
}

func methodErr(method, resource string) *spError {
	return &spError{http.StatusBadRequest, codeClientService, fmt.Sprintf(
		"The HTTP method '%s' cannot be used to access the resource '%s'. The operation type of the resource is specified as 'Default'. Please use correct HTTP method to invoke the resource.",
		method, functionName(resource))}
}

// entity answers GET web, site, web/Id and site/Id (with $select on the entities).
func (e *Emulator) entity(r *http.Request, s *site, base, what string) answer {
	abs := "https://" + r.Host + s.path
	if s.path == "" {
		abs += "/"
	}
	rel := s.path
	if rel == "" {
		rel = "/"
	}
	title := "Communication site"
	if s.path != "" {
		title = s.path[strings.LastIndexByte(s.path, '/')+1:]
	}
	switch what {
	case "web/id":
		return answer{method: "Id", typeName: "Edm.Guid", value: s.webID}
	case "site/id":
		return answer{method: "Id", typeName: "Edm.Guid", value: s.siteID}
	case "site":
		return selectProps(r, answer{typeName: "SP.Site", complex: true, entity: base + "/site", props: obj{
			{"Id", s.siteID}, {"ServerRelativeUrl", rel}, {"Url", strings.TrimSuffix(abs, "/")},
		}})
	}
	return selectProps(r, answer{typeName: "SP.Web", complex: true, entity: base + "/Web", props: obj{
		{"Created", "2024-01-01T00:00:00Z"}, {"Id", s.webID}, {"Language", 1033},
		{"ServerRelativeUrl", rel}, {"Title", title}, {"Url", strings.TrimSuffix(abs, "/")}, {"WebTemplate", "SITEPAGEPUBLISHING"},
	}})
}

// selectProps applies $select (case-insensitive property names; * or nothing keeps all).
func selectProps(r *http.Request, a answer) answer {
	sel := r.URL.Query().Get("$select")
	if strings.TrimSpace(sel) == "" {
		return a
	}
	want := map[string]bool{}
	for p := range strings.SplitSeq(sel, ",") {
		want[strings.ToLower(strings.TrimSpace(p))] = true
	}
	if want["*"] {
		return a
	}
	var props obj
	for _, p := range a.props {
		if want[strings.ToLower(p.k)] {
			props = append(props, p)
		}
	}
	a.props = props
	return a
}

// contextInfo answers POST _api/contextinfo (a form digest; not needed with bearer tokens).
func (e *Emulator) contextInfo(r *http.Request, s *site) answer {
	full := "https://" + r.Host + s.path
	return answer{method: "GetContextWebInformation", typeName: "SP.ContextWebInformation", complex: true, props: obj{
		{"FormDigestTimeoutSeconds", 1800},
		{"FormDigestValue", "0x" + strings.ToUpper(strings.ReplaceAll(newUUID()+newUUID(), "-", "")) + "," + time.Now().UTC().Format("02 Jan 2006 15:04:05 -0000")},
		{"LibraryVersion", "16.0.25806.12007"},
		{"SiteFullUrl", full},
		{"SupportedSchemaVersions", strList{"14.0.0.0", "15.0.0.0"}},
		{"WebFullUrl", full},
	}}
}

// parsePathArgs reads named arguments (a=guid'…', b='…', c=3) or positional ones ('…','…'). Inside a
// quoted literal two single quotes stand for one. Values are kept as JSON strings; "@alias" values
// come from the query string.
func (c *call) parsePathArgs(text string) *spError {
	parts, ok := splitArgs(text)
	if !ok {
		return &spError{http.StatusBadRequest, codeInvalidQuery, "The expression \"" + c.fn.name + "(" + text + ")\" is not valid."}
	}
	for i, p := range parts {
		if strings.TrimSpace(p) == "" {
			continue
		}
		name, val, named := strings.Cut(p, "=")
		if !named || strings.HasPrefix(strings.TrimSpace(name), "'") {
			if i >= len(c.fn.params) {
				return &spError{http.StatusBadRequest, codeInvalidQuery, fmt.Sprintf("The method %s has too many arguments.", c.fn.name)}
			}
			name, val = c.fn.params[i], p
		}
		val = strings.TrimSpace(val)
		if strings.HasPrefix(val, "@") {
			val = c.r.URL.Query().Get(val)
		}
		raw, _ := json.Marshal(unquoteLiteral(val))
		c.args[strings.ToLower(strings.TrimSpace(name))] = raw
	}
	return nil
}

// splitArgs splits on commas outside single-quoted literals (two quotes inside a literal are one).
func splitArgs(s string) ([]string, bool) {
	var parts []string
	var cur strings.Builder
	inQ := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\'' && inQ && i+1 < len(s) && s[i+1] == '\'':
			cur.WriteString("''")
			i++
		case ch == '\'':
			inQ = !inQ
			cur.WriteByte(ch)
		case ch == ',' && !inQ:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(ch)
		}
	}
	parts = append(parts, cur.String())
	return parts, !inQ
}

// unquoteLiteral turns guid'x', 'x' (two quotes inside standing for one) and bare x into x.
func unquoteLiteral(v string) string {
	v = strings.TrimSpace(v)
	if len(v) >= 6 && strings.EqualFold(v[:5], "guid'") && strings.HasSuffix(v, "'") {
		return v[5 : len(v)-1]
	}
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return strings.ReplaceAll(v[1:len(v)-1], "''", "'")
	}
	return v
}

// parseBody merges a JSON object body into the arguments and rejects parameters the method does not
// have, as SharePoint does.
func (c *call) parseBody() *spError {
	body, err := io.ReadAll(io.LimitReader(c.r.Body, maxBody+1))
	if err != nil {
		return &spError{http.StatusBadRequest, codeInvalidQuery, "The request body could not be read."}
	}
	if len(body) > maxBody {
		return &spError{http.StatusRequestEntityTooLarge, codeInvalidQuery, "The request body is too large."}
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return &spError{http.StatusBadRequest, codeInvalidQuery, "Invalid JSON. A token was not recognized in the JSON content."}
		}
		for k, v := range m {
			c.args[strings.ToLower(k)] = v
		}
	}
	for k := range c.args {
		if k == "__metadata" {
			continue
		}
		known := false
		for _, p := range c.fn.params {
			if strings.ToLower(p) == k {
				known = true
			}
		}
		if !known {
			return &spError{http.StatusBadRequest, codeInvalidQuery,
				fmt.Sprintf("The parameter %s does not exist in method %s.", k, c.fn.name)}
		}
	}
	return nil
}

// text returns a primitive argument as text: a JSON string, number or boolean; present is false for
// an absent or null argument.
func (c *call) text(name string) (s string, present bool, spErr *spError) {
	raw, ok := c.args[strings.ToLower(name)]
	raw = bytes.TrimSpace(raw)
	if !ok || len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, c.typeErr(name, "Edm.String")
		}
		return s, true, nil
	case '{', '[':
		return "", false, c.typeErr(name, "a primitive value")
	}
	if _, err := strconv.ParseFloat(string(raw), 64); err == nil || string(raw) == "true" || string(raw) == "false" {
		return string(raw), true, nil
	}
	return "", false, c.typeErr(name, "a primitive value")
}

// guidArg reads a required Edm.Guid argument.
func (c *call) guidArg(name string) (string, *spError) {
	s, ok, spErr := c.text(name)
	if spErr != nil {
		return "", spErr
	}
	if !ok {
		return "", &spError{http.StatusBadRequest, codeInvalidQuery,
			fmt.Sprintf("The parameter %s is required for method %s.", name, c.fn.name)}
	}
	g, valid := parseGUID(s)
	if !valid {
		return "", c.typeErr(name, "Edm.Guid")
	}
	return g, nil
}

func (c *call) typeErr(name, typ string) *spError {
	return &spError{http.StatusBadRequest, codeInvalidQuery, fmt.Sprintf(
		"Cannot convert a primitive value to the expected type '%s'. See the inner exception for more details. (Parameter %s)", typ, name)}
}
