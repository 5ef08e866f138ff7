package funchost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

var _ http.Handler = (*Host)(nil)

// maxRequestBody bounds a request body read into an envelope (Kestrel's default limit is 100 MB).
const maxRequestBody = 100 << 20

// ServeHTTP is the public HTTP listener: "/" (splash), /admin/*, and /<routePrefix>/<route> for HTTP functions.
func (h *Host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cors(w, r) {
		return
	}
	p := r.URL.EscapedPath()
	switch {
	case p == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Your Functions 4.0 app is up and running (funchost)\n")
	case strings.EqualFold(p, "/admin") || hasPrefixFold(p, "/admin/"):
		h.serveAdmin(w, r)
	default:
		h.serveFunction(w, r, p)
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// cors answers preflight requests and adds Access-Control-Allow-Origin per local.settings.json Host.CORS.
func (h *Host) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	allowed := strings.TrimSpace(h.app.Local.Host.CORS)
	if origin == "" || allowed == "" {
		return false
	}
	ok := allowed == "*"
	for _, o := range strings.Split(allowed, ",") {
		if strings.EqualFold(strings.TrimSpace(o), origin) {
			ok = true
		}
	}
	if !ok {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	w.Header().Add("Vary", "Origin")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		w.Header().Set("Access-Control-Allow-Methods", r.Header.Get("Access-Control-Request-Method"))
		if hd := r.Header.Get("Access-Control-Request-Headers"); hd != "" {
			w.Header().Set("Access-Control-Allow-Headers", hd)
		}
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// presentedKey is the x-functions-key header, else the code query parameter.
func presentedKey(r *http.Request) string {
	if k := r.Header.Get("x-functions-key"); k != "" {
		return k
	}
	return r.URL.Query().Get("code")
}

type routeMatch struct {
	fn     *function
	values map[string]string
}

func (h *Host) serveFunction(w http.ResponseWriter, r *http.Request, escapedPath string) {
	rest := escapedPath
	if pfx := h.app.Host.RoutePrefix; pfx != "" {
		trimmed := strings.TrimPrefix(escapedPath, "/")
		seg, after, _ := strings.Cut(trimmed, "/")
		if u, err := url.PathUnescape(seg); err != nil || !strings.EqualFold(u, pfx) {
			http.NotFound(w, r)
			return
		}
		rest = after
	}
	var matches []routeMatch
	for _, f := range h.functions {
		if f.route == nil {
			continue
		}
		if vals, ok := f.route.match(rest); ok {
			matches = append(matches, routeMatch{f, vals})
		}
	}
	sort.SliceStable(matches, func(i, j int) bool { return lessPrecedence(matches[i].fn.prec, matches[j].fn.prec) })
	var chosen *routeMatch
	for i := range matches {
		if methodAllowed(matches[i].fn.cfg.Trigger.Methods, r.Method) {
			chosen = &matches[i]
			break
		}
	}
	if chosen == nil {
		if len(matches) > 0 {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		http.NotFound(w, r)
		return
	}
	fn := chosen.fn
	if fn.cfg.Disabled {
		http.NotFound(w, r)
		return
	}
	level, keyID := h.keys.authLevel(presentedKey(r), fn.cfg.Name)
	switch strings.ToLower(fn.cfg.Trigger.AuthLevel) {
	case "", "function":
		if level == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	case "admin", "system":
		if level != "admin" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	if (h.app.Host.Forwarding || h.app.Host.Proxying || h.app.Host.Legacy) && fn.cfg.httpInAndOut() {
		h.forward(w, r, fn)
		return
	}
	h.serveEnvelope(w, r, fn, chosen.values, level, keyID)
}

func lessPrecedence(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) > len(b)
}

func methodAllowed(methods []string, m string) bool {
	if len(methods) == 0 {
		return true
	}
	for _, x := range methods {
		if strings.EqualFold(strings.TrimSpace(x), m) {
			return true
		}
	}
	return false
}

// queryPairs parses a raw query like ASP.NET's QueryCollection: '+' is a space, keys ignore case (first spelling
// kept), repeated values are joined with ",".
func queryPairs(raw string) (keys []string, vals map[string]string) {
	vals = map[string]string{}
	lower := map[string]string{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || k == "" {
			continue
		}
		if first, ok := lower[strings.ToLower(k)]; ok {
			vals[first] += "," + v
			continue
		}
		lower[strings.ToLower(k)] = k
		keys = append(keys, k)
		vals[k] = v
	}
	return keys, vals
}

// urlEncode is System.Text.Encodings.Web.UrlEncoder.Default: everything except ALPHA, DIGIT and "-._~" is
// percent-encoded (UTF-8, upper-case hex).
func urlEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// forwardedQuery is QueryHelpers.AddQueryString(uri, GetQueryCollectionAsDictionary()): the host rebuilds the
// query from the parsed collection, so "a=1&a=2" arrives as "a=1%2C2" and "q=a b" as "q=a%20b".
func forwardedQuery(raw string) string {
	keys, vals := queryPairs(raw)
	var b strings.Builder
	for i, k := range keys {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(urlEncode(k) + "=" + urlEncode(vals[k]))
	}
	return b.String()
}

var hopHeaders = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Transfer-Encoding": true, "Te": true, "Trailer": true, "Upgrade": true}

// contentHeaders are .NET content headers: HttpRequestMessage.Headers rejects them, so the host drops them and
// only re-adds Content-Type and Content-Length when it forwards a body.
var contentHeaders = map[string]bool{"Content-Type": true, "Content-Length": true, "Content-Encoding": true,
	"Content-Language": true, "Content-Location": true, "Content-Md5": true, "Content-Range": true,
	"Content-Disposition": true, "Expires": true, "Last-Modified": true, "Allow": true}

// forward sends the original request to the handler (enableForwardingHttpRequest) and returns its answer as it
// is: status, headers and body; redirects are not followed and non-2xx is not a failure.
func (h *Host) forward(w http.ResponseWriter, r *http.Request, fn *function) {
	id := newGUID()
	h.log.Info(fmt.Sprintf("Executing 'Functions.%s' (Reason='This function was programmatically called via the host APIs.', Id=%s)", fn.cfg.Name, id))
	h.inflight.Add(1)
	defer h.inflight.Done()
	start := time.Now()
	fail := func(err error) {
		h.log.Error(fmt.Sprintf("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", fn.cfg.Name, id, time.Since(start).Milliseconds()), "error", err.Error())
		w.WriteHeader(http.StatusInternalServerError)
	}
	ctx := r.Context()
	if h.app.Host.FunctionTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.app.Host.FunctionTimeout)
		defer cancel()
	}
	base, err := h.worker.endpoint(ctx)
	if err != nil {
		fail(err)
		return
	}
	var body io.Reader = http.NoBody
	if r.ContentLength > 0 {
		body = r.Body
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, base+r.URL.EscapedPath()+forwardedQuery(r.URL.RawQuery), body)
	if err != nil {
		fail(err)
		return
	}
	for k, vs := range r.Header {
		if hopHeaders[k] || contentHeaders[k] {
			continue
		}
		req.Header[k] = append([]string(nil), vs...)
	}
	if r.ContentLength > 0 {
		req.ContentLength = r.ContentLength
		if ct := r.Header.Get("Content-Type"); ct != "" {
			req.Header.Set("Content-Type", ct)
		}
	} else {
		req.ContentLength = 0
	}
	req.Host = r.Host
	h.addHostHeaders(req.Header, id)
	if h.app.Host.Proxying {
		req.Header.Set("x-ms-invocation-id", id) // added by the 2025 hosts' YARP proxying
	}
	if req.Header.Get("traceparent") == "" {
		req.Header.Set("traceparent", newTraceparent())
	}
	resp, err := h.fwdClient.Do(req)
	if err != nil {
		fail(err)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if hopHeaders[k] {
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	h.log.Info(fmt.Sprintf("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", fn.cfg.Name, id, time.Since(start).Milliseconds()))
}

const (
	nameClaimType = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
	roleClaimType = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
)

// identitiesJSON approximates HttpContext.User.Identities as the host serializes them: an anonymous identity, or
// the WebJobsAuthLevel identity with the authlevel and keyid claims when a key was presented.
func identitiesJSON(level, keyID string) json.RawMessage {
	if level == "" {
		return json.RawMessage(`[{"AuthenticationType":null,"IsAuthenticated":false,"Actor":null,"BootstrapContext":null,"Claims":[],"Label":null,"Name":null,"NameClaimType":"` + nameClaimType + `","RoleClaimType":"` + roleClaimType + `"}]`)
	}
	lvl := "Function"
	if level == "admin" {
		lvl = "Admin"
	}
	claim := func(typ, val string) string {
		return `{"Issuer":"LOCAL AUTHORITY","OriginalIssuer":"LOCAL AUTHORITY","Properties":{},"Type":` + nsQuote(typ) +
			`,"Value":` + nsQuote(val) + `,"ValueType":"http://www.w3.org/2001/XMLSchema#string"}`
	}
	return json.RawMessage(`[{"AuthenticationType":"WebJobsAuthLevel","IsAuthenticated":true,"Actor":null,"BootstrapContext":null,"Claims":[` +
		claim("http://schemas.microsoft.com/2017/07/functions/claims/authlevel", lvl) + "," +
		claim("http://schemas.microsoft.com/2017/07/functions/claims/keyid", keyID) +
		`],"Label":null,"Name":null,"NameClaimType":"` + nameClaimType + `","RoleClaimType":"` + roleClaimType + `"}]`)
}

func objectJSON(keys []string, val func(k string) string) json.RawMessage {
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(nsQuote(k) + ":" + val(k))
	}
	b.WriteString("}")
	return json.RawMessage(b.String())
}

// requestHeaders returns the request headers as ASP.NET lists them (Host and Transfer-Encoding included), sorted.
func requestHeaders(r *http.Request) ([]string, map[string][]string) {
	hd := map[string][]string{}
	for k, v := range r.Header {
		hd[k] = v
	}
	if r.Host != "" {
		hd["Host"] = []string{r.Host}
	}
	if len(r.TransferEncoding) > 0 {
		hd["Transfer-Encoding"] = r.TransferEncoding
	}
	keys := make([]string, 0, len(hd))
	for k := range hd {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, hd
}

func isOctetOrMultipart(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/octet-stream" || strings.HasPrefix(mt, "multipart/")
}

// httpInvocation builds the "req" envelope (reference §3.4, HTTP trigger without forwarding).
func (h *Host) httpInvocation(r *http.Request, fn *function, routeValues map[string]string, level, keyID string) (*invocation, error) {
	t := fn.cfg.Trigger
	inv := h.newInvocation(fn, "This function was programmatically called via the host APIs.")
	var body []byte
	if r.ContentLength > 0 {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
		if len(b) > maxRequestBody {
			return nil, errors.New("request body too large")
		}
		body = b
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := scheme + "://" + r.Host + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	qkeys, qvals := queryPairs(r.URL.RawQuery)
	hkeys, hvals := requestHeaders(r)
	pkeys := make([]string, 0, len(routeValues))
	for k := range routeValues {
		pkeys = append(pkeys, k)
	}
	sort.Strings(pkeys)

	var req strings.Builder
	req.WriteString(`{"Url":` + nsQuote(u) + `,"Method":` + nsQuote(r.Method))
	req.WriteString(`,"Query":` + string(objectJSON(qkeys, func(k string) string { return nsQuote(qvals[k]) })))
	req.WriteString(`,"Headers":` + string(objectJSON(hkeys, func(k string) string {
		parts := make([]string, len(hvals[k]))
		for i, v := range hvals[k] {
			parts[i] = nsQuote(v)
		}
		return "[" + strings.Join(parts, ",") + "]"
	})))
	req.WriteString(`,"Params":` + string(objectJSON(pkeys, func(k string) string { return nsQuote(routeValues[k]) })))
	req.WriteString(`,"Identities":` + string(identitiesJSON(level, keyID)))
	if len(body) > 0 {
		if isOctetOrMultipart(r.Header.Get("Content-Type")) {
			req.WriteString(`,"Body":` + string(encBytes(body)))
		} else {
			req.WriteString(`,"Body":` + nsQuote(string(body)))
		}
	}
	req.WriteString("}")
	inv.data = append(inv.data, field{name: t.Name, raw: json.RawMessage(req.String())})

	queryObj := map[string]any{}
	for _, k := range qkeys {
		queryObj[k] = qvals[k]
	}
	headerObj := map[string]any{}
	for _, k := range hkeys {
		headerObj[k] = strings.Join(hvals[k], ",")
	}
	inv.meta.set("Query", objectJSON(qkeys, func(k string) string { return nsQuote(qvals[k]) }))
	inv.meta.set("Headers", objectJSON(hkeys, func(k string) string { return nsQuote(strings.Join(hvals[k], ",")) }))
	inv.bd.set("Query", queryObj)
	inv.bd.set("Headers", headerObj)
	for _, k := range qkeys {
		if strings.EqualFold(k, "code") {
			continue
		}
		inv.meta.set(k, encString(qvals[k]))
		inv.bd.set(k, qvals[k])
	}
	if len(body) > 0 && !isOctetOrMultipart(r.Header.Get("Content-Type")) {
		spreadJSONObject(string(body), &inv.meta, inv.bd)
	}
	for _, k := range pkeys {
		inv.meta.set(k, encString(routeValues[k]))
		inv.bd.set(k, routeValues[k])
	}
	return inv, nil
}

func (h *Host) serveEnvelope(w http.ResponseWriter, r *http.Request, fn *function, routeValues map[string]string, level, keyID string) {
	inv, err := h.httpInvocation(r, fn, routeValues, level, keyID)
	if err != nil {
		h.log.Error(fmt.Sprintf("Function '%s': %v", fn.cfg.Name, err))
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if _, err := h.execute(r.Context(), inv); err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	res := inv.httpRes
	if res == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "{}")
		return
	}
	for k, v := range res.headers {
		w.Header().Set(k, v)
	}
	if len(res.body) > 0 && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(res.status)
	_, _ = w.Write(res.body)
}

// httpResponse is an http output converted as the host does (reference §4.4).
type httpResponse struct {
	status  int
	headers map[string]string
	body    []byte
}

// parseHTTPOutput converts Outputs.res (or ReturnValue for "$return"): statusCode/status (number or numeric
// string), body (string as is, object/array as indented JSON), headers (values as strings).
func parseHTTPOutput(raw json.RawMessage) (*httpResponse, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		_ = json.Unmarshal(raw, &s)
		raw = json.RawMessage(strings.TrimSpace(s))
	}
	var obj map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &obj) != nil {
		return nil, fmt.Errorf("output body should have 'StatusCode', 'Status', 'Body', and 'Headers' (got %.80s)", raw)
	}
	res := &httpResponse{status: http.StatusOK, headers: map[string]string{}}
	get := func(name string) (json.RawMessage, bool) {
		for k, v := range obj {
			if strings.EqualFold(k, name) && string(v) != "null" {
				return v, true
			}
		}
		return nil, false
	}
	sc, ok := get("statusCode")
	if !ok {
		sc, ok = get("status")
	}
	if ok {
		s := tokenString(sc)
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 100 || n > 999 {
			return nil, fmt.Errorf("invalid status code %s", sc)
		}
		res.status = n
	}
	if b, ok := get("body"); ok {
		res.body = []byte(tokenString(b))
	}
	if hd, ok := get("headers"); ok {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(hd, &m); err != nil {
			return nil, fmt.Errorf("headers: %w", err)
		}
		for k, v := range m {
			if string(v) == "null" {
				if strings.EqualFold(k, "content-type") {
					return nil, errors.New("a content-type header with a null value")
				}
				continue
			}
			res.headers[k] = tokenString(v)
		}
	}
	return res, nil
}

func (h *Host) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if lvl, _ := h.keys.authLevel(presentedKey(r), ""); lvl != "admin" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case strings.EqualFold(p, "/admin/host/status") && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": h.hostID, "state": "Running", "version": h.opts.HostVersion,
			"handlerPid": h.HandlerPID()})
	case hasPrefixFold(p, "/admin/functions/"):
		name := p[len("/admin/functions/"):]
		fn := h.function(name)
		if fn == nil || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var in struct {
			Input *string `json:"input"`
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
		if len(bytes.TrimSpace(b)) > 0 {
			if err := json.Unmarshal(b, &in); err != nil {
				http.Error(w, "body must be {\"input\": \"...\"}", http.StatusBadRequest)
				return
			}
		}
		input := ""
		if in.Input != nil {
			input = *in.Input
		}
		if fn.cfg.Trigger.is("httpTrigger") {
			http.Error(w, "HTTP functions are called on their route", http.StatusBadRequest)
			return
		}
		h.runBG(func() { h.adminInvoke(fn, input) })
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

const adminReason = "This function was programmatically called via the host APIs."

// adminInvoke runs a non-HTTP function once, as POST /admin/functions/{name} does: the input is the queue message,
// the blob path (container/blob), or ignored for a timer. No retries, receipts or poison queues.
func (h *Host) adminInvoke(fn *function, input string) {
	ctx := h.execCtx
	t := fn.cfg.Trigger
	switch {
	case t.is("queueTrigger"):
		inv := h.queueInvocation(fn, &queueMessage{body: []byte(input)}, t.QueueName)
		inv.reason = adminReason
		_, _ = h.execute(ctx, inv)
	case t.is("blobTrigger"):
		if err := h.invokeBlobByPath(ctx, fn, input); err != nil {
			h.log.Error(fmt.Sprintf("Function '%s' admin invocation: %v", fn.cfg.Name, err))
		}
	case t.is("timerTrigger"):
		_ = fn.timer.fire(time.Now().In(fn.timer.loc), false, true, adminReason)
	}
}
