package capture

import (
	"bytes"
	"io"
	"net/http"
)

// Transport reads every answer of Next whole and shows it to Seen before the caller reads it (to learn
// the secrets it carries, or to keep it for a scan). Cost: each answer is held in memory once.
type Transport struct {
	Next http.RoundTripper
	Seen func(req *http.Request, resp *http.Response, body []byte)
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip sends req through Next; the answer's body is read, shown to Seen, and given back unread.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.Next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	t.Seen(req, resp, body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
