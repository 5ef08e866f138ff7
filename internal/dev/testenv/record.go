package testenv

import (
	"net/http"
	"strings"
	"sync"

	"github.com/spomig/spomig/internal/dev/testenv/capture"
)

// SPORecorder is the transport of an spo.Client (ClientOptions.Wrap) that learns the keys and SAS
// signatures of every SharePoint answer into Secrets and counts the calls by SharePoint function.
type SPORecorder struct {
	Next    http.RoundTripper
	Secrets *capture.Secrets

	mu    sync.Mutex
	calls map[string]int // SharePoint function → calls
}

var _ http.RoundTripper = (*SPORecorder)(nil)

// RoundTrip sends req through Next and reads the whole answer to learn its secrets.
func (r *SPORecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	t := capture.Transport{Next: r.Next, Seen: func(req *http.Request, _ *http.Response, body []byte) {
		r.Secrets.LearnSPOAnswer(body)
		r.count(req.URL.Path)
	}}
	return t.RoundTrip(req)
}

// count counts a call by its function: the path after /_api/ (and site/), without arguments.
func (r *SPORecorder) count(path string) {
	fn := path
	if i := strings.Index(fn, "/_api/"); i >= 0 {
		fn = fn[i+len("/_api/"):]
	}
	if i := strings.IndexAny(fn, "("); i >= 0 {
		fn = fn[:i]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[strings.TrimPrefix(fn, "site/")]++
}

// Count is the number of calls of a SharePoint function ("web", "ProvisionMigrationContainers" …).
func (r *SPORecorder) Count(fn string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[fn]
}
