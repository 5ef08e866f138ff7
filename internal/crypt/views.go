package crypt

import (
	"encoding/json"
	"time"
)

// Common holds the members most SPO events carry. Absent members are zero.
type Common struct {
	JobID              string
	Time               time.Time
	TotalRetryCount    int64
	MigrationType      string // "None" for import, "AsyncRead" for AMR export
	MigrationDirection string // "Import" or "Export"
	CorrelationID      string
}

// Counters are the progress counters of JobProgress and JobEnd. Absent or unparseable counters are
// zero; the raw text stays in Event.Fields.
type Counters struct {
	FilesCreated                        int64
	BytesProcessed                      int64
	ObjectsProcessed                    int64
	TotalExpectedSPObjects              int64
	TotalExpectedBytes                  int64
	TotalErrors                         int64
	TotalWarnings                       int64
	WaitTimeOnSQLThrottlingMilliseconds int64 // WaitTimeOnSqlThrottlingMilliseconds
	TotalDurationInMs                   int64
	CPUDurationInMs                     int64 // CpuDurationInMs (or CpuDurationMs)
	SQLDurationInMs                     int64 // SqlDurationInMs (or SqlDurationMs)
	SQLQueryCount                       int64 // SqlQueryCount
	FilesCreatedIrrespectiveOfVersions  int64 // JobEnd since April 2024
	BytesProcessedOnlyCurrentVersion    int64 // JobEnd since April 2024
	// CreatedOrUpdatedFileStatsBySize is the nested JSON of the same name, by size bucket ("0-1K", …);
	// nil when absent or malformed.
	CreatedOrUpdatedFileStatsBySize map[string]FileSizeStats
	// ObjectsStatsByType is the nested JSON of the same name, by object type ("SPFile", …); nil when
	// absent or malformed.
	ObjectsStatsByType map[string]ObjectTypeStats
}

// FileSizeStats is one bucket of CreatedOrUpdatedFileStatsBySize.
type FileSizeStats struct {
	Count, TotalSize, TotalDownloadTime, TotalCreationTime int64
}

// ObjectTypeStats is one entry of ObjectsStatsByType.
type ObjectTypeStats struct {
	Count, TotalTime, AccumulatedVersions, ObjectsWithVersions int64
}

// JobQueued is the view of a JobQueued event.
type JobQueued struct {
	Common
	SiteID, DBID string
}

// JobPostponed is the view of a JobPostponed event.
type JobPostponed struct {
	Common
	SiteID, DBID   string
	NextPickupTime time.Time // zero when absent or unparseable
	JobsInQueue    int64
	Reason         string // present in some tenants (see the Graph API); "" otherwise
}

// JobLogFileCreate is the view of a JobLogFileCreate event: the name of a log blob SPO wrote to the
// metadata container.
type JobLogFileCreate struct {
	Common
	FileName string // e.g. Import-<job id>-1.log
}

// JobStart is the view of a JobStart event.
type JobStart struct {
	Common
	SiteID, WebID, DBID, FarmID, ServerID, SubscriptionID string
}

// JobProgress is the view of a JobProgress event.
type JobProgress struct {
	Common
	Counters
}

// JobEnd is the view of a JobEnd event. Clients treat TotalErrors > 0 as a failed job.
type JobEnd struct {
	Common
	Counters
	IsShallowCopy bool
}

// JobError is the view of a JobError event: one object that failed.
type JobError struct {
	Common
	ObjectType          string // e.g. File, ListItem; empty for JobFatalError
	URL                 string // Url
	ID                  string // Id
	ErrorCode           string // e.g. -2147024816
	ErrorType           string // e.g. Microsoft.SharePoint.SPException
	Message             string
	SourceListItemIntID string
	TargetListItemIntID string
}

// JobWarning is the view of a JobWarning event; it has the shape of JobError.
type JobWarning JobError

// JobFatalError is the view of a JobFatalError event, after which the whole job fails; it has the
// shape of JobError with ObjectType, URL and ID empty.
type JobFatalError JobError

// JobCancelled is the view of a JobCancelled event.
type JobCancelled struct {
	Common
	CancelledByUser bool
}

// JobDeleted is the view of a JobDeleted event.
type JobDeleted struct {
	Common
}

// FinishManifestFileUpload is the view of the AMR (export) FinishManifestFileUpload event.
type FinishManifestFileUpload struct {
	Common
	ManifestFileName string
}

// View returns the typed view of a known event: a JobQueued, JobPostponed, JobLogFileCreate, JobStart,
// JobProgress, JobEnd, JobError, JobWarning, JobFatalError, JobCancelled, JobDeleted or
// FinishManifestFileUpload value (not a pointer), chosen by Name. It returns nil for other events,
// which stay readable through Fields.
func (e Event) View() any {
	switch e.Name {
	case EventJobQueued:
		return JobQueued{Common: e.common(), SiteID: e.str("SiteId"), DBID: e.str("DbId")}
	case EventJobPostponed:
		v := JobPostponed{Common: e.common(), SiteID: e.str("SiteId"), DBID: e.str("DbId"),
			JobsInQueue: e.num("JobsInQueue"), Reason: e.str("Reason")}
		v.NextPickupTime, _ = e.TimeField("NextPickupTime")
		return v
	case EventJobLogFileCreate:
		return JobLogFileCreate{Common: e.common(), FileName: e.str("FileName")}
	case EventJobStart:
		return JobStart{Common: e.common(), SiteID: e.str("SiteId"), WebID: e.str("WebId"), DBID: e.str("DBId"),
			FarmID: e.str("FarmId"), ServerID: e.str("ServerId"), SubscriptionID: e.str("SubscriptionId")}
	case EventJobProgress:
		return JobProgress{Common: e.common(), Counters: e.counters()}
	case EventJobEnd:
		v := JobEnd{Common: e.common(), Counters: e.counters()}
		v.IsShallowCopy, _ = e.Bool("IsShallowCopy")
		return v
	case EventJobError:
		return e.jobError()
	case EventJobWarning:
		return JobWarning(e.jobError())
	case EventJobFatalError:
		return JobFatalError(e.jobError())
	case EventJobCancelled:
		v := JobCancelled{Common: e.common()}
		v.CancelledByUser, _ = e.Bool("CancelledByUser")
		return v
	case EventJobDeleted:
		return JobDeleted{Common: e.common()}
	case EventFinishManifestFileUpload:
		return FinishManifestFileUpload{Common: e.common(), ManifestFileName: e.str("ManifestFileName")}
	}
	return nil
}

func (e Event) str(name string) string {
	s, _ := e.String(name)
	return s
}

// num returns the first of names present as an integer, or 0.
func (e Event) num(names ...string) int64 {
	for _, name := range names {
		if n, ok := e.Int(name); ok {
			return n
		}
	}
	return 0
}

func (e Event) common() Common {
	return Common{JobID: e.JobID, Time: e.Time, TotalRetryCount: e.num("TotalRetryCount"),
		MigrationType: e.str("MigrationType"), MigrationDirection: e.str("MigrationDirection"),
		CorrelationID: e.str("CorrelationId")}
}

func (e Event) jobError() JobError {
	return JobError{Common: e.common(), ObjectType: e.str("ObjectType"), URL: e.str("Url"), ID: e.str("Id"),
		ErrorCode: e.str("ErrorCode"), ErrorType: e.str("ErrorType"), Message: e.str("Message"),
		SourceListItemIntID: e.str("SourceListItemIntId"), TargetListItemIntID: e.str("TargetListItemIntId")}
}

func (e Event) counters() Counters {
	return Counters{
		FilesCreated:                        e.num("FilesCreated"),
		BytesProcessed:                      e.num("BytesProcessed"),
		ObjectsProcessed:                    e.num("ObjectsProcessed"),
		TotalExpectedSPObjects:              e.num("TotalExpectedSPObjects"),
		TotalExpectedBytes:                  e.num("TotalExpectedBytes"),
		TotalErrors:                         e.num("TotalErrors"),
		TotalWarnings:                       e.num("TotalWarnings"),
		WaitTimeOnSQLThrottlingMilliseconds: e.num("WaitTimeOnSqlThrottlingMilliseconds"),
		TotalDurationInMs:                   e.num("TotalDurationInMs"),
		CPUDurationInMs:                     e.num("CpuDurationInMs", "CpuDurationMs"),
		SQLDurationInMs:                     e.num("SqlDurationInMs", "SqlDurationMs"),
		SQLQueryCount:                       e.num("SqlQueryCount"),
		FilesCreatedIrrespectiveOfVersions:  e.num("FilesCreatedIrrespectiveOfVersions"),
		BytesProcessedOnlyCurrentVersion:    e.num("BytesProcessedOnlyCurrentVersion"),
		CreatedOrUpdatedFileStatsBySize: nested(e, "CreatedOrUpdatedFileStatsBySize", func(m map[string]string) FileSizeStats {
			return FileSizeStats{Count: num(m, "Count"), TotalSize: num(m, "TotalSize"),
				TotalDownloadTime: num(m, "TotalDownloadTime"), TotalCreationTime: num(m, "TotalCreationTime")}
		}),
		ObjectsStatsByType: nested(e, "ObjectsStatsByType", func(m map[string]string) ObjectTypeStats {
			return ObjectTypeStats{Count: num(m, "Count"), TotalTime: num(m, "TotalTime"),
				AccumulatedVersions: num(m, "AccumulatedVersions"), ObjectsWithVersions: num(m, "ObjectsWithVersions")}
		}),
	}
}

// nested decodes field name as a JSON object of JSON objects whose values may be numbers or strings.
func nested[T any](e Event, name string, conv func(map[string]string) T) map[string]T {
	var outer map[string]json.RawMessage
	if e.JSON(name, &outer) != nil || outer == nil {
		return nil
	}
	res := make(map[string]T, len(outer))
	for k, raw := range outer {
		inner, err := parseFields(raw)
		if err != nil {
			continue
		}
		res[k] = conv(inner)
	}
	return res
}

func num(m map[string]string, name string) int64 {
	s, _ := lookup(m, name)
	n, _ := parseInt(s)
	return n
}
