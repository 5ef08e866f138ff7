package api

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spomig/spomig/internal/jobs"
)

// Job is the JSON of a migration job. It is built from the record, which holds references only: never
// the key or a SAS. Upload is set in the 201 answer of POST /api/migrations only; LogFiles in the final
// answer of the result operation only.
type Job struct {
	ID            string             `json:"id"`
	Label         string             `json:"label,omitempty"`
	SiteURL       string             `json:"siteUrl"`
	WebID         string             `json:"webId,omitempty"`
	State         jobs.State         `json:"state"`
	Ended         bool               `json:"ended"`
	Source        jobs.Source        `json:"source,omitempty"`
	SPOJobID      string             `json:"spoJobId,omitempty"`
	CallbackURL   string             `json:"callbackUrl,omitempty"`
	CreatedAt     time.Time          `json:"createdAt"`
	UpdatedAt     time.Time          `json:"updatedAt"`
	EndedAt       *time.Time         `json:"endedAt,omitempty"`
	History       []HistoryEntry     `json:"history"`
	Counters      Counters           `json:"counters"`
	FirstErrors   []jobs.ItemFailure `json:"firstErrors"`
	FailureReason string             `json:"failureReason,omitempty"`
	Postponed     *Postponed         `json:"postponed,omitempty"`
	Links         Links              `json:"links"`
	Upload        *Upload            `json:"upload,omitempty"`
	LogFiles      []LogFile          `json:"logFiles,omitempty"`
}

// HistoryEntry is one state change.
type HistoryEntry struct {
	State  jobs.State `json:"state"`
	At     time.Time  `json:"at"`
	Reason string     `json:"reason,omitempty"`
}

// Counters are the job's progress as SharePoint reports it.
type Counters struct {
	Files    Progress `json:"files"`
	Bytes    Progress `json:"bytes"`
	Objects  Progress `json:"objects"`
	Errors   int64    `json:"errors"`
	Warnings int64    `json:"warnings"`
}

// Progress is done of total; Percent is absent while the total is unknown.
type Progress struct {
	Done    int64    `json:"done"`
	Total   int64    `json:"total"`
	Percent *float64 `json:"percent,omitempty"`
}

// Postponed is SharePoint's postponement while the job is Postponed.
type Postponed struct {
	NextPickupTime *time.Time `json:"nextPickupTime,omitempty"`
	Reason         string     `json:"reason,omitempty"`
}

// Links are absolute URLs of the job's operations.
type Links struct {
	Self   string `json:"self"`
	Result string `json:"result"`
	Logs   string `json:"logs"`
}

// Upload tells the caller where and how to upload the package.
type Upload struct {
	URL       string            `json:"url"`
	Method    string            `json:"method"`
	Headers   map[string]string `json:"headers"`
	ExpiresAt time.Time         `json:"expiresAt"`
}

// LogFile is one file of a job's decrypted logs.
type LogFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	URL  string `json:"url"`
}

// Logs is the index of a job's decrypted logs.
type Logs struct {
	Files []LogFile `json:"files"`
}

// Page is one page of GET /api/migrations.
type Page struct {
	Value             []Job  `json:"value"`
	ContinuationToken string `json:"continuationToken,omitempty"`
	NextLink          string `json:"nextLink,omitempty"`
}

func round1(p float64) *float64 {
	v := float64(int64(p*10+0.5)) / 10
	return &v
}

func progress(done, total int64, pct float64, ok bool) Progress {
	p := Progress{Done: done, Total: total}
	if ok {
		p.Percent = round1(pct)
	}
	return p
}

func utc(t time.Time) time.Time { return t.UTC() }

// jobView builds the JSON of j; base is the absolute URL of /api (see baseURL).
func jobView(j *jobs.Job, base string) Job {
	v := Job{
		ID:            j.ID,
		Label:         j.Label,
		SiteURL:       j.SiteURL,
		WebID:         j.WebID,
		State:         j.State,
		Ended:         j.Terminal(),
		Source:        j.Source,
		SPOJobID:      j.SPOJobID,
		CallbackURL:   j.CallbackURL,
		CreatedAt:     utc(j.CreatedAt),
		UpdatedAt:     utc(j.UpdatedAt),
		History:       make([]HistoryEntry, 0, len(j.History)),
		FirstErrors:   j.FirstErrors,
		FailureReason: j.FailureReason,
	}
	if v.FirstErrors == nil {
		v.FirstErrors = []jobs.ItemFailure{}
	}
	if !j.EndedAt.IsZero() {
		t := utc(j.EndedAt)
		v.EndedAt = &t
	}
	for _, h := range j.History {
		v.History = append(v.History, HistoryEntry{State: h.State, At: utc(h.At), Reason: h.Reason})
	}
	fp, fok := j.FilesPercent()
	bp, bok := j.BytesPercent()
	op, ook := j.ObjectsPercent()
	v.Counters = Counters{
		Files:    progress(j.FilesDone, j.FilesTotal, fp, fok),
		Bytes:    progress(j.BytesDone, j.BytesTotal, bp, bok),
		Objects:  progress(j.ObjectsDone, j.ObjectsTotal, op, ook),
		Errors:   j.Errors,
		Warnings: j.Warnings,
	}
	if j.State == jobs.StatePostponed {
		p := &Postponed{Reason: j.Postponed.Reason}
		if !j.Postponed.NextPickupTime.IsZero() {
			t := utc(j.Postponed.NextPickupTime)
			p.NextPickupTime = &t
		}
		v.Postponed = p
	}
	self := base + "/migrations/" + url.PathEscape(j.ID)
	v.Links = Links{Self: self, Result: self + "/result", Logs: self + "/logs"}
	return v
}

// baseURL is the absolute URL of /api as the caller reached it. Power Automate follows Location and
// nextLink only when they are absolute. With Options.BaseURL set, that is used; otherwise the scheme comes
// from X-Forwarded-Proto, X-AppService-Proto or X-ARR-SSL (App Service's front end), else the connection,
// and the host from X-Forwarded-Host, DISGUISED-HOST (App Service), else Host.
func (s *server) baseURL(r *http.Request) string {
	if s.opts.BaseURL != "" {
		return s.opts.BaseURL + "/api"
	}
	first := func(h string) string { return strings.TrimSpace(strings.Split(r.Header.Get(h), ",")[0]) }
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := strings.ToLower(first("X-Forwarded-Proto")); p == "http" || p == "https" {
		scheme = p
	} else if p := strings.ToLower(first("X-AppService-Proto")); p == "http" || p == "https" {
		scheme = p
	} else if r.Header.Get("X-ARR-SSL") != "" {
		scheme = "https"
	}
	host := r.Host
	for _, h := range []string{"X-Forwarded-Host", "DISGUISED-HOST"} {
		if v := first(h); validHost(v) {
			host = v
			break
		}
	}
	if !validHost(host) {
		host = "localhost"
	}
	return scheme + "://" + host + "/api"
}

// validHost accepts host or host:port made of the characters a host name or an IP literal uses.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}
