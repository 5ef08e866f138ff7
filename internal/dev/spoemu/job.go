package spoemu

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/crypt"
)

// SPMigrationJobState values (GetMigrationJobStatus).
const (
	StateNone       = 0 // not in the queue: finished, deleted or unknown
	StateQueued     = 2
	StateProcessing = 4
)

// Outcomes of a job (JobInfo.Outcome).
const (
	OutcomeCompleted           = "Completed"           // JobEnd, TotalErrors 0
	OutcomeCompletedWithErrors = "CompletedWithErrors" // JobEnd, TotalErrors > 0
	OutcomeFailed              = "Failed"              // JobFatalError
	OutcomeCancelled           = "Cancelled"           // DeleteMigrationJob while queued
)

// Counters are a job's counters, as JobProgress and JobEnd report them.
type Counters struct {
	FilesCreated                       int64 // file versions created (every version counts)
	FilesCreatedIrrespectiveOfVersions int64 // files created, each counted once
	BytesProcessed                     int64 // plaintext bytes of every version imported
	BytesProcessedOnlyCurrentVersion   int64
	ObjectsProcessed                   int64 // SPObjects processed (failed ones included)
	TotalExpectedSPObjects             int64
	TotalExpectedBytes                 int64 // sum of the manifests' FileSize
	TotalErrors                        int64
	TotalWarnings                      int64
}

// JobInfo is a snapshot of a job, for tests and tools.
type JobInfo struct {
	ID, Site, WebID string
	State           int    // StateQueued, StateProcessing or StateNone
	Outcome         string // "" while the job runs, then one of the Outcome constants
	Created, Ended  time.Time
	Events          int // events in the progress log
	Counters        Counters
}

// job is one migration job.
type job struct {
	id            string // lower-case GUID
	site          *site
	webID         string
	correlationID string
	created       time.Time
	encrypted     bool
	key           []byte // the job key while the job runs; nil afterwards (guarded by emitMu)
	data, meta    storageRef
	queue         *azqueue.QueueClient // report queue, or nil

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// guarded by Emulator.mu
	state    int
	outcome  string
	ended    time.Time
	expired  bool
	events   []string // the progress log: event JSON, append-only
	counters Counters

	emitMu sync.Mutex
	final  bool // a terminal event was emitted (guarded by emitMu)
}

func (j *job) info() JobInfo {
	return JobInfo{ID: j.id, Site: j.site.key, WebID: j.webID, State: j.state, Outcome: j.outcome,
		Created: j.created, Ended: j.ended, Events: len(j.events), Counters: j.counters}
}

// Job returns a snapshot of a job.
func (e *Emulator) Job(id string) (JobInfo, bool) {
	g, _ := parseGUID(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[g]
	if !ok {
		return JobInfo{}, false
	}
	return j.info(), true
}

// Events returns a job's progress log: the event JSON, in order (unencrypted, as GetMigrationJobProgress
// returns them).
func (e *Emulator) Events(id string) []string {
	g, _ := parseGUID(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	if j, ok := e.jobs[g]; ok {
		return append([]string(nil), j.events...)
	}
	return nil
}

// WaitJob waits until a job has ended (its outcome is set) or ctx is done.
func (e *Emulator) WaitJob(ctx context.Context, id string) (JobInfo, error) {
	g, _ := parseGUID(id)
	e.mu.Lock()
	j, ok := e.jobs[g]
	e.mu.Unlock()
	if !ok {
		return JobInfo{}, fmt.Errorf("spoemu: job %s not found", id)
	}
	select {
	case <-j.done:
	case <-ctx.Done():
		return JobInfo{}, ctx.Err()
	}
	info, _ := e.Job(g)
	return info, nil
}

// common returns the members most events carry.
func (j *job) common(extra map[string]string) map[string]string {
	m := map[string]string{
		"TotalRetryCount":    "0",
		"MigrationType":      "None",
		"MigrationDirection": "Import",
		"CorrelationId":      j.correlationID,
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// terminal events end the event stream of a job.
func (e *Emulator) terminal(name string) bool {
	switch name {
	case crypt.EventJobEnd, crypt.EventJobDeleted:
		return true
	case crypt.EventJobFatalError:
		return !e.opts.JobEndAfterFatal
	}
	return false
}

// event is an event to emit: its name and members other than Event, JobId and Time.
type event struct {
	name   string
	fields map[string]string
}

// emit appends events to the job's progress log and puts them on the report queue (encrypted with
// the job key for an encrypted job), in order and without interleaving with other emits of the job.
// Events after a terminal one are dropped.
func (e *Emulator) emit(j *job, name string, fields map[string]string) {
	e.emitAll(j, event{name, fields})
}

func (e *Emulator) emitAll(j *job, evs ...event) {
	j.emitMu.Lock()
	defer j.emitMu.Unlock()
	for _, x := range evs {
		if j.final {
			return
		}
		j.final = e.terminal(x.name)
		ev, err := crypt.MarshalEvent(x.name, j.id, time.Now(), x.fields)
		if err != nil {
			e.log.Error("marshal event", "job", j.id, "event", x.name, "err", err)
			continue
		}
		e.mu.Lock()
		j.events = append(j.events, string(ev))
		e.mu.Unlock()
		if j.queue == nil {
			continue
		}
		text := crypt.PlainMessage(ev)
		if j.encrypted {
			if text, err = crypt.SealEvent(ev, j.id, j.key); err != nil {
				e.log.Error("seal event", "job", j.id, "event", x.name, "err", err)
				continue
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = j.queue.EnqueueMessage(ctx, text, nil)
		cancel()
		if err != nil {
			e.log.Warn("report queue write failed", "job", j.id, "event", x.name, "err", redactErr(err))
		}
	}
}

// createJob answers CreateMigrationJobEncrypted (encrypted) and CreateMigrationJob.
func (c *call) createJob(encrypted bool) (answer, *spError) {
	e := c.e
	ctx := c.r.Context()
	now := time.Now()

	webID, spErr := c.guidArg("gWebId")
	if spErr != nil {
		return answer{}, spErr
	}
	if webID != c.s.webID {
		return answer{}, argErr("gWebId")
	}
	refs := [2]storageRef{}
	for i, p := range []string{"azureContainerSourceUri", "azureContainerManifestUri"} {
		raw, ok, spErr := c.text(p)
		if spErr != nil {
			return answer{}, spErr
		}
		if !ok || strings.TrimSpace(raw) == "" {
			return answer{}, &spError{http.StatusBadRequest, "-2147024809, System.ArgumentNullException",
				"Value cannot be null.\r\nParameter name: " + p}
		}
		ref, err := parseStorageRef(raw, e.acct.blobURL)
		if err != nil {
			return answer{}, argErrMsg(p, sentence(err))
		}
		refs[i] = ref
	}
	data, meta := refs[0], refs[1]
	if data.base.String() == meta.base.String() {
		return answer{}, argErrMsg("azureContainerManifestUri",
			"The manifest container must be different from the source (data) container.")
	}

	// Encryption key.
	var key []byte
	if encrypted {
		k, spErr := c.encryptionKey()
		if spErr != nil {
			return answer{}, spErr
		}
		key = k
	}

	// Containers: SAS rights and times, provisioning records, the key.
	for i, ref := range refs {
		param := [2]string{"azureContainerSourceUri", "azureContainerManifestUri"}[i]
		e.mu.Lock()
		rec := e.containers[ref.name]
		e.mu.Unlock()
		provisionedHere := ref.ours && rec != nil
		if provisionedHere && !encrypted {
			return answer{}, &spError{http.StatusBadRequest, codeInvalidOperation,
				"Migration jobs from SharePoint-provided containers must be encrypted: use CreateMigrationJobEncrypted with the provisioned EncryptionKey."}
		}
		if provisionedHere && rec.site != c.s.key {
			return answer{}, argErrMsg(param, "The Azure container was provisioned for another site.")
		}
		if provisionedHere {
			h := sha256.Sum256(key)
			if subtle.ConstantTimeCompare(h[:], rec.keyHash[:]) != 1 {
				return answer{}, argErrMsg("options", "The encryption key does not match the key provisioned with the Azure containers.")
			}
		}
		if err := ref.sas.checkTimes(now); err != nil {
			return answer{}, argErrMsg(param, sentence(err))
		}
		need := "r"
		switch {
		case i == 0 && !provisionedHere:
			need = "rl"
		case i == 1 && !provisionedHere:
			need = "rlw"
		case i == 1:
			need = "rw"
		}
		for k := 0; k < len(need); k++ {
			if !ref.sas.has(need[k]) {
				return answer{}, argErrMsg(param, fmt.Sprintf(
					"The SAS of the Azure container does not grant the required access (%s): it grants sp=%s.", need, ref.sas.perms))
			}
		}
		if e.https() && ref.ours && ref.sas.protocol != "https" {
			return answer{}, argErrMsg(param, "The SAS of the Azure container must be restricted to HTTPS (spr=https).")
		}
		if err := e.probeContainer(ctx, ref); err != nil {
			return answer{}, argErrMsg(param, sentence(err))
		}
	}

	// Report queue (optional).
	var queueClient *azqueue.QueueClient
	qraw, qok, spErr := c.text("azureQueueReportUri")
	if spErr != nil {
		return answer{}, spErr
	}
	if qok && strings.TrimSpace(qraw) != "" {
		qc, spErr := c.reportQueue(qraw, now)
		if spErr != nil {
			return answer{}, spErr
		}
		queueClient = qc
	}

	j := &job{
		id: newUUID(), site: c.s, webID: webID, correlationID: newUUID(), created: now.UTC(),
		encrypted: encrypted, key: key, data: data, meta: meta, queue: queueClient,
		state: StateQueued, done: make(chan struct{}),
	}
	j.ctx, j.cancel = context.WithCancel(e.ctx)
	e.mu.Lock()
	e.sweepLocked(now)
	e.jobs[j.id] = j
	e.mu.Unlock()
	e.log.Info("job created", "job", j.id, "site", c.s.key, "encrypted", encrypted, "queue", queueClient != nil)
	e.emit(j, crypt.EventJobQueued, j.common(map[string]string{"SiteId": c.s.siteID, "DbId": e.dbID}))
	e.wg.Add(1)
	go e.run(j)
	return answer{method: c.fn.name, typeName: "Edm.Guid", value: j.id}, nil
}

// encryptionKey reads options.AES256CBCKey (accepting verbose bodies' __metadata).
func (c *call) encryptionKey() ([]byte, *spError) {
	raw, ok := c.args["options"]
	if !ok || string(raw) == "null" {
		return nil, &spError{http.StatusBadRequest, "-2147024809, System.ArgumentNullException",
			"Value cannot be null.\r\nParameter name: options"}
	}
	var opts map[string]json.RawMessage
	if err := json.Unmarshal(raw, &opts); err != nil {
		return nil, c.typeErr("options", "SP.EncryptionOption")
	}
	var keyText string
	found := false
	for k, v := range opts {
		switch strings.ToLower(k) {
		case "__metadata":
			var md struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(v, &md) != nil || (md.Type != "" && md.Type != "SP.EncryptionOption") {
				return nil, &spError{http.StatusBadRequest, codeInvalidQuery,
					"A type named '" + md.Type + "' could not be resolved by the model. When a model is available, each type name must resolve to a valid type."}
			}
		case "aes256cbckey":
			if json.Unmarshal(v, &keyText) != nil {
				return nil, c.typeErr("AES256CBCKey", "Edm.Binary")
			}
			found = true
		default:
			return nil, &spError{http.StatusBadRequest, codeInvalidQuery,
				fmt.Sprintf("The property '%s' does not exist on type 'SP.EncryptionOption'. Make sure to only use property names that are defined by the type.", k)}
		}
	}
	if !found || keyText == "" {
		return nil, &spError{http.StatusBadRequest, "-2147024809, System.ArgumentNullException",
			"Value cannot be null.\r\nParameter name: AES256CBCKey"}
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keyText))
	if err != nil {
		return nil, c.typeErr("AES256CBCKey", "Edm.Binary")
	}
	if len(key) != crypt.KeySize {
		return nil, argErr("AES256CBCKey")
	}
	return key, nil
}

// reportQueue validates azureQueueReportUri and returns a client that writes through its SAS.
func (c *call) reportQueue(raw string, now time.Time) (*azqueue.QueueClient, *spError) {
	e := c.e
	const param = "azureQueueReportUri"
	ref, err := parseStorageRef(raw, e.acct.queueURL)
	if err != nil {
		return nil, argErrMsg(param, sentence(err))
	}
	if err := ref.sas.checkTimes(now); err != nil {
		return nil, argErrMsg(param, sentence(err))
	}
	provisionedHere := false
	if ref.ours {
		e.mu.Lock()
		for _, s := range e.sites {
			if s.queueName == ref.name {
				provisionedHere = true
			}
		}
		e.mu.Unlock()
	}
	switch {
	case provisionedHere && !ref.sas.has('a'):
		return nil, argErrMsg(param, "Cannot connect the Queue: the SAS does not grant Add.")
	case !provisionedHere && !ref.sas.permSet("rau"):
		return nil, argErrMsg(param, fmt.Sprintf(
			"Cannot connect the Queue: the SAS must grant exactly Add, Read and Update (sp=rau); it grants sp=%s.", ref.sas.perms))
	}
	qc, err := azqueue.NewQueueClientWithNoCredential(strings.TrimSpace(raw),
		&azqueue.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.opts.StorageClient}})
	if err != nil {
		return nil, argErrMsg(param, "Cannot connect the Queue.")
	}
	if _, err := qc.PeekMessage(c.r.Context(), nil); err != nil {
		return nil, argErrMsg(param, "Cannot connect the Queue: "+redactErr(err)+".")
	}
	return qc, nil
}

// probeContainer checks through the client's SAS that the container exists and the SAS is accepted:
// reading the properties of a blob that does not exist must give BlobNotFound.
func (e *Emulator) probeContainer(ctx context.Context, ref storageRef) error {
	cc, err := container.NewClientWithNoCredential(strings.TrimSpace(ref.raw),
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.opts.StorageClient}})
	if err != nil {
		return errors.New("the Azure container URI cannot be used")
	}
	_, err = cc.NewBlobClient(".spoemu-probe-"+newUUID()).GetProperties(ctx, nil)
	switch {
	case err == nil, bloberror.HasCode(err, bloberror.BlobNotFound):
		return nil
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return errors.New("the Azure container does not exist")
	}
	status, code := storageStatus(err)
	if status == http.StatusForbidden {
		return fmt.Errorf("the Azure container refused the SAS (%s)", code)
	}
	if status == http.StatusNotFound {
		return errors.New("the Azure container does not exist")
	}
	return fmt.Errorf("the Azure container cannot be reached (%s)", redactErr(err))
}

// sweepLocked forgets the events of jobs past their retention (their id still answers "expired").
func (e *Emulator) sweepLocked(now time.Time) {
	for _, j := range e.jobs {
		if !j.expired && !j.ended.IsZero() && now.Sub(j.ended) > e.opts.JobRetention {
			j.expired, j.events = true, nil
		}
	}
}

// lookupJob finds a job of the call's site.
func (c *call) lookupJob(param string) (*job, string, *spError) {
	id, spErr := c.guidArg(param)
	if spErr != nil {
		return nil, "", spErr
	}
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	c.e.sweepLocked(time.Now())
	j := c.e.jobs[id]
	if j != nil && j.site != c.s {
		j = nil
	}
	return j, id, nil
}

// jobStatus answers GetMigrationJobStatus: 2 Queued, 4 Processing, 0 None (ended or unknown).
func (c *call) jobStatus() (answer, *spError) {
	j, _, spErr := c.lookupJob("id")
	if spErr != nil {
		return answer{}, spErr
	}
	state := StateNone
	if j != nil {
		c.e.mu.Lock()
		state = j.state
		c.e.mu.Unlock()
	}
	return answer{method: c.fn.name, typeName: "Edm.Int32", value: state}, nil
}

// deleteJob answers DeleteMigrationJob: a queued job is cancelled and removed (JobCancelled with
// CancelledByUser "true", then JobDeleted) and the answer is true; otherwise false.
func (c *call) deleteJob() (answer, *spError) {
	e := c.e
	j, _, spErr := c.lookupJob("id")
	if spErr != nil {
		return answer{}, spErr
	}
	ok := false
	if j != nil {
		e.mu.Lock()
		if j.state == StateQueued {
			j.state, j.outcome, j.ended = StateNone, OutcomeCancelled, time.Now().UTC()
			ok = true
		}
		e.mu.Unlock()
	}
	if ok {
		// Emit while the job still holds its key, then stop its goroutine (which forgets the key).
		e.emitAll(j,
			event{crypt.EventJobCancelled, j.common(map[string]string{"CancelledByUser": "true"})},
			event{crypt.EventJobDeleted, map[string]string{"CorrelationId": j.correlationID}})
		j.cancel()
		e.log.Info("job deleted", "job", j.id)
	}
	return answer{method: c.fn.name, typeName: "Edm.Boolean", value: ok}, nil
}

// migrationStatus answers GetMigrationStatus: the site's jobs still in the queue.
func (c *call) migrationStatus() (answer, *spError) {
	c.e.mu.Lock()
	var items []obj
	for _, j := range c.e.jobs {
		if j.site == c.s && j.state != StateNone {
			items = append(items, obj{{"JobId", j.id}, {"JobState", j.state}})
		}
	}
	c.e.mu.Unlock()
	return answer{method: c.fn.name, typeName: "Collection(SP.SPMigrationJobStatus)",
		value: complexList{typeName: "SP.SPMigrationJobStatus", items: items}}, nil
}

// jobProgress answers GetMigrationJobProgress: the events from nextToken on (at most
// ProgressPageSize), and the token to continue from; the same token when nothing is new.
func (c *call) jobProgress() (answer, *spError) {
	e := c.e
	j, _, spErr := c.lookupJob("jobId")
	if spErr != nil {
		return answer{}, spErr
	}
	if j == nil {
		return answer{}, &spError{http.StatusInternalServerError, codeJobNotFound, "Job not found"}
	}
	tokText, _, spErr := c.text("nextToken")
	if spErr != nil {
		return answer{}, spErr
	}
	tok := 0
	if t := strings.TrimSpace(tokText); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return answer{}, argErr("nextToken")
		}
		tok = n
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if j.expired {
		return answer{}, &spError{http.StatusInternalServerError, codeJobExpired, "Job status expired"}
	}
	logs := strList{}
	next := tok
	if tok < len(j.events) {
		end := min(tok+e.opts.ProgressPageSize, len(j.events))
		logs = append(logs, j.events[tok:end]...)
		next = end
	}
	return answer{method: c.fn.name, typeName: "SP.MigrationJobProgress", complex: true,
		props: obj{{"Logs", logs}, {"NextToken", strconv.Itoa(next)}}}, nil
}
