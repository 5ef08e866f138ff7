package spoemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/migpkg"
)

// jobFailure is a JobFatalError: the whole job fails.
type jobFailure struct {
	code, typ, msg string
}

func (f *jobFailure) Error() string { return f.typ + ": " + f.msg }

func fatalf(code, typ, format string, args ...any) *jobFailure {
	return &jobFailure{code, typ, fmt.Sprintf(format, args...)}
}

// itemError is a JobError (or JobWarning) about one object.
type itemError struct {
	objectType, url, id string
	code, typ, msg      string
}

// Error codes and types the emulator reports in JobError/JobWarning/JobFatalError. They are .NET
// HRESULTs and exception types as SharePoint prints them; which code SharePoint uses for which failure
// is not documented (see DEVIATIONS).
const (
	hrFileNotFound   = "-2147024894" // 0x80070002
	hrArgument       = "-2147024809" // 0x80070057
	hrCrypto         = "-2146233296" // 0x80131430
	hrXML            = "-2146232000" // 0x80131940
	hrFatalDefault   = "-2147213196"
	hrStorage        = "-2146232832" // 0x80131600
	hrIO             = "-2146232800" // 0x80131620
	hrUnauthorized   = "-2147024891" // 0x80070005
	typeFileNotFound = "System.IO.FileNotFoundException"
	typeArgument     = "System.ArgumentException"
	typeCrypto       = "System.Security.Cryptography.CryptographicException"
	typeXML          = "System.Xml.XmlException"
	typeSPException  = "Microsoft.SharePoint.SPException"
	typeIO           = "System.IO.IOException"
)

// blobVer is what a container listing says about one blob name.
type blobVer struct {
	hasBase  bool
	baseIV   string
	baseSize int64
	snapshot string // latest snapshot ("" when none)
	snapTime time.Time
	snapIV   string
	snapSize int64
}

// run is the life of one job, in its own goroutine.
func (e *Emulator) run(j *job) {
	defer e.wg.Done()
	defer close(j.done)
	ctx := j.ctx
	if !sleep(ctx, e.opts.QueueDelay) {
		e.abandon(j)
		return
	}
	if p := e.takePostpone(j.site); p != nil {
		for i := 0; i < p.Count; i++ {
			e.mu.Lock()
			queued := 0
			for _, x := range e.jobs {
				if x.state == StateQueued {
					queued++
				}
			}
			e.mu.Unlock()
			e.emit(j, crypt.EventJobPostponed, j.common(map[string]string{
				"NextPickupTime": crypt.FormatEventTime(time.Now().Add(time.Duration(p.Delay))),
				"SiteId":         j.site.siteID, "DbId": e.dbID,
				"JobsInQueue": strconv.Itoa(queued),
				"Reason":      p.Reason,
			}))
			if !sleep(ctx, time.Duration(p.Delay)) {
				e.abandon(j)
				return
			}
		}
	}
	if err := e.gate(ctx, j, PhaseQueued); err != nil {
		if ctx.Err() != nil {
			e.abandon(j)
			return
		}
		e.fail(j, nil, fatalf(hrFatalDefault, typeSPException, "%s", err))
		return
	}
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		e.abandon(j)
		return
	}
	defer func() { <-e.sem }()
	e.mu.Lock()
	if j.state != StateQueued { // deleted meanwhile
		e.mu.Unlock()
		e.abandon(j) // forget the key
		return
	}
	j.state = StateProcessing
	e.mu.Unlock()

	p := e.newProc(j)
	defer p.close()
	e.emit(j, crypt.EventJobLogFileCreate, map[string]string{"FileName": logName(j.id, "log"), "CorrelationId": j.correlationID})
	e.emit(j, crypt.EventJobStart, j.common(map[string]string{
		"SiteId": j.site.siteID, "WebId": j.webID, "DBId": e.dbID, "FarmId": e.farmID,
		"ServerId": e.serverID, "SubscriptionId": e.opts.TenantID,
	}))
	p.logf("Information", "", "", "Job %s started. Target web %s (%s). Encrypted: %t.", j.id, j.site.path+"/", j.webID, j.encrypted)
	if err := e.gate(ctx, j, PhaseProcessing); err != nil {
		if ctx.Err() != nil {
			e.abandon(j)
			return
		}
		e.fail(j, p, fatalf(hrFatalDefault, typeSPException, "%s", err))
		return
	}
	if f := e.takeFatal(j.site); f != nil {
		e.fail(j, p, f)
		return
	}
	if failure := p.importPackage(ctx); failure != nil {
		if ctx.Err() != nil {
			e.abandon(j)
			return
		}
		e.fail(j, p, failure)
		return
	}
	p.finish(ctx)
	outcome := OutcomeCompleted
	if p.c.TotalErrors > 0 {
		outcome = OutcomeCompletedWithErrors
	}
	e.emit(j, crypt.EventJobEnd, j.common(p.counterFields(true)))
	e.end(j, p, outcome)
}

// sleep waits d or until ctx is done; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Emulator) gate(ctx context.Context, j *job, ph Phase) error {
	if e.opts.Gate == nil {
		return nil
	}
	return e.opts.Gate(ctx, j.id, ph)
}

// abandon ends a job whose context was cancelled: deleted (already recorded) or the emulator closing.
func (e *Emulator) abandon(j *job) {
	e.mu.Lock()
	if j.outcome == "" {
		j.state, j.outcome, j.ended = StateNone, OutcomeFailed, time.Now().UTC()
	}
	e.mu.Unlock()
	j.emitMu.Lock()
	j.key = nil
	j.emitMu.Unlock()
}

// fail emits JobFatalError (and JobEnd when configured) and ends the job.
func (e *Emulator) fail(j *job, p *proc, f *jobFailure) {
	if p == nil {
		p = e.newProc(j)
		defer p.close()
	}
	p.logf("Error", "", f.code, "%s", f.msg)
	p.finish(j.ctx)
	e.emit(j, crypt.EventJobFatalError, j.common(map[string]string{
		"ObjectType": "", "Url": "", "Id": "", "ErrorCode": f.code, "ErrorType": f.typ, "Message": f.msg,
	}))
	p.record(&p.errs, "Fatal", itemError{code: f.code, typ: f.typ, msg: f.msg})
	if e.opts.JobEndAfterFatal {
		e.emit(j, crypt.EventJobEnd, j.common(p.counterFields(true)))
	}
	e.end(j, p, OutcomeFailed)
}

// end records the outcome, forgets the key and writes the summary.
func (e *Emulator) end(j *job, p *proc, outcome string) {
	e.mu.Lock()
	j.state, j.outcome, j.ended, j.counters = StateNone, outcome, time.Now().UTC(), p.c
	info := j.info()
	e.mu.Unlock()
	j.emitMu.Lock()
	j.key = nil
	j.emitMu.Unlock()
	p.writeSummary(info)
	e.log.Info("job ended", "job", j.id, "outcome", outcome, "files", p.c.FilesCreated, "errors", p.c.TotalErrors)
}

func (e *Emulator) takePostpone(s *site) *Postpone {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := s.faults.Postpone
	if p == nil {
		return nil
	}
	c := *p
	if c.Count <= 0 {
		c.Count = 1
	}
	if c.Reason == "" {
		c.Reason = "JobInQueue:Resource"
	}
	if p.Jobs > 0 {
		p.Jobs--
		if p.Jobs == 0 {
			s.faults.Postpone = nil
		}
	}
	return &c
}

func (e *Emulator) takeFatal(s *site) *jobFailure {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := s.faults.Fatal
	if f == nil {
		return nil
	}
	if f.Count <= 1 {
		s.faults.Fatal = nil
	} else {
		f.Count--
	}
	code, msg := f.ErrorCode, f.Message
	if code == "" {
		code = hrFatalDefault
	}
	if msg == "" {
		msg = "Injected fatal error"
	}
	return &jobFailure{code, typeSPException, msg}
}

// itemFault is the injected JobError for a file URL, or nil.
func (e *Emulator) itemFault(s *site, url string) *itemError {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := s.faults.ItemError
	if f == nil || f.Match == "" || !strings.Contains(url, f.Match) {
		return nil
	}
	code, msg := f.ErrorCode, f.Message
	if code == "" {
		code = "-2147024891"
	}
	if msg == "" {
		msg = "Injected item error"
	}
	return &itemError{objectType: "File", url: url, code: code, typ: "System.UnauthorizedAccessException", msg: msg}
}

func (e *Emulator) slowItem(s *site) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Duration(s.faults.SlowItem)
}

// proc is the processing state of one job.
type proc struct {
	e          *Emulator
	j          *job
	data, meta *container.Client // read access: shared key for the emulator's own containers, else the SAS
	dataIdx    map[string]blobVer
	metaIdx    map[string]blobVer
	c          Counters
	started    time.Time
	bySize     map[string]*crypt.FileSizeStats
	byType     map[string]*crypt.ObjectTypeStats
	logs       map[string]*os.File // "log", "err", "wrn" → temporary file of log lines
	logNames   []string
	errs, wrns []recordedItem
	siteDir    string // <DataDir>/sites/<site>, or "" when nothing is kept
}

// recordedItem is an error or warning kept for the summary.
type recordedItem struct {
	Time       string `json:"Time"`
	Level      string `json:"Level"`
	ObjectType string `json:"ObjectType,omitempty"`
	URL        string `json:"Url,omitempty"`
	ID         string `json:"Id,omitempty"`
	ErrorCode  string `json:"ErrorCode"`
	ErrorType  string `json:"ErrorType"`
	Message    string `json:"Message"`
}

func (e *Emulator) newProc(j *job) *proc {
	p := &proc{e: e, j: j, started: time.Now(), bySize: map[string]*crypt.FileSizeStats{},
		byType: map[string]*crypt.ObjectTypeStats{}, logs: map[string]*os.File{}}
	p.data = e.readClient(j.data)
	p.meta = e.readClient(j.meta)
	if e.opts.DataDir != "" {
		p.siteDir = filepath.Join(e.opts.DataDir, filepath.FromSlash(j.site.dataName()))
	}
	return p
}

// readClient is SharePoint's access to a container: its own account key for containers of its
// account (provisioned containers have no List in their SAS), else the client's SAS.
func (e *Emulator) readClient(ref storageRef) *container.Client {
	if ref.ours {
		return e.blob.ServiceClient().NewContainerClient(ref.name)
	}
	cc, err := container.NewClientWithNoCredential(strings.TrimSpace(ref.raw),
		&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.opts.StorageClient}})
	if err != nil { // the URI was parsed at job creation; keep a client that fails on use
		return e.blob.ServiceClient().NewContainerClient(ref.name)
	}
	return cc
}

func (p *proc) close() {
	for _, f := range p.logs {
		f.Close()
		os.Remove(f.Name())
	}
}

// event emits an event of the job with the common members.
func (p *proc) event(name string, fields map[string]string) {
	p.e.emit(p.j, name, p.j.common(fields))
}

// itemFailed emits JobError (or JobWarning) for one object and logs it.
func (p *proc) itemFailed(warning bool, ie itemError) {
	name, level := crypt.EventJobError, "Error"
	if warning {
		name, level = crypt.EventJobWarning, "Warning"
		p.c.TotalWarnings++
		p.record(&p.wrns, level, ie)
	} else {
		p.c.TotalErrors++
		p.record(&p.errs, level, ie)
	}
	p.logf(level, ie.url, ie.code, "%s", ie.msg)
	p.event(name, map[string]string{
		"ObjectType": ie.objectType, "Url": ie.url, "Id": ie.id,
		"ErrorCode": ie.code, "ErrorType": ie.typ, "Message": ie.msg,
		"SourceListItemIntId": "", "TargetListItemIntId": "",
	})
}

func (p *proc) record(list *[]recordedItem, level string, ie itemError) {
	if len(*list) >= p.e.opts.MaxRecorded {
		return
	}
	*list = append(*list, recordedItem{Time: crypt.FormatEventTime(time.Now()), Level: level, ObjectType: ie.objectType,
		URL: ie.url, ID: ie.id, ErrorCode: ie.code, ErrorType: ie.typ, Message: ie.msg})
}

// logName is the name of a log blob SharePoint writes to the manifest container.
func logName(jobID, ext string) string { return "Import-" + jobID + "-1." + ext }

// logf appends a line to the job's log (errors also to .err, warnings to .wrn): tab-separated time,
// level, error code, object URL and message. Log lines go to temporary files, never to memory.
func (p *proc) logf(level, objectURL, code, format string, args ...any) {
	msg := strings.NewReplacer("\t", " ", "\r", " ", "\n", " ").Replace(fmt.Sprintf(format, args...))
	line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\r\n", crypt.FormatEventTime(time.Now()), level, code, objectURL, msg)
	exts := []string{"log"}
	switch level {
	case "Error":
		exts = append(exts, "err")
	case "Warning":
		exts = append(exts, "wrn")
	}
	for _, ext := range exts {
		f := p.logs[ext]
		if f == nil {
			var err error
			if f, err = os.CreateTemp("", "spoemu-log-*"); err != nil {
				p.e.log.Warn("job log", "job", p.j.id, "err", err)
				continue
			}
			p.logs[ext] = f
			p.logNames = append(p.logNames, logName(p.j.id, ext))
			fmt.Fprintf(f, "Time\tLevel\tErrorCode\tObjectUrl\tMessage\r\n")
		}
		_, _ = f.WriteString(line)
	}
}

// finish writes the log blobs (Import-<job>-1.log, .err, .wrn) into the manifest container, encrypted
// with the job key and the IV in the blob metadata "IV" for an encrypted job.
func (p *proc) finish(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	p.logf("Information", "", "", "Job %s finished. Objects processed: %d. Files created: %d. Bytes processed: %d. Errors: %d. Warnings: %d.",
		p.j.id, p.c.ObjectsProcessed, p.c.FilesCreated, p.c.BytesProcessed, p.c.TotalErrors, p.c.TotalWarnings)
	w := p.e.writeClient(p.j.meta)
	p.j.emitMu.Lock()
	key := p.j.key
	p.j.emitMu.Unlock()
	for _, ext := range []string{"log", "err", "wrn"} {
		f := p.logs[ext]
		if f == nil {
			continue
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			continue
		}
		var body io.Reader = f
		md := map[string]*string{}
		if p.j.encrypted {
			iv, err := crypt.NewIV()
			if err != nil {
				continue
			}
			if body, err = crypt.NewEncryptReader(f, key, iv); err != nil {
				p.e.log.Warn("job log encryption", "job", p.j.id, "err", err)
				continue
			}
			ivText := base64.StdEncoding.EncodeToString(iv)
			md["IV"] = &ivText
		}
		_, err := w.NewBlockBlobClient(logName(p.j.id, ext)).UploadStream(ctx, body, &blockblob.UploadStreamOptions{Metadata: md})
		if err != nil {
			p.e.log.Warn("job log upload", "job", p.j.id, "log", ext, "err", redactErr(err))
		}
	}
}

// writeClient is SharePoint's write access to the manifest container (for logs).
func (e *Emulator) writeClient(ref storageRef) *container.Client { return e.readClient(ref) }

// counterFields are the members of JobProgress and JobEnd.
func (p *proc) counterFields(end bool) map[string]string {
	c := p.c
	dur := time.Since(p.started).Milliseconds()
	bySize, _ := json.Marshal(p.bySize)
	byType, _ := json.Marshal(p.byType)
	m := map[string]string{
		"FilesCreated":                        strconv.FormatInt(c.FilesCreated, 10),
		"BytesProcessed":                      strconv.FormatInt(c.BytesProcessed, 10),
		"ObjectsProcessed":                    strconv.FormatInt(c.ObjectsProcessed, 10),
		"TotalExpectedSPObjects":              strconv.FormatInt(c.TotalExpectedSPObjects, 10),
		"TotalExpectedBytes":                  strconv.FormatInt(c.TotalExpectedBytes, 10),
		"TotalErrors":                         strconv.FormatInt(c.TotalErrors, 10),
		"TotalWarnings":                       strconv.FormatInt(c.TotalWarnings, 10),
		"WaitTimeOnSqlThrottlingMilliseconds": "0",
		"TotalDurationInMs":                   strconv.FormatInt(dur, 10),
		"CpuDurationInMs":                     strconv.FormatInt(dur, 10),
		"SqlDurationInMs":                     "0",
		"SqlQueryCount":                       strconv.FormatInt(c.ObjectsProcessed*3, 10),
		"CreatedOrUpdatedFileStatsBySize":     string(bySize),
		"ObjectsStatsByType":                  string(byType),
	}
	if end {
		m["FilesCreatedIrrespectiveOfVersions"] = strconv.FormatInt(c.FilesCreatedIrrespectiveOfVersions, 10)
		m["BytesProcessedOnlyCurrentVersion"] = strconv.FormatInt(c.BytesProcessedOnlyCurrentVersion, 10)
		m["IsShallowCopy"] = "False"
	}
	return m
}

// progress publishes the counters (JobInfo) and emits JobProgress.
func (p *proc) progress() {
	p.e.mu.Lock()
	p.j.counters = p.c
	p.e.mu.Unlock()
	p.event(crypt.EventJobProgress, p.counterFields(false))
}

// index lists a container with snapshots and metadata: name → base blob and latest snapshot. Memory:
// about 200 bytes per blob name.
func (p *proc) index(ctx context.Context, cc *container.Client, which string) (map[string]blobVer, *jobFailure) {
	idx := map[string]blobVer{}
	pager := cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Include: container.ListBlobsInclude{Snapshots: true, Metadata: true}})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fatalf(hrStorage, typeSPException, "Cannot read the Azure %s container: %s", which, redactErr(err))
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || (it.Deleted != nil && *it.Deleted) {
				continue
			}
			v := idx[*it.Name]
			var size int64
			if it.Properties != nil && it.Properties.ContentLength != nil {
				size = *it.Properties.ContentLength
			}
			iv := metaValue(it.Metadata, "IV")
			if it.Snapshot == nil || *it.Snapshot == "" {
				v.hasBase, v.baseIV, v.baseSize = true, iv, size
			} else if t, err := time.Parse(time.RFC3339Nano, *it.Snapshot); err == nil && (v.snapshot == "" || t.After(v.snapTime)) {
				v.snapshot, v.snapTime, v.snapIV, v.snapSize = *it.Snapshot, t, iv, size
			}
			idx[*it.Name] = v
		}
	}
	return idx, nil
}

// metaValue looks a metadata key up case-insensitively (Go SDKs return "iv" or "Iv" for "IV").
func metaValue(md map[string]*string, key string) string {
	for k, v := range md {
		if strings.EqualFold(k, key) && v != nil {
			return *v
		}
	}
	return ""
}

// openBlob opens a blob version for reading and returns its IV.
func (p *proc) openBlob(ctx context.Context, cc *container.Client, name, snapshot string) (io.ReadCloser, error) {
	bc := cc.NewBlobClient(name)
	if snapshot != "" {
		var err error
		if bc, err = bc.WithSnapshot(snapshot); err != nil {
			return nil, err
		}
	}
	resp, err := bc.DownloadStream(ctx, nil)
	if err != nil {
		return nil, err
	}
	return resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 3}), nil
}

// decrypting wraps r with the job's decryption (or nothing for an unencrypted job).
func (p *proc) decrypting(r io.Reader, ivText string) (io.Reader, error) {
	if !p.j.encrypted {
		return r, nil
	}
	iv, err := crypt.ParseIV(ivText)
	if err != nil {
		return nil, err
	}
	p.j.emitMu.Lock()
	key := p.j.key
	p.j.emitMu.Unlock()
	return crypt.NewDecryptReader(r, key, iv)
}

// isCryptoErr reports a decryption failure (wrong key or IV, corruption, truncation).
func isCryptoErr(err error) bool {
	return errors.Is(err, crypt.ErrBadPadding) || errors.Is(err, crypt.ErrNotBlockMultiple) ||
		errors.Is(err, crypt.ErrIVSize) || errors.Is(err, crypt.ErrBase64)
}

// cryptoMessage is the .NET message of a decryption failure.
func cryptoMessage(err error) string {
	switch {
	case errors.Is(err, crypt.ErrNotBlockMultiple):
		return "Length of the data to decrypt is invalid."
	case errors.Is(err, crypt.ErrIVSize), errors.Is(err, crypt.ErrBase64):
		return "Specified initialization vector (IV) does not match the block size for this algorithm."
	}
	return "Padding is invalid and cannot be removed."
}

// readXML streams a package XML of the manifest container (latest snapshot, else the base blob
// unless RequireManifestSnapshots), decrypted, through parse. A decryption failure, malformed XML or a
// missing blob is a jobFailure.
func (p *proc) readXML(ctx context.Context, name string, parse func(io.Reader) error) *jobFailure {
	v, ok := p.metaIdx[name]
	if !ok || (!v.hasBase && v.snapshot == "") {
		return fatalf(hrFileNotFound, typeFileNotFound, "Could not find file '%s' in the manifest container.", name)
	}
	snapshot, ivText := v.snapshot, v.snapIV
	if snapshot == "" {
		if p.e.opts.RequireManifestSnapshots {
			return fatalf(hrFileNotFound, typeFileNotFound, "The manifest file '%s' has no snapshot; package files are read from their latest snapshot.", name)
		}
		ivText = v.baseIV
		p.logf("Warning", name, "", "The manifest file %s has no snapshot; its current content is used.", name)
	}
	rc, err := p.openBlob(ctx, p.meta, name, snapshot)
	if err != nil {
		return fatalf(hrStorage, typeSPException, "Cannot read '%s' from the manifest container: %s", name, redactErr(err))
	}
	defer rc.Close()
	dr, err := p.decrypting(rc, ivText)
	if err != nil {
		return fatalf(hrCrypto, typeCrypto, "Cannot decrypt '%s': %s", name, cryptoMessage(err))
	}
	perr := parse(dr)
	// Read to the end: padding errors only surface there, and garbage from a wrong key usually fails
	// the XML parser first.
	_, derr := io.Copy(io.Discard, dr)
	switch {
	case isCryptoErr(perr):
		return fatalf(hrCrypto, typeCrypto, "Cannot decrypt '%s': %s", name, cryptoMessage(perr))
	case derr != nil && isCryptoErr(derr):
		return fatalf(hrCrypto, typeCrypto, "Cannot decrypt '%s': %s", name, cryptoMessage(derr))
	case derr != nil:
		return fatalf(hrStorage, typeSPException, "Cannot read '%s' from the manifest container: %s", name, redactErr(derr))
	case perr != nil:
		var jf *jobFailure
		if errors.As(perr, &jf) {
			return jf
		}
		var ve *migpkg.ValidationError
		if errors.As(perr, &ve) {
			return fatalf(hrXML, typeXML, "%s: %s", name, problemsText(ve))
		}
		return fatalf(hrXML, typeXML, "%s: %s", name, redact(perr.Error()))
	}
	return nil
}

func problemsText(ve *migpkg.ValidationError) string {
	var parts []string
	for i, pr := range ve.Problems {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ve.Problems)-i))
			break
		}
		parts = append(parts, pr.Message)
	}
	return strings.Join(parts, "; ")
}

// Package XMLs besides the manifests.
var (
	requiredXML = []struct{ name, root string }{
		{migpkg.FileExportSettings, "ExportSettings"},
		{migpkg.FileUserGroup, "UserGroupMap"},
	}
	optionalXML = []struct{ name, root string }{
		{migpkg.FileRequirements, "Requirements"},
		{migpkg.FileRootObjectMap, "RootObjects"},
		{migpkg.FileLookupListMap, "LookupLists"},
		{migpkg.FileViewFormsList, "ViewFormsList"},
	}
)

// importPackage reads and imports the package. It returns a jobFailure for a package that cannot be
// imported at all; item failures are JobErrors.
func (p *proc) importPackage(ctx context.Context) *jobFailure {
	var f *jobFailure
	if p.metaIdx, f = p.index(ctx, p.meta, "manifest"); f != nil {
		return f
	}
	if p.dataIdx, f = p.index(ctx, p.data, "source"); f != nil {
		return f
	}
	// SystemData.xml names the manifests.
	var manifests []string
	if f := p.readXML(ctx, migpkg.FileSystemData, func(r io.Reader) error {
		var err error
		manifests, err = migpkg.ParseSystemData(r)
		return err
	}); f != nil {
		return f
	}
	if len(manifests) == 0 {
		return fatalf(hrArgument, typeArgument, "SystemData.xml lists no ManifestFile.")
	}
	for _, m := range manifests {
		if m == "" || strings.ContainsAny(m, `/\`) {
			return fatalf(hrArgument, typeArgument, "SystemData.xml names an invalid manifest file '%s'.", m)
		}
	}
	// ExportSettings.xml.
	if f := p.readXML(ctx, migpkg.FileExportSettings, func(r io.Reader) error {
		es, err := migpkg.ParseExportSettings(r)
		if err != nil {
			return err
		}
		if strings.TrimSpace(es.SiteURL) == "" {
			return fatalf(hrXML, "System.UriFormatException", "There is an error in XML document (ExportSettings.xml). Invalid URI: The URI is empty.")
		}
		if !es.HasSourceType || strings.TrimSpace(es.SourceType) == "" {
			return fatalf(hrArgument, typeArgument, "ExportSettings.xml has no SourceType; it is mandatory since 1 April 2023.")
		}
		return nil
	}); f != nil {
		return f
	}
	// UserGroup.xml: well-formed, every User with a SystemId.
	if f := p.readXML(ctx, migpkg.FileUserGroup, func(r io.Reader) error {
		return checkXML(r, "UserGroupMap", func(path []string, attrs map[string]string) error {
			if len(path) == 3 && path[1] == "Users" && path[2] == "User" && attrs["systemid"] == "" {
				return fatalf("-2147467261", "System.NullReferenceException",
					"DeserializeUserGroupMap: Object reference not set to an instance of an object. (User Id '%s' has no SystemId.)", attrs["id"])
			}
			return nil
		})
	}); f != nil {
		return f
	}
	for _, o := range optionalXML {
		if _, ok := p.metaIdx[o.name]; !ok {
			p.itemFailed(true, itemError{code: hrFileNotFound, typ: typeFileNotFound,
				msg: fmt.Sprintf("The optional package file %s is missing.", o.name)})
			continue
		}
		root := o.root
		if f := p.readXML(ctx, o.name, func(r io.Reader) error { return checkXML(r, root, nil) }); f != nil {
			return f
		}
	}
	// Pass 1: every manifest well-formed; count objects and expected bytes.
	for _, m := range manifests {
		if f := p.readXML(ctx, m, func(r io.Reader) error {
			return migpkg.ScanManifest(r, func(o migpkg.SPObject) error {
				p.c.TotalExpectedSPObjects++
				if o.File != nil {
					p.c.TotalExpectedBytes += max(o.File.FileSize, 0)
					for _, v := range o.File.Versions {
						p.c.TotalExpectedBytes += max(v.FileSize, 0)
					}
				}
				return ctx.Err()
			})
		}); f != nil {
			return f
		}
	}
	p.logf("Information", "", "", "Package read: %d manifest(s), %d objects, %d bytes expected.", len(manifests), p.c.TotalExpectedSPObjects, p.c.TotalExpectedBytes)
	// Pass 2: import.
	for _, m := range manifests {
		if f := p.readXML(ctx, m, func(r io.Reader) error {
			return migpkg.ScanManifest(r, func(o migpkg.SPObject) error { return p.object(ctx, o) })
		}); f != nil {
			return f
		}
	}
	return nil
}

// objectType is the ObjectType SharePoint reports in JobError for an SPObject type.
func objectType(t string) string {
	switch t {
	case "SPFile":
		return "File"
	case "SPFolder":
		return "Folder"
	case "SPListItem":
		return "ListItem"
	case "SPList", "SPDocumentLibrary":
		return "List"
	}
	return strings.TrimPrefix(t, "SP")
}

// object imports one SPObject.
func (p *proc) object(ctx context.Context, o migpkg.SPObject) error {
	if !sleep(ctx, p.e.opts.ItemDelay+p.e.slowItem(p.j.site)) {
		return ctx.Err()
	}
	p.c.ObjectsProcessed++
	st := p.byType[o.ObjectType]
	if st == nil {
		st = &crypt.ObjectTypeStats{}
		p.byType[o.ObjectType] = st
	}
	st.Count++
	t0 := time.Now()
	defer func() {
		st.TotalTime += time.Since(t0).Milliseconds()
		if p.c.ObjectsProcessed%int64(p.e.opts.ProgressEvery) == 0 {
			p.progress()
		}
	}()
	if o.ParentWebID != "" {
		if g, ok := parseGUID(o.ParentWebID); !ok || g != p.j.webID {
			p.itemFailed(false, itemError{objectType: objectType(o.ObjectType), url: o.URL, id: o.ID, code: hrArgument, typ: typeArgument,
				msg: fmt.Sprintf("The object's ParentWebId %s does not match the target web %s.", o.ParentWebID, p.j.webID)})
			return nil
		}
	}
	switch o.ObjectType {
	case "SPFile":
		if o.File == nil {
			p.itemFailed(false, itemError{objectType: "File", url: o.URL, id: o.ID, code: hrArgument, typ: typeArgument,
				msg: "The SPFile object has no File element."})
			return nil
		}
		if n := len(o.File.Versions); n > 0 {
			st.AccumulatedVersions += int64(n)
			st.ObjectsWithVersions++
		}
		return p.file(ctx, o)
	case "SPFolder":
		if rel, ok := p.webRelative(o.URL); ok && p.siteDir != "" && rel != "" {
			_ = os.MkdirAll(filepath.Join(p.siteDir, filepath.FromSlash(rel)), 0o755)
		}
	}
	return nil
}

// webRelative turns a server-relative URL of the target web into a safe web-relative path.
func (p *proc) webRelative(serverRel string) (string, bool) {
	u := strings.TrimPrefix(serverRel, "/")
	web := strings.TrimPrefix(p.j.site.path, "/")
	if web != "" {
		if len(u) < len(web) || !strings.EqualFold(u[:len(web)], web) {
			return "", false
		}
		u = strings.TrimPrefix(u[len(web):], "/")
	}
	return safeRel(u)
}

// safeRel checks a "/"-separated relative path: no empty, "." or ".." segments, no backslash or NUL.
func safeRel(u string) (string, bool) {
	u = strings.Trim(u, "/")
	if u == "" {
		return "", true
	}
	for seg := range strings.SplitSeq(u, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
			return "", false
		}
	}
	if !filepath.IsLocal(filepath.FromSlash(u)) {
		return "", false
	}
	return u, true
}

// fileVersion is one version of an SPFile to import.
type fileVersion struct {
	label     string
	fileValue string
	hasValue  bool
	size      int64 // -1: not given
	current   bool
}

// file imports every version of an SPFile: older versions first, the current one last.
func (p *proc) file(ctx context.Context, o migpkg.SPObject) error {
	f := o.File
	url := f.URL
	if url == "" {
		url, _ = p.webRelative(o.URL)
	}
	if ie := p.e.itemFault(p.j.site, url); ie != nil {
		ie.id = o.ID
		p.itemFailed(false, *ie)
		return nil
	}
	rel, okPath := safeRel(url)
	if !okPath || rel == "" {
		p.itemFailed(false, itemError{objectType: "File", url: url, id: o.ID, code: hrArgument, typ: typeArgument,
			msg: "The file URL is not a valid web-relative path."})
		return nil
	}
	var versions []fileVersion
	for _, v := range f.Versions {
		versions = append(versions, fileVersion{label: v.Version, fileValue: v.FileValue, hasValue: v.HasFileValue, size: v.FileSize})
	}
	versions = append(versions, fileVersion{label: f.Version, fileValue: f.FileValue, hasValue: f.HasFileValue, size: f.FileSize, current: true})
	for _, v := range versions {
		if err := ctx.Err(); err != nil {
			return err
		}
		if ie := p.version(ctx, rel, o.ID, v); ie != nil {
			p.itemFailed(false, *ie)
		}
	}
	return nil
}

// version imports one version of a file; it returns the JobError to report, if any.
func (p *proc) version(ctx context.Context, rel, id string, v fileVersion) *itemError {
	fail := func(code, typ, format string, args ...any) *itemError {
		return &itemError{objectType: "File", url: rel, id: id, code: code, typ: typ, msg: fmt.Sprintf(format, args...)}
	}
	if !v.hasValue || v.fileValue == "" {
		return fail(hrArgument, typeArgument, "Missing file info: the File element of version %s has no FileValue.", v.label)
	}
	b, ok := p.dataIdx[v.fileValue]
	switch {
	case !ok || (!b.hasBase && b.snapshot == ""):
		return fail(hrFileNotFound, typeFileNotFound, "The file '%s' (FileValue) does not exist in the Azure source container.", v.fileValue)
	case b.snapshot == "":
		return fail(hrFileNotFound, typeFileNotFound,
			"The blob '%s' has no snapshot; files are imported from their latest snapshot, and files without a snapshot are skipped.", v.fileValue)
	}
	t0 := time.Now()
	rc, err := p.openBlob(ctx, p.data, v.fileValue, b.snapshot)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fail(hrStorage, typeSPException, "Cannot read '%s' from the Azure source container: %s", v.fileValue, redactErr(err))
	}
	defer rc.Close()
	dr, err := p.decrypting(rc, b.snapIV)
	if err != nil {
		return fail(hrCrypto, typeCrypto, "Cannot decrypt '%s': %s", v.fileValue, cryptoMessage(err))
	}
	// Destination: the library path for the current version, _versions/<path>/<label> for older ones.
	var out io.Writer = io.Discard
	var tmp *os.File
	var dest string
	if p.siteDir != "" {
		if v.current {
			dest = filepath.Join(p.siteDir, filepath.FromSlash(rel))
		} else {
			label := strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' || r == '.' {
					return r
				}
				return '_'
			}, v.label)
			if label == "" {
				label = "version"
			}
			dest = filepath.Join(p.siteDir, "_versions", filepath.FromSlash(rel), label)
		}
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return fail(hrIO, typeIO, "Cannot create the folder of '%s': %s", rel, err)
		}
		if tmp, err = os.CreateTemp(filepath.Dir(dest), ".spoemu-*"); err != nil {
			return fail(hrIO, typeIO, "Cannot write '%s': %s", rel, err)
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		out = tmp
	}
	n, err := io.Copy(out, dr)
	switch {
	case err != nil && isCryptoErr(err):
		return fail(hrCrypto, typeCrypto, "%s (FileValue '%s')", cryptoMessage(err), v.fileValue)
	case err != nil:
		if ctx.Err() != nil {
			return nil
		}
		return fail(hrStorage, typeSPException, "Cannot read '%s': %s", v.fileValue, redactErr(err))
	case v.size >= 0 && n != v.size:
		return fail(hrArgument, typeSPException, "The size of '%s' after decryption is %d bytes; the manifest's FileSize is %d.", v.fileValue, n, v.size)
	}
	if tmp != nil {
		if err := tmp.Close(); err != nil {
			return fail(hrIO, typeIO, "Cannot write '%s': %s", rel, err)
		}
		if err := os.Rename(tmp.Name(), dest); err != nil {
			os.Remove(tmp.Name())
			tmp = nil
			return fail(hrIO, typeIO, "Cannot write '%s': %s", rel, err)
		}
		tmp = nil
	}
	p.c.FilesCreated++
	p.c.BytesProcessed += n
	if v.current {
		p.c.FilesCreatedIrrespectiveOfVersions++
		p.c.BytesProcessedOnlyCurrentVersion += n
	}
	bucket := sizeBucket(n)
	s := p.bySize[bucket]
	if s == nil {
		s = &crypt.FileSizeStats{}
		p.bySize[bucket] = s
	}
	s.Count++
	s.TotalSize += n
	s.TotalDownloadTime += time.Since(t0).Milliseconds()
	p.logf("Information", rel, "", "File imported (version %s, %d bytes).", v.label, n)
	return nil
}

// sizeBucket is the CreatedOrUpdatedFileStatsBySize bucket of a file size.
func sizeBucket(n int64) string {
	buckets := []struct {
		limit int64
		name  string
	}{
		{1 << 10, "0-1K"}, {10 << 10, "1K-10K"}, {100 << 10, "10K-100K"}, {1 << 20, "100K-1M"},
		{10 << 20, "1M-10M"}, {100 << 20, "10M-100M"}, {1 << 30, "100M-1G"}, {10 << 30, "1G-10G"},
	}
	for _, b := range buckets {
		if n < b.limit {
			return b.name
		}
	}
	return "10G+"
}

// jobSummary is <DataDir>/jobs/<job id>.json.
type jobSummary struct {
	JobID     string         `json:"JobId"`
	Site      string         `json:"Site"`
	WebID     string         `json:"WebId"`
	Encrypted bool           `json:"Encrypted"`
	Outcome   string         `json:"Outcome"`
	Created   time.Time      `json:"Created"`
	Ended     time.Time      `json:"Ended"`
	Counters  Counters       `json:"Counters"`
	FilesRoot string         `json:"FilesRoot,omitempty"`
	LogFiles  []string       `json:"LogFiles"`
	Errors    []recordedItem `json:"Errors"`
	Warnings  []recordedItem `json:"Warnings"`
}

func (p *proc) writeSummary(info JobInfo) {
	dir := p.e.opts.DataDir
	if dir == "" {
		return
	}
	s := jobSummary{JobID: info.ID, Site: p.j.site.path + "/", WebID: info.WebID, Encrypted: p.j.encrypted, Outcome: info.Outcome,
		Created: info.Created, Ended: info.Ended, Counters: info.Counters, FilesRoot: p.siteDir, LogFiles: p.logNames,
		Errors: p.errs, Warnings: p.wrns}
	if s.Errors == nil {
		s.Errors = []recordedItem{}
	}
	if s.Warnings == nil {
		s.Warnings = []recordedItem{}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return
	}
	jd := filepath.Join(dir, "jobs")
	if err := os.MkdirAll(jd, 0o755); err != nil {
		p.e.log.Warn("job summary", "job", info.ID, "err", err)
		return
	}
	if err := os.WriteFile(filepath.Join(jd, info.ID+".json"), append(b, '\n'), 0o644); err != nil {
		p.e.log.Warn("job summary", "job", info.ID, "err", err)
	}
}
