package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/dev/stack"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/vault"
)

// Deadlines. Generous: the suite runs two stacks at once on a 2-core machine.
const (
	jobTimeout   = 90 * time.Second // one job, upload to end
	startTimeout = 2 * time.Minute  // stack start
	pollEvery    = 300 * time.Millisecond
	pokeEvery    = time.Second // MonitorTimer through the admin endpoint
)

// envOptions tunes one test's stack.
type envOptions struct {
	SPO      spoemu.Options
	Settings map[string]string
	// Dir is the stack's folder (default t.TempDir()); set it when something must exist before the
	// stack starts (the dev CA, for a proxy).
	Dir string
}

// env is one running stack and what a test observed of it.
type env struct {
	t   *testing.T
	s   *stack.Stack
	dir string
	log *syncBuffer
	cli *http.Client

	mu     sync.Mutex
	bodies map[string]*apiBody // every distinct API response body (by content)

	pokeStop   chan struct{}
	pokeDone   chan struct{}
	pokePaused atomic.Bool
}

// apiBody is an API response body as the test received it.
type apiBody struct {
	what string // "POST /migrations 201", for messages
	body []byte
	// uploadSig is the staging upload URL signature this body legitimately carries (201 of a create).
	uploadSig string
}

// newEnv starts a stack for t, with MonitorTimer poked every second. Cleanup stops it and then runs the
// secrets check over everything captured; on failure the whole log is kept in a file named in the output.
func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	e := &env{t: t, dir: dir, log: &syncBuffer{}, cli: &http.Client{Timeout: 2 * time.Minute}, bodies: map[string]*apiBody{}}
	t.Cleanup(func() {
		e.checkSecrets()
		if t.Failed() || os.Getenv("SPOMIG_E2E_KEEP_LOGS") != "" {
			e.keepLog()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{AppDir: repoRoot, Dir: dir, HandlerCommand: []string{handlerBin},
		SPO: o.SPO, Settings: o.Settings, Log: e.log})
	if err != nil {
		e.keepLog()
		t.Fatalf("start the stack: %v", err)
	}
	e.s = s
	t.Cleanup(func() {
		e.stopPoking()
		if err := s.Stop(); err != nil {
			t.Logf("stop the stack: %v", err)
		}
	})
	e.startPoking()
	return e
}

// keepLog writes the captured log of every part to a file that outlives the test.
func (e *env) keepLog() {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(e.t.Name())
	f, err := os.CreateTemp("", "spomig-e2e-"+name+"-*.log")
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(e.log.String())
	e.t.Logf("stack log of this test: %s", f.Name())
}

// ---- MonitorTimer ----

func (e *env) startPoking() {
	e.pokeStop, e.pokeDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.pokeDone)
		t := time.NewTicker(pokeEvery)
		defer t.Stop()
		for {
			select {
			case <-e.pokeStop:
				return
			case <-t.C:
			}
			if !e.pokePaused.Load() {
				_ = e.invoke("MonitorTimer", "")
			}
		}
	}()
}

func (e *env) stopPoking() {
	if e.pokeStop != nil {
		close(e.pokeStop)
		<-e.pokeDone
		e.pokeStop = nil
	}
}

// invoke runs a non-HTTP function once through the host's admin endpoint (master key): input is the
// queue message text, or container/blob for the blob trigger.
func (e *env) invoke(function, input string) error {
	b, _ := json.Marshal(map[string]string{"input": input})
	req, err := http.NewRequest(http.MethodPost, e.s.Host.URL()+"/admin/functions/"+function, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-functions-key", e.s.Host.MasterKey())
	resp, err := e.cli.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("admin invoke %s: %s", function, resp.Status)
	}
	return nil
}

// ---- the API ----

// call sends one API request with the function key and records the answer's body.
func (e *env) call(method, path string, in any) (int, http.Header, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.s.APIBase()+path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("x-functions-key", e.s.Host.FunctionKey())
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.cli.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	e.record(fmt.Sprintf("%s %s %d", method, path, resp.StatusCode), b, "")
	return resp.StatusCode, resp.Header, b, err
}

func (e *env) record(what string, b []byte, uploadSig string) {
	if len(b) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	k := string(b)
	if old, ok := e.bodies[k]; ok {
		if uploadSig != "" {
			old.uploadSig = uploadSig
		}
		return
	}
	e.bodies[k] = &apiBody{what: what, body: b, uploadSig: uploadSig}
}

// created is the 201 answer of POST /api/migrations.
type created struct {
	ID, WebID, SiteURL, UploadURL string
	Job                           api.Job
}

// create creates a migration through the API; errors are returned (it runs in goroutines).
func (e *env) create(siteURL, label string) (created, error) {
	return e.createWith(map[string]string{"siteUrl": siteURL, "label": label})
}

// createWith posts a create request body (siteUrl, label, webId, callbackUrl).
func (e *env) createWith(req map[string]string) (created, error) {
	var c created
	var err error
	for try := 0; ; try++ { // a transient answer (the handler restarting) is retried; 4xx never
		var status int
		var b []byte
		status, _, b, err = e.call(http.MethodPost, "/migrations", req)
		if err == nil && status == http.StatusCreated {
			if err := json.Unmarshal(b, &c.Job); err != nil {
				return c, fmt.Errorf("create: 201 body: %v", err)
			}
			if c.Job.Upload == nil || c.Job.Upload.URL == "" || c.Job.ID == "" {
				return c, fmt.Errorf("create: 201 body lacks id or upload.url: %s", b)
			}
			c.ID, c.WebID, c.SiteURL, c.UploadURL = c.Job.ID, c.Job.WebID, c.Job.SiteURL, c.Job.Upload.URL
			e.record("POST /migrations 201", b, sigOf(c.UploadURL))
			return c, nil
		}
		if err == nil {
			err = fmt.Errorf("create: status %d: %s", status, b)
			if status < 500 {
				return c, err
			}
		}
		if try == 5 {
			return c, err
		}
		time.Sleep(time.Second)
	}
}

func (e *env) mustCreate(siteURL, label string) created {
	e.t.Helper()
	c, err := e.create(siteURL, label)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// job reads GET /api/migrations/{id}.
func (e *env) job(id string) (api.Job, []byte, error) {
	status, _, b, err := e.call(http.MethodGet, "/migrations/"+url.PathEscape(id), nil)
	if err != nil {
		return api.Job{}, b, err
	}
	if status != http.StatusOK {
		return api.Job{}, b, fmt.Errorf("GET job %s: status %d", id, status)
	}
	var j api.Job
	if err := json.Unmarshal(b, &j); err != nil {
		return api.Job{}, b, fmt.Errorf("GET job %s: %v", id, err)
	}
	return j, b, nil
}

// follow polls the job until it ends, handing every answer to observe (it runs in goroutines).
func (e *env) follow(id string, observe func(api.Job)) (api.Job, error) {
	return e.waitJobErr(id, "end", jobTimeout, func(j api.Job) bool {
		observe(j)
		return j.Ended
	})
}

// waitJobErr polls the job until ok accepts it; on timeout the error carries the job's last JSON.
func (e *env) waitJobErr(id, what string, timeout time.Duration, ok func(api.Job) bool) (api.Job, error) {
	deadline := time.Now().Add(timeout)
	var last []byte
	var lastErr error
	for {
		j, b, err := e.job(id)
		if err == nil {
			last, lastErr = b, nil
			if ok(j) {
				return j, nil
			}
		} else {
			lastErr = err
			if len(b) > 0 {
				last = b
			}
		}
		if time.Now().After(deadline) {
			return j, fmt.Errorf("job %s: no %s within %s; last error: %v; last answer: %s", id, what, timeout, lastErr, last)
		}
		time.Sleep(pollEvery)
	}
}

func (e *env) waitJob(id, what string, timeout time.Duration, ok func(api.Job) bool) api.Job {
	e.t.Helper()
	j, err := e.waitJobErr(id, what, timeout, ok)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func ended(j api.Job) bool { return j.Ended }

// waitEnded waits for a terminal state and checks it is want.
func (e *env) waitEnded(id string, want jobs.State) api.Job {
	e.t.Helper()
	j := e.waitJob(id, "end", jobTimeout, ended)
	if j.State != want {
		e.t.Fatalf("job %s ended %s, want %s (reason %q)", id, j.State, want, j.FailureReason)
	}
	return j
}

// list reads every page of GET /api/migrations.
func (e *env) list() ([]api.Job, error) {
	var all []api.Job
	path := "/migrations?top=100"
	for {
		status, _, b, err := e.call(http.MethodGet, path, nil)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("list: status %d: %s", status, b)
		}
		var p api.Page
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, err
		}
		all = append(all, p.Value...)
		if p.ContinuationToken == "" {
			return all, nil
		}
		path = "/migrations?top=100&continuationToken=" + url.QueryEscape(p.ContinuationToken)
	}
}

// logs waits until the job's decrypted import logs are listed and returns the index.
func (e *env) logs(id string) ([]api.LogFile, error) {
	deadline := time.Now().Add(jobTimeout)
	var last []byte
	for {
		status, _, b, err := e.call(http.MethodGet, "/migrations/"+url.PathEscape(id)+"/logs", nil)
		if err == nil && status == http.StatusOK {
			var l api.Logs
			if err := json.Unmarshal(b, &l); err != nil {
				return nil, err
			}
			for _, f := range l.Files {
				if strings.HasSuffix(f.Name, ".log") {
					return l.Files, nil
				}
			}
		}
		last = b
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("job %s: no import log listed within %s; last answer: %s", id, jobTimeout, last)
		}
		time.Sleep(pollEvery)
	}
}

// logText reads one log file through the API.
func (e *env) logText(id, name string) (string, error) {
	status, _, b, err := e.call(http.MethodGet, "/migrations/"+url.PathEscape(id)+"/logs/"+url.PathEscape(name), nil)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("log %s of job %s: status %d: %s", name, id, status, b)
	}
	return string(b), nil
}

// ---- storage ----

// upload puts the package at the staging upload URL (a write-only SAS), as a caller would.
func (e *env) upload(uploadURL, zipPath string) error {
	bb, err := blockblob.NewClientWithNoCredential(uploadURL, nil)
	if err != nil {
		return err
	}
	f, err := os.Open(zipPath)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
	defer cancel()
	_, err = bb.UploadFile(ctx, f, &blockblob.UploadFileOptions{BlockSize: 4 << 20, Concurrency: 2})
	if err != nil {
		return fmt.Errorf("upload %s: %w", filepath.Base(zipPath), err)
	}
	return nil
}

// appBlob is the app storage's blob client (shared key).
func (e *env) appBlob() *azblob.Client {
	e.t.Helper()
	c, err := azblob.NewClientFromConnectionString(e.s.AppStorage.ConnectionString(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// spoBlob is SharePoint's storage account (shared key), to look into the provisioned containers.
func (e *env) spoBlob() *azblob.Client {
	e.t.Helper()
	c, err := azblob.NewClientFromConnectionString(e.s.SPOStorage.ConnectionString(),
		&azblob.ClientOptions{ClientOptions: azcoreOpts(e.s.CA.HTTPClient())})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// drop uploads a package straight into migration-staging with the app storage's key: a self-service
// drop, no API call.
func (e *env) drop(name, zipPath string, metadata map[string]string) error {
	md := map[string]*string{}
	for k, v := range metadata {
		md[k] = &v
	}
	f, err := os.Open(zipPath)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
	defer cancel()
	c, err := azblob.NewClientFromConnectionString(e.s.AppStorage.ConnectionString(), nil)
	if err != nil {
		return err
	}
	_, err = c.UploadFile(ctx, "migration-staging", name, f, &azblob.UploadFileOptions{Metadata: md, BlockSize: 4 << 20})
	return err
}

// stagingExists reports whether migration-staging/<name> exists.
func (e *env) stagingExists(name string) bool {
	e.t.Helper()
	_, err := e.appBlob().ServiceClient().NewContainerClient("migration-staging").NewBlobClient(name).GetProperties(context.Background(), nil)
	return err == nil
}

// enqueueSubmit puts a submit message on migration-submit as the product does (base64 of the JSON).
func (e *env) enqueueSubmit(jobID string) error {
	q, err := azqueue.NewQueueClientFromConnectionString(e.s.AppStorage.ConnectionString(), "migration-submit", nil)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]string{"jobId": jobID})
	_, err = q.EnqueueMessage(context.Background(), base64Std(b), nil)
	return err
}

// queueDepth is the approximate number of messages of a queue of the app storage.
func (e *env) queueDepth(name string) (int32, error) {
	q, err := azqueue.NewQueueClientFromConnectionString(e.s.AppStorage.ConnectionString(), name, nil)
	if err != nil {
		return 0, err
	}
	p, err := q.GetProperties(context.Background(), nil)
	if err != nil {
		return 0, err
	}
	if p.ApproximateMessagesCount == nil {
		return 0, nil
	}
	return *p.ApproximateMessagesCount, nil
}

// ---- Key Vault ----

// custody reads the job secrets as the app does (vault package, the stack's CA, a dev credential).
func (e *env) custody() *vault.Custody {
	e.t.Helper()
	c, err := vault.New(vault.Options{VaultURL: e.s.KeyVault.URL(), Credential: &kvemu.Credential{},
		DisableChallengeResourceVerification: true, ClientOptions: azcoreOpts(e.s.CA.HTTPClient()),
		Logger: discardLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// ---- the SPO emulator ----

// spoJobs lists the SPO emulator's jobs (GET /_emulator/jobs), those of site (e.g. "/sites/hr") when
// site is not empty.
func (e *env) spoJobs(site string) []spoemu.JobInfo {
	e.t.Helper()
	resp, err := e.s.SPO.HTTPClient().Get(e.s.SPO.URL() + "/_emulator/jobs")
	if err != nil {
		e.t.Fatalf("SPO emulator jobs: %v", err)
	}
	defer resp.Body.Close()
	var all []spoemu.JobInfo
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		e.t.Fatalf("SPO emulator jobs: %v", err)
	}
	if site == "" {
		return all
	}
	var out []spoemu.JobInfo
	for _, j := range all {
		if strings.EqualFold(j.Site, site) {
			out = append(out, j)
		}
	}
	return out
}

// siteDir is where the SPO emulator keeps the files imported into a site's default library.
func (e *env) siteDir(site string) string {
	return filepath.Join(e.dir, "data", "sharepoint", "sites", site, "Shared Documents")
}

// ---- the handler process ----

// killHandler kills the handler with SIGKILL and waits until the host has started a new one.
func (e *env) killHandler() {
	e.t.Helper()
	pid := e.s.Host.HandlerPID()
	if pid == 0 {
		e.t.Fatal("no handler process to kill")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		e.t.Fatalf("kill -9 %d: %v", pid, err)
	}
	e.t.Logf("killed the handler (pid %d)", pid)
	deadline := time.Now().Add(time.Minute)
	for {
		if p := e.s.Host.HandlerPID(); p != 0 && p != pid {
			if _, err := e.handlerURL(); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the host did not restart the handler after kill -9 %d", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// handlerURL is the running handler's own address (FUNCTIONS_CUSTOMHANDLER_PORT in its environment),
// for invocations the host would serialise.
func (e *env) handlerURL() (string, error) {
	pid := e.s.Host.HandlerPID()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return "", err
	}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("FUNCTIONS_CUSTOMHANDLER_PORT=")); ok {
			u := "http://127.0.0.1:" + string(v)
			resp, err := http.Get(u + "/")
			if err != nil {
				return "", err
			}
			resp.Body.Close()
			return u, nil
		}
	}
	return "", errors.New("FUNCTIONS_CUSTOMHANDLER_PORT not in the handler's environment")
}

// runMonitorDirect invokes MonitorTimer on the handler itself, as a second host instance would (the
// local host runs one timer invocation at a time). A past-due run also sweeps the ended jobs.
func (e *env) runMonitorDirect(base string, pastDue bool) error {
	body := `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":` + fmt.Sprint(pastDue) + `}},` +
		`"Metadata":{"sys":{"MethodName":"MonitorTimer","UtcNow":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","RandGuid":"00000000-0000-0000-0000-000000000001"}}}`
	resp, err := e.cli.Post(base+"/MonitorTimer", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("MonitorTimer: %s: %s", resp.Status, b)
	}
	return nil
}

// ---- small things ----

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the captured lines that contain every one of words.
func (s *syncBuffer) lines(words ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
next:
	for sc.Scan() {
		for _, w := range words {
			if !strings.Contains(sc.Text(), w) {
				continue next
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// parallel runs fns at once and returns their errors joined.
func parallel(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
