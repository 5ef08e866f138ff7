// Package demo plays a migration engineer's part against a running spomig app: it creates a migration
// through the HTTP API with a function key, builds a realistic package, uploads it to the staging URL the
// API returned, follows the job through the API with a progress display, and prints the final report and
// where the imported files and the decrypted logs can be seen.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/spomig/spomig/internal/migpkg"
)

// Options configures Run.
type Options struct {
	APIBase     string // e.g. http://127.0.0.1:7071/api
	FunctionKey string // sent as x-functions-key
	AdminBase   string // e.g. http://127.0.0.1:7071 (for /admin/functions/MonitorTimer); "" to wait for the timer
	MasterKey   string
	SiteURL     string // the target site
	Label       string
	WorkDir     string // where the package zip is written
	Files       int    // number of files (default 320)
	Seed        uint64 // package shape (default 1)
	Out         io.Writer
	HTTP        *http.Client
	Timeout     time.Duration // whole run (default 15m)
	// Poke, when set, is the interval at which the demo triggers MonitorTimer through the admin endpoint
	// instead of waiting for its one-minute schedule. Default 3s.
	Poke time.Duration
}

// Report is what Run found at the end.
type Report struct {
	JobID, State string
	Job          map[string]any
	Files        int
	Bytes        int64
	Elapsed      time.Duration
	Logs         []string
}

// Run plays the scenario. It returns an error naming the step that failed.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Files == 0 {
		o.Files = 320
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 2 * time.Minute}
	}
	if o.Timeout == 0 {
		o.Timeout = 15 * time.Minute
	}
	if o.Poke == 0 {
		o.Poke = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }

	// 1. Create the migration.
	say("→ POST %s/migrations  {siteUrl: %s}", o.APIBase, o.SiteURL)
	var created map[string]any
	status, hdr, err := o.call(ctx, http.MethodPost, o.APIBase+"/migrations",
		map[string]string{"siteUrl": o.SiteURL, "label": o.Label}, &created)
	if err != nil {
		return nil, fmt.Errorf("create migration: %w", err)
	}
	if status != http.StatusCreated {
		return nil, fmt.Errorf("create migration: status %d: %v", status, created)
	}
	jobID, _ := created["id"].(string)
	upload, _ := created["upload"].(map[string]any)
	uploadURL, _ := upload["url"].(string)
	if jobID == "" || uploadURL == "" {
		return nil, fmt.Errorf("create migration: answer lacks id or upload.url: %v", keys(created))
	}
	say("  201 Created  Location: %s  job %s  state %v", hdr.Get("Location"), jobID, created["state"])

	// 2. Build the package.
	zipPath := filepath.Join(o.WorkDir, "package-"+jobID+".zip")
	// The package must carry the target web's id (SharePoint checks every object's ParentWebId against
	// gWebId): the API answered it.
	webID, _ := created["webId"].(string)
	files, total, err := buildPackage(zipPath, o.SiteURL, webID, o.Files, o.Seed)
	if err != nil {
		return nil, fmt.Errorf("build package: %w", err)
	}
	st, _ := os.Stat(zipPath)
	say("→ built %s: %d files, %s of content, zip %s", filepath.Base(zipPath), files, human(total), human(st.Size()))

	// 3. Upload it to the staging URL (a write-only SAS: no storage credentials needed).
	say("→ uploading the package to the staging URL (write-only SAS, expires %v)", upload["expiresAt"])
	bb, err := blockblob.NewClientWithNoCredential(uploadURL, nil)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	f, err := os.Open(zipPath)
	if err != nil {
		return nil, err
	}
	_, err = bb.UploadFile(ctx, f, &blockblob.UploadFileOptions{BlockSize: 4 << 20, Concurrency: 4})
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("upload the package: %w", err)
	}
	say("  uploaded %s", human(st.Size()))

	// 4. Follow the job.
	say("→ following GET %s/migrations/%s", o.APIBase, jobID)
	var last string
	var job map[string]any
	nextPoke := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("follow job %s: %w (last state: %s)", jobID, err, last)
		}
		if o.AdminBase != "" && time.Now().After(nextPoke) {
			_ = o.poke(ctx, "MonitorTimer")
			nextPoke = time.Now().Add(o.Poke)
		}
		job = map[string]any{}
		status, _, err := o.call(ctx, http.MethodGet, o.APIBase+"/migrations/"+jobID, nil, &job)
		if err != nil || status != http.StatusOK {
			return nil, fmt.Errorf("get job: status %d: %v", status, err)
		}
		line := progressLine(job)
		if line != last {
			say("  %s  %s", time.Since(start).Round(100*time.Millisecond), line)
			last = line
		}
		var result map[string]any
		rs, rh, err := o.call(ctx, http.MethodGet, o.APIBase+"/migrations/"+jobID+"/result", nil, &result)
		if err != nil {
			return nil, fmt.Errorf("get result: %w", err)
		}
		if rs == http.StatusOK {
			job = result
			break
		}
		if rs != http.StatusAccepted {
			return nil, fmt.Errorf("get result: status %d", rs)
		}
		// The API advises Retry-After (10-30 s, as a Power Automate flow would wait); the demo polls
		// faster, to show the progress as it happens.
		_ = rh
		wait := 500 * time.Millisecond
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	rep := &Report{JobID: jobID, Job: job, Files: files, Bytes: total, Elapsed: time.Since(start)}
	rep.State, _ = job["state"].(string)

	// 5. The final report and the logs.
	pretty, _ := json.MarshalIndent(job, "  ", "  ")
	say("→ final report (GET /api/migrations/%s/result → 200):\n  %s", jobID, pretty)
	var logs map[string]any
	if ls, _, err := o.call(ctx, http.MethodGet, o.APIBase+"/migrations/"+jobID+"/logs", nil, &logs); err == nil && ls == http.StatusOK {
		if fl, ok := logs["files"].([]any); ok {
			for _, x := range fl {
				if m, ok := x.(map[string]any); ok {
					rep.Logs = append(rep.Logs, fmt.Sprint(m["name"]))
				}
			}
		}
	}
	say("→ decrypted import logs: %s (GET %s/migrations/%s/logs/<name>)", strings.Join(rep.Logs, ", "), o.APIBase, jobID)
	if rep.State != "Completed" {
		return rep, fmt.Errorf("job %s ended %s: %v", jobID, rep.State, job["failureReason"])
	}
	return rep, nil
}

func (o *Options) call(ctx context.Context, method, url string, in, out any) (int, http.Header, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("x-functions-key", o.FunctionKey)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := o.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("status %d, body not JSON: %.200s", resp.StatusCode, b)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

func (o *Options) poke(ctx context.Context, function string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.AdminBase+"/admin/functions/"+function, strings.NewReader(`{"input":""}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-functions-key", o.MasterKey)
	resp, err := o.HTTP.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errors.New(resp.Status)
	}
	return nil
}

func progressLine(job map[string]any) string {
	state, _ := job["state"].(string)
	parts := []string{fmt.Sprintf("%-20s", state)}
	if c, ok := job["counters"].(map[string]any); ok {
		prog := func(k string) (done, total float64) {
			m, _ := c[k].(map[string]any)
			done, _ = m["done"].(float64)
			total, _ = m["total"].(float64)
			return
		}
		if d, t := prog("files"); t > 0 {
			parts = append(parts, fmt.Sprintf("files %4.0f/%-4.0f", d, t))
		}
		if d, t := prog("bytes"); t > 0 {
			parts = append(parts, fmt.Sprintf("bytes %9s/%-9s", human(int64(d)), human(int64(t))))
		}
		if d, t := prog("objects"); t > 0 {
			parts = append(parts, fmt.Sprintf("SharePoint objects %.0f/%.0f", d, t))
		}
		if e, _ := c["errors"].(float64); e > 0 {
			parts = append(parts, fmt.Sprintf("errors %.0f", e))
		}
		if w, _ := c["warnings"].(float64); w > 0 {
			parts = append(parts, fmt.Sprintf("warnings %.0f", w))
		}
	}
	if p, ok := job["postponed"].(map[string]any); ok && state == "Postponed" {
		parts = append(parts, fmt.Sprintf("next pickup %v (%v)", p["nextPickupTime"], p["reason"]))
	}
	return strings.Join(parts, "  ")
}

// buildPackage writes a realistic package: nested folders, non-ASCII names, sizes from 0 bytes to tens of
// MiB (most small, a few large), streamed (never held in memory).
func buildPackage(zipPath, siteURL, webID string, n int, seed uint64) (int, int64, error) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := migpkg.NewBuilder(migpkg.BuilderOptions{SiteURL: siteURL, WebID: webID, KeepPaths: true})
	folders := []string{
		"Finance/2024/Q1", "Finance/2024/Q2", "Finance/Budgets", "HR/Policies", "HR/Onboarding/Checklists",
		"Projects/Ærø Bridge/Drawings", "Projects/Zürich Office/Photos", "Projects/東京/設計", "Marketing/Brand/Logos",
		"Legal/Contracts/Signed", "Engineering/Specs/v2", "Engineering/Specs/v2/Appendices", "Archive/2019",
	}
	exts := []string{".docx", ".xlsx", ".pdf", ".pptx", ".txt", ".png", ".csv", ".msg"}
	names := []string{"report", "Übersicht", "plan", "résumé", "notes", "budget", "draft", "final", "データ", "minutes", "ñandú", "spec"}
	var total int64
	for i := 0; i < n; i++ {
		var size int64
		switch r := rng.IntN(100); {
		case i < 3:
			size = int64(20+rng.IntN(21)) << 20 // three files of 20-40 MiB
		case r < 5:
			size = 0
		case r < 60:
			size = int64(rng.IntN(64 << 10))
		case r < 92:
			size = int64(64<<10 + rng.IntN(1<<20))
		default:
			size = int64(1<<20 + rng.IntN(4<<20))
		}
		dir := folders[rng.IntN(len(folders))]
		name := fmt.Sprintf("%s/%s %03d%s", dir, names[rng.IntN(len(names))], i, exts[rng.IntN(len(exts))])
		if err := b.AddFile(migpkg.BuildFile{Path: name, Size: size}); err != nil {
			return 0, 0, err
		}
		total += size
	}
	if err := os.MkdirAll(filepath.Dir(zipPath), 0o755); err != nil {
		return 0, 0, err
	}
	f, err := os.Create(zipPath)
	if err != nil {
		return 0, 0, err
	}
	if err := b.Write(f); err != nil {
		f.Close()
		return 0, 0, err
	}
	return n, total, f.Close()
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
