package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/submit"
)

// TestCallbackOnceUnderOverlappingMonitors: a job with a callbackUrl ends; while the monitor run that
// saw the end is POSTing the final report (the receiver takes 3 s to answer), other MonitorTimer runs
// overlap it — past-due runs, as after a restart or on a second instance, which sweep the ended jobs.
// internal/monitor/doc.go says overlapping runs are harmless; the receiver must get the report once and
// the record note the delivery once.
func TestCallbackOnceUnderOverlappingMonitors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := devtls.LoadOrCreate(filepath.Join(dir, "tls")) // the stack loads the same CA
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	posts := 0
	first := make(chan struct{})
	cb := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep struct {
			ID    string     `json:"id"`
			State jobs.State `json:"state"`
		}
		_ = json.NewDecoder(r.Body).Decode(&rep)
		mu.Lock()
		posts++
		n := posts
		mu.Unlock()
		if n == 1 {
			close(first)
			time.Sleep(3 * time.Second) // a slow flow endpoint
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	if cb.TLS, err = ca.ServerTLS(); err != nil {
		t.Fatal(err)
	}
	cb.StartTLS()
	t.Cleanup(cb.Close)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return posts
	}

	e := newEnv(t, envOptions{Dir: dir, Settings: map[string]string{
		"SPOMIG_CALLBACK_ALLOWED_HOSTS": strings.TrimPrefix(cb.URL, "https://"),
	}})
	c, err := e.createWith(map[string]string{"siteUrl": e.s.SiteURL("callback"), "label": "e2e callback",
		"callbackUrl": cb.URL + "/workflows/e2e/triggers/manual/run"})
	if err != nil {
		t.Fatal(err)
	}
	files := genFiles("", 10, 51, 16<<10)
	zip, err := buildZip(t.TempDir(), "cb.zip", migpkgOptions(c), files)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.upload(c.UploadURL, zip); err != nil {
		t.Fatal(err)
	}
	e.waitEnded(c.ID, jobs.StateCompleted)
	select {
	case <-first:
	case <-time.After(jobTimeout):
		t.Fatal("no callback within the deadline")
	}
	// While the first POST is being answered: overlapping past-due runs.
	base, err := e.handlerURL()
	if err != nil {
		t.Fatal(err)
	}
	var fns []func() error
	for i := 0; i < 3; i++ {
		fns = append(fns, func() error { return e.runMonitorDirect(base, true) })
	}
	if err := parallel(fns...); err != nil {
		t.Fatal(err)
	}
	// Every overlapping run has returned, so its POST was made; the first one is answered once noted.
	j := e.waitJob(c.ID, "the callback noted", jobTimeout, func(j api.Job) bool { return countNotes(j, "callback delivered") > 0 })
	if n := count(); n != 1 {
		t.Errorf("the final report was POSTed %d times to the callback, want once", n)
	}
	if n := countNotes(j, "callback delivered"); n != 1 {
		t.Errorf("the record notes %d callback deliveries, want one", n)
	}
}

func countNotes(j api.Job, text string) int {
	n := 0
	for _, h := range j.History {
		if strings.HasPrefix(h.Reason, submit.NotePrefix) && strings.Contains(h.Reason, text) {
			n++
		}
	}
	return n
}
