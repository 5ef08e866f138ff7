package functions

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
)

// ProvisionHttp: the migration API (internal/api) served under /api/.
//
// host.json sets enableForwardingHttpRequest and the function has exactly one httpTrigger and one http
// output, so the host forwards the original request to the same path (/api/...) and returns our answer
// untouched: the API is an ordinary router. Should the function ever be invoked through the envelope
// (POST /ProvisionHttp, e.g. if an output binding is added), the request is rebuilt from Data.req and the
// API's answer goes back as Outputs.res.

// ProvisionHTTPRequestBinding and ProvisionHTTPResponseBinding are the binding names of
// ProvisionHttp/function.json.
const (
	ProvisionHTTPRequestBinding  = "req"
	ProvisionHTTPResponseBinding = "res"
)

func (s *server) forwardedHTTP(w http.ResponseWriter, r *http.Request) {
	api, err := s.opts.Services.API(r.Context())
	if err != nil {
		s.log.ErrorContext(r.Context(), "build API", "err", err)
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", "10")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"type": "about:blank", "title": "Service unavailable", "status": http.StatusServiceUnavailable,
			"detail": "the API could not start: " + err.Error(),
		})
		return
	}
	api.ServeHTTP(w, r)
}

// httpTriggerData is Data.req on the envelope path (functions-custom-handler.md §3.4).
type httpTriggerData struct {
	URL        string              `json:"Url"`
	Method     string              `json:"Method"`
	Query      json.RawMessage     `json:"Query"`
	Headers    map[string][]string `json:"Headers"`
	Params     map[string]string   `json:"Params"`
	Body       json.RawMessage     `json:"Body"`
	Identities json.RawMessage     `json:"Identities"`
}

func (s *server) provisionHTTP(ctx context.Context, inv *Invocation) (*Result, error) {
	raw, err := inv.Request.Binding(ProvisionHTTPRequestBinding)
	if err != nil {
		return nil, err
	}
	var d httpTriggerData
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("%w: Data.%s is not an HTTP request object: %v", ErrBadPayload, ProvisionHTTPRequestBinding, err)
	}
	req, err := d.toRequest(ctx)
	if err != nil {
		return nil, err
	}
	api, err := s.opts.Services.API(ctx)
	if err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	headers := map[string]string{}
	for k, v := range rec.Header() {
		headers[k] = strings.Join(v, ", ")
	}
	return &Result{Outputs: map[string]any{ProvisionHTTPResponseBinding: map[string]any{
		"statusCode": rec.Code,
		"headers":    headers,
		"body":       rec.Body.String(),
	}}}, nil
}

func (d *httpTriggerData) toRequest(ctx context.Context) (*http.Request, error) {
	u, err := url.Parse(d.URL)
	if err != nil || d.Method == "" {
		return nil, fmt.Errorf("%w: Data.req needs Url and Method", ErrBadPayload)
	}
	var body []byte
	if len(d.Body) > 0 && string(d.Body) != "null" {
		var s string
		if err := json.Unmarshal(d.Body, &s); err != nil {
			body = d.Body // an object or array body
		} else {
			body = []byte(s)
			ct := ""
			for k, v := range d.Headers {
				if strings.EqualFold(k, "Content-Type") && len(v) > 0 {
					ct = v[0]
				}
			}
			// Binary bodies (octet-stream, multipart) arrive base64-encoded.
			if strings.HasPrefix(ct, "application/octet-stream") || strings.HasPrefix(ct, "multipart/") {
				if b, err := base64.StdEncoding.DecodeString(s); err == nil {
					body = b
				}
			}
		}
	}
	req, err := http.NewRequestWithContext(ctx, d.Method, u.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: Data.req: %v", ErrBadPayload, err)
	}
	req.Host = u.Host
	for k, vs := range d.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.ContentLength = int64(len(body))
	return req, nil
}
