package spoemu

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
)

// serveAdmin serves the emulator's control API (not part of SharePoint; no authentication):
//
//	GET    /_emulator/health                      {"ok":true,…}
//	GET    /_emulator/sites/<name>                the site's ids and URL (also /_emulator/teams/<name>, /_emulator/root)
//	GET    /_emulator/sites/<name>/faults         the faults left
//	POST   /_emulator/sites/<name>/faults         replace the faults (JSON Faults)
//	DELETE /_emulator/sites/<name>/faults         clear them
//	GET    /_emulator/jobs                        every job (JobInfo)
//	GET    /_emulator/jobs/<id>                   one job
//	GET    /_emulator/jobs/<id>/events            its progress log (event JSON strings)
func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/_emulator"), "/"), "/")
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	fail := func(status int, msg string) { reply(status, map[string]string{"error": msg}) }

	switch {
	case len(parts) == 1 && parts[0] == "health":
		reply(http.StatusOK, map[string]any{"ok": true, "url": e.baseURL, "blobEndpoint": e.acct.blobURL.String(),
			"queueEndpoint": e.acct.queueURL.String(), "tenantId": e.opts.TenantID})
		return
	case len(parts) >= 1 && parts[0] == "jobs":
		e.adminJobs(r, parts[1:], reply, fail)
		return
	}

	// Sites: sites/<name>[/faults], teams/<name>[/faults], root[/faults].
	var sitePath string
	var rest []string
	switch {
	case len(parts) >= 2 && (parts[0] == "sites" || parts[0] == "teams"):
		sitePath, rest = parts[0]+"/"+parts[1], parts[2:]
	case len(parts) >= 1 && parts[0] == "root":
		sitePath, rest = "", parts[1:]
	default:
		fail(http.StatusNotFound, "unknown admin path")
		return
	}
	key, ok := normalizeSitePath(sitePath)
	if !ok {
		fail(http.StatusBadRequest, "invalid site")
		return
	}
	s := e.siteFor(key)
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
		reply(http.StatusOK, map[string]any{"path": s.path + "/", "url": e.baseURL + s.path, "webId": s.webID,
			"siteId": s.siteID, "known": e.knownSite(key)})
	case len(rest) == 1 && rest[0] == "faults":
		switch r.Method {
		case http.MethodGet:
		case http.MethodDelete:
			e.SetFaults(sitePath, Faults{})
		case http.MethodPost, http.MethodPut:
			var f Faults
			dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&f); err != nil {
				fail(http.StatusBadRequest, "faults: "+err.Error())
				return
			}
			e.SetFaults(sitePath, f)
		default:
			fail(http.StatusMethodNotAllowed, "use GET, POST or DELETE")
			return
		}
		reply(http.StatusOK, e.Faults(sitePath))
	default:
		fail(http.StatusNotFound, "unknown admin path")
	}
}

func (e *Emulator) adminJobs(r *http.Request, parts []string, reply func(int, any), fail func(int, string)) {
	if r.Method != http.MethodGet {
		fail(http.StatusMethodNotAllowed, "use GET")
		return
	}
	switch len(parts) {
	case 0:
		e.mu.Lock()
		infos := make([]JobInfo, 0, len(e.jobs))
		for _, j := range e.jobs {
			infos = append(infos, j.info())
		}
		e.mu.Unlock()
		slices.SortFunc(infos, func(a, b JobInfo) int { return a.Created.Compare(b.Created) })
		reply(http.StatusOK, infos)
	case 1, 2:
		info, ok := e.Job(parts[0])
		if !ok {
			fail(http.StatusNotFound, "job not found")
			return
		}
		if len(parts) == 1 {
			reply(http.StatusOK, info)
			return
		}
		if parts[1] != "events" {
			fail(http.StatusNotFound, "unknown admin path")
			return
		}
		evs := e.Events(parts[0])
		if evs == nil {
			evs = []string{}
		}
		reply(http.StatusOK, evs)
	default:
		fail(http.StatusNotFound, "unknown admin path")
	}
}
