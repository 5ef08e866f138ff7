package monitor

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/vault"
)

// Logs. SharePoint writes a job's import logs into its metadata container, encrypted with the job key
// (IV in the blob metadata "IV"): Import-<spo job id>-<n>.log, and .err / .wrn subsets (reference §3.2;
// the extensions beyond .log are observed, not documented). The container SAS has no List permission,
// so the names are the numbered ones, probed n = 1, 2, … until none of the three exists, and the names
// JobLogFileCreate events announced. Each log is streamed — downloaded, decrypted, copied to
// <ReportsContainer>/<job id>/<name> — and, on its way, parsed into <job id>/items.csv.
const (
	// maxLogIndex bounds the numbered log names probed.
	maxLogIndex = 100
	// uploadBlockSize is the block size of the copies into the reports container. Memory: one block
	// buffer per copy in flight, and at most two copies (a log and items.csv) run at once per job:
	// about 2 MiB, plus the decrypt reader's 64 KiB.
	uploadBlockSize = 1 << 20
)

var (
	// errLogsNotYet: no log exists yet and the job ended less than LogGrace ago.
	errLogsNotYet = errors.New("no import log yet")
	// errLogsUnavailable: the metadata container refuses its SAS (expired or revoked) or is gone.
	errLogsUnavailable = errors.New("the metadata container is no longer readable")
)

var numberedLogRE = regexp.MustCompile(`(?i)^Import-(.+)-([0-9]+)\.(log|err|wrn)$`)

// ensureReports creates the reports container once per process.
func (r *run) ensureReports(ctx context.Context) error {
	if r.m.reportsReady.Load() {
		return nil
	}
	_, err := r.m.opts.Storage.Blob.CreateContainer(ctx, r.m.opts.ReportsContainer, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create the reports container: %s", errText(err))
	}
	r.m.reportsReady.Store(true)
	return nil
}

// storeLogs copies the job's decrypted logs and its items.csv into the reports container and records
// LogsBlobPrefix. Without the job secret (cleaned up) only items.csv is written, from the item
// failures kept on the record; so it is when no log exists after LogGrace.
func (r *run) storeLogs(ctx context.Context, j *jobs.Job) error {
	if err := r.ensureReports(ctx); err != nil {
		return err
	}
	var meta *container.Client
	var key []byte
	sec, err := r.secret(ctx, j.ID)
	switch {
	case err == nil:
		meta, err = container.NewClientWithNoCredential(sec.MetadataContainerURI,
			&container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: r.m.opts.SASTransport}})
		if err != nil {
			return fmt.Errorf("metadata container: %s", errText(err))
		}
		key = sec.Key
	case errors.Is(err, vault.ErrNotFound):
	default:
		return fmt.Errorf("read the job secret: %w", err)
	}
	reports := r.m.opts.Storage.Blob.ServiceClient().NewContainerClient(r.m.opts.ReportsContainer)
	prefix := j.ID + "/"

	// items.csv is uploaded from a pipe while the logs are copied and parsed.
	pr, pw := io.Pipe()
	csvDone := make(chan error, 1)
	go func() {
		_, err := reports.NewBlockBlobClient(prefix+"items.csv").UploadStream(ctx, pr, &blockblob.UploadStreamOptions{
			BlockSize: uploadBlockSize, Concurrency: 1,
			HTTPHeaders: &blob.HTTPHeaders{BlobContentType: ptr("text/csv; charset=utf-8")}})
		pr.CloseWithError(err)
		csvDone <- err
	}()
	cw := csv.NewWriter(pw)
	var csvErr error
	objectTypes := map[string]string{}
	for _, f := range j.FirstErrors {
		if f.URL != "" && f.ObjectType != "" {
			objectTypes[f.URL] = f.ObjectType
		}
	}
	rows := 0
	emit := func(row itemRow) {
		if row.ObjectType == "" {
			row.ObjectType = objectTypes[row.URL]
		}
		if csvErr == nil {
			csvErr = writeRow(cw, row)
		}
		rows++
	}
	csvErr = cw.Write(itemsHeader)

	files, copyErr := 0, error(nil)
	unavailable := ""
	if meta != nil {
		files, copyErr = r.copyLogs(ctx, j, meta, key, reports, prefix, emit)
		if errors.Is(copyErr, errLogsUnavailable) {
			unavailable, copyErr = copyErr.Error(), nil
		}
	}
	if rows == 0 && copyErr == nil { // no item from the logs: the details kept on the record
		for _, f := range j.FirstErrors {
			emit(itemRow{Kind: string(f.Kind), ObjectType: f.ObjectType, URL: f.URL, ErrorCode: f.ErrorCode, Message: f.Message})
		}
	}
	cw.Flush()
	if csvErr == nil {
		csvErr = cw.Error()
	}
	if copyErr != nil {
		pw.CloseWithError(copyErr)
	} else {
		pw.Close()
	}
	if err := <-csvDone; err != nil && copyErr == nil {
		return fmt.Errorf("upload items.csv: %s", errText(err))
	}
	if copyErr != nil {
		return copyErr
	}
	if csvErr != nil {
		return fmt.Errorf("write items.csv: %w", csvErr)
	}
	if files == 0 && meta != nil && unavailable == "" && !j.EndedAt.IsZero() && r.now().Sub(j.EndedAt) < r.m.opts.LogGrace {
		return errLogsNotYet
	}

	what := fmt.Sprintf("%s%d log files, %d items", noteLogs, files, rows)
	switch {
	case meta == nil:
		what = noteLogs + "the job secret is gone: items.csv from the events only"
	case unavailable != "":
		what = fmt.Sprintf("%s%d log files, %d items (%s)", noteLogs, files, rows, unavailable)
	}
	_, err = r.update(ctx, j.ID, func(j *jobs.Job) error {
		if j.LogsBlobPrefix == "" {
			addNote(j, r.now(), what)
		}
		j.LogsBlobPrefix = r.m.opts.ReportsContainer + "/" + prefix
		return nil
	})
	if err != nil {
		return err
	}
	r.stats.logs++
	r.log.InfoContext(ctx, "job logs stored", "job_id", j.ID, "files", files, "items", rows, "prefix", r.m.opts.ReportsContainer+"/"+prefix)
	return nil
}

// logNames returns the names to probe for index n, and the extra names announced by JobLogFileCreate
// that are not numbered ones of the job.
func logNames(j *jobs.Job) (id string, extra []string) {
	id = j.SPOJobID
	announced, _ := notes(j, noteLogFile)
	for _, name := range announced {
		if m := numberedLogRE.FindStringSubmatch(name); m != nil && strings.EqualFold(m[1], j.SPOJobID) {
			id = m[1] // SharePoint's spelling of the id
			continue
		}
		extra = append(extra, name)
	}
	return id, extra
}

// copyLogs copies every log it finds and returns how many.
func (r *run) copyLogs(ctx context.Context, j *jobs.Job, meta *container.Client, key []byte, reports *container.Client,
	prefix string, emit func(itemRow)) (int, error) {
	id, extra := logNames(j)
	files := 0
	for n := 1; n <= maxLogIndex; n++ {
		found := 0
		subsets := false
		for _, ext := range []string{"err", "wrn", "log"} {
			kind := map[string]jobs.ItemKind{"err": jobs.ItemError, "wrn": jobs.ItemWarning, "log": ""}[ext]
			parse := ext != "log" || !subsets // items come from the subsets when SharePoint wrote them
			ok, err := r.copyLog(ctx, meta, key, reports, prefix, fmt.Sprintf("Import-%s-%d.%s", id, n, ext), kind, parse, emit)
			if err != nil {
				return files, err
			}
			if ok {
				found++
				subsets = subsets || ext != "log"
			}
		}
		files += found
		if found == 0 {
			break
		}
	}
	for _, name := range extra {
		kind := jobs.ItemKind("")
		switch {
		case strings.HasSuffix(strings.ToLower(name), ".err"):
			kind = jobs.ItemError
		case strings.HasSuffix(strings.ToLower(name), ".wrn"):
			kind = jobs.ItemWarning
		}
		ok, err := r.copyLog(ctx, meta, key, reports, prefix, name, kind, true, emit)
		if err != nil {
			return files, err
		}
		if ok {
			files++
		}
	}
	return files, nil
}

// copyLog streams one log blob: download through the SAS, decrypt (IV from the metadata, looked up
// case-insensitively; without it, the first 16 bytes), upload to the reports container, parsing it on
// the way when parse is set. It reports false when the blob does not exist.
func (r *run) copyLog(ctx context.Context, meta *container.Client, key []byte, reports *container.Client, prefix, name string,
	kind jobs.ItemKind, parse bool, emit func(itemRow)) (bool, error) {
	resp, err := meta.NewBlobClient(name).DownloadStream(ctx, nil)
	if err != nil {
		switch {
		case bloberror.HasCode(err, bloberror.ContainerNotFound), storageStatus(err) == 403:
			return false, fmt.Errorf("%w: %s", errLogsUnavailable, errText(err))
		case bloberror.HasCode(err, bloberror.BlobNotFound), storageStatus(err) == 404:
			return false, nil
		}
		return false, fmt.Errorf("download %s: %s", name, errText(err))
	}
	defer resp.Body.Close()
	var src io.Reader = resp.Body
	ivText := metaValue(resp.Metadata, "IV")
	var iv []byte
	if ivText != "" {
		if iv, err = crypt.ParseIV(ivText); err != nil {
			return false, fmt.Errorf("%s: %w", name, err)
		}
	} else {
		iv = make([]byte, crypt.BlockSize)
		if _, err := io.ReadFull(src, iv); err != nil {
			return false, fmt.Errorf("%s: no IV metadata and no IV prefix: %w", name, err)
		}
	}
	plain, err := crypt.NewDecryptReader(src, key, iv)
	if err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	var p *lineParser
	if parse {
		p = newLineParser(kind, emit)
		plain = io.TeeReader(plain, p)
	}
	_, err = reports.NewBlockBlobClient(prefix+name).UploadStream(ctx, plain, &blockblob.UploadStreamOptions{
		BlockSize: uploadBlockSize, Concurrency: 1,
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: ptr("text/plain; charset=utf-8")}})
	if err != nil {
		return false, fmt.Errorf("copy %s: %s", name, errText(err))
	}
	if p != nil {
		p.Close()
	}
	return true, nil
}

// metaValue looks a metadata key up case-insensitively (the SDK returns "Iv" for "IV").
func metaValue(md map[string]*string, key string) string {
	for k, v := range md {
		if strings.EqualFold(k, key) && v != nil {
			return *v
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
