package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Table layout (see the package documentation).
const (
	partitionKey = "job"
	mainPrefix   = "job|"
	statePrefix  = "state|"
	spoPrefix    = "spo|"
	schema       = 1
)

func mainRowKey(id string) string { return mainPrefix + id }

func stateRowKey(s State, id string) string {
	return fmt.Sprintf("%s%02d|%s", statePrefix, stateInfo[s], id)
}

func spoRowKey(spoJobID string) string { return spoPrefix + strings.ToLower(spoJobID) }

// Property names. The guard test checks that none looks like a secret (key, sas, sig).
const (
	pSchema             = "Schema"
	pJobID              = "JobID"
	pLabel              = "Label"
	pSiteURL            = "SiteURL"
	pWebID              = "WebID"
	pSPOJobID           = "SPOJobID"
	pSecretName         = "SecretName"
	pStagingContainer   = "StagingContainer"
	pStagingBlobName    = "StagingBlobName"
	pStagingETag        = "StagingETag"
	pSource             = "Source"
	pCallbackURL        = "CallbackURL"
	pState              = "State"
	pHistory            = "History"
	pFilesTotal         = "FilesTotal"
	pFilesDone          = "FilesDone"
	pBytesTotal         = "BytesTotal"
	pBytesDone          = "BytesDone"
	pObjectsTotal       = "ObjectsTotal"
	pObjectsDone        = "ObjectsDone"
	pErrors             = "Errors"
	pWarnings           = "Warnings"
	pProgressToken      = "ProgressToken"
	pLastEventAt        = "LastEventAt"
	pSeenEvents         = "SeenEvents"
	pFirstErrors        = "FirstErrors"
	pFailureReason      = "FailureReason"
	pPostponedUntil     = "PostponedNextPickupTime"
	pPostponedReason    = "PostponedReason"
	pSubmitLeaseOwner   = "SubmitLeaseOwner"
	pSubmitLeaseExpiry  = "SubmitLeaseExpiry"
	pCreatedAt          = "CreatedAt"
	pUpdatedAt          = "UpdatedAt"
	pEndedAt            = "EndedAt"
	pLogsBlobPrefix     = "LogsBlobPrefix"
	pCleanupAt          = "CleanupAt"
	pCleanedUpAt        = "CleanedUpAt"
	pContainersExpireAt = "ContainersExpireAt"
	pVersion            = "Version"
)

// maxEntityBytes is a safety bound on the JSON of one entity, far above what the caps allow and
// below the 1 MiB the service accepts (measured there in UTF-16, hence the half).
const maxEntityBytes = 480 << 10

// marshalList encodes a list as JSON (HTML characters unescaped), dropping entries with drop until the
// text fits MaxJSONPropertyBytes. An empty list encodes as "".
func marshalList[T any](list []T, drop func([]T) []T) (string, []T, error) {
	for {
		if len(list) == 0 {
			return "", list, nil
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(list); err != nil {
			return "", nil, err
		}
		s := strings.TrimSuffix(b.String(), "\n")
		if len(s) <= MaxJSONPropertyBytes {
			return s, list, nil
		}
		list = drop(list)
	}
}

// fitLists applies marshalList's dropping to j's lists and returns their JSON.
func (j *Job) fitLists() (history, seen, firstErrors string, err error) {
	if history, j.History, err = marshalList(j.History, func(h []Transition) []Transition {
		if len(h) <= 1 {
			return nil
		}
		return append(h[:1:1], h[2:]...) // keep the first, drop the oldest after it
	}); err != nil {
		return
	}
	if seen, j.SeenEvents, err = marshalList(j.SeenEvents, func(s []string) []string { return s[1:] }); err != nil {
		return
	}
	firstErrors, j.FirstErrors, err = marshalList(j.FirstErrors, func(f []ItemFailure) []ItemFailure { return f[:len(f)-1] })
	return
}

// properties returns the entity properties of a normalized, validated, fitted record.
func (j *Job) properties(history, seen, firstErrors string) map[string]any {
	p := map[string]any{pSchema: int32(schema), pJobID: j.ID, pState: string(j.State)}
	str := func(name, v string) {
		if v != "" {
			p[name] = v
		}
	}
	tm := func(name string, t time.Time) {
		if !t.IsZero() {
			p[name] = aztables.EDMDateTime(t)
		}
	}
	i64 := func(name string, v int64) { p[name] = aztables.EDMInt64(v) }

	str(pLabel, j.Label)
	str(pSiteURL, j.SiteURL)
	str(pWebID, j.WebID)
	str(pSPOJobID, j.SPOJobID)
	str(pSecretName, j.SecretName)
	str(pStagingContainer, j.StagingBlob.Container)
	str(pStagingBlobName, j.StagingBlob.Name)
	str(pStagingETag, j.StagingETag)
	str(pSource, string(j.Source))
	str(pCallbackURL, j.CallbackURL)
	str(pHistory, history)
	i64(pFilesTotal, j.FilesTotal)
	i64(pFilesDone, j.FilesDone)
	i64(pBytesTotal, j.BytesTotal)
	i64(pBytesDone, j.BytesDone)
	i64(pObjectsTotal, j.ObjectsTotal)
	i64(pObjectsDone, j.ObjectsDone)
	i64(pErrors, j.Errors)
	i64(pWarnings, j.Warnings)
	str(pProgressToken, j.ProgressToken)
	tm(pLastEventAt, j.LastEventAt)
	str(pSeenEvents, seen)
	str(pFirstErrors, firstErrors)
	str(pFailureReason, j.FailureReason)
	tm(pPostponedUntil, j.Postponed.NextPickupTime)
	str(pPostponedReason, j.Postponed.Reason)
	str(pSubmitLeaseOwner, j.SubmitLease.Owner)
	tm(pSubmitLeaseExpiry, j.SubmitLease.Expiry)
	tm(pCreatedAt, j.CreatedAt)
	tm(pUpdatedAt, j.UpdatedAt)
	tm(pEndedAt, j.EndedAt)
	str(pLogsBlobPrefix, j.LogsBlobPrefix)
	tm(pCleanupAt, j.CleanupAt)
	tm(pCleanedUpAt, j.CleanedUpAt)
	tm(pContainersExpireAt, j.ContainersExpireAt)
	i64(pVersion, j.Version)
	return p
}

// prepare normalizes, validates and fits j and returns its properties.
func (j *Job) prepare() (map[string]any, error) {
	j.normalize()
	if err := j.validate(); err != nil {
		return nil, err
	}
	h, s, f, err := j.fitLists()
	if err != nil {
		return nil, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	return j.properties(h, s, f), nil
}

// entityJSON is the JSON of one row holding props.
func entityJSON(rowKey string, props map[string]any) ([]byte, error) {
	b, err := json.Marshal(aztables.EDMEntity{
		Entity:     aztables.Entity{PartitionKey: partitionKey, RowKey: rowKey},
		Properties: props,
	})
	if err != nil {
		return nil, err
	}
	if len(b) > maxEntityBytes {
		return nil, fmt.Errorf("%w: entity of %d bytes is too large", ErrInvalid, len(b))
	}
	return b, nil
}

// decodeJob reads a job row (main or state index) as returned by the service.
func decodeJob(data []byte) (*Job, error) {
	var e aztables.EDMEntity
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decode job entity: %w", err)
	}
	p := e.Properties
	var firstErr error
	fail := func(name string, err error) {
		if firstErr == nil {
			firstErr = fmt.Errorf("decode job entity %s: property %s: %w", e.RowKey, name, err)
		}
	}
	str := func(name string) string {
		switch v := p[name].(type) {
		case nil:
			return ""
		case string:
			return v
		default:
			fail(name, fmt.Errorf("unexpected type %T", v))
			return ""
		}
	}
	i64 := func(name string) int64 {
		switch v := p[name].(type) {
		case nil:
			return 0
		case aztables.EDMInt64:
			return int64(v)
		case int32:
			return int64(v)
		case float64:
			return int64(v)
		case string:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				fail(name, err)
			}
			return n
		default:
			fail(name, fmt.Errorf("unexpected type %T", v))
			return 0
		}
	}
	tm := func(name string) time.Time {
		switch v := p[name].(type) {
		case nil:
			return time.Time{}
		case aztables.EDMDateTime:
			return normTime(time.Time(v))
		case string:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				fail(name, err)
			}
			return normTime(t)
		default:
			fail(name, fmt.Errorf("unexpected type %T", v))
			return time.Time{}
		}
	}
	list := func(name string, dst any) {
		if s := str(name); s != "" {
			if err := json.Unmarshal([]byte(s), dst); err != nil {
				fail(name, err)
			}
		}
	}
	j := &Job{
		ID:             str(pJobID),
		Label:          str(pLabel),
		SiteURL:        str(pSiteURL),
		WebID:          str(pWebID),
		SPOJobID:       str(pSPOJobID),
		SecretName:     str(pSecretName),
		StagingBlob:    BlobRef{Container: str(pStagingContainer), Name: str(pStagingBlobName)},
		StagingETag:    str(pStagingETag),
		Source:         Source(str(pSource)),
		CallbackURL:    str(pCallbackURL),
		State:          State(str(pState)),
		FilesTotal:     i64(pFilesTotal),
		FilesDone:      i64(pFilesDone),
		BytesTotal:     i64(pBytesTotal),
		BytesDone:      i64(pBytesDone),
		ObjectsTotal:   i64(pObjectsTotal),
		ObjectsDone:    i64(pObjectsDone),
		Errors:         i64(pErrors),
		Warnings:       i64(pWarnings),
		ProgressToken:  str(pProgressToken),
		LastEventAt:    tm(pLastEventAt),
		FailureReason:  str(pFailureReason),
		Postponed:      Postponement{NextPickupTime: tm(pPostponedUntil), Reason: str(pPostponedReason)},
		SubmitLease:    Lease{Owner: str(pSubmitLeaseOwner), Expiry: tm(pSubmitLeaseExpiry)},
		CreatedAt:      tm(pCreatedAt),
		UpdatedAt:      tm(pUpdatedAt),
		EndedAt:        tm(pEndedAt),
		LogsBlobPrefix: str(pLogsBlobPrefix),
		CleanupAt:      tm(pCleanupAt),
		CleanedUpAt:    tm(pCleanedUpAt),

		ContainersExpireAt: tm(pContainersExpireAt),
		Version:            i64(pVersion),
	}
	list(pHistory, &j.History)
	list(pSeenEvents, &j.SeenEvents)
	list(pFirstErrors, &j.FirstErrors)
	if firstErr != nil {
		return nil, firstErr
	}
	if j.ID == "" {
		return nil, fmt.Errorf("decode job entity %s: no %s", e.RowKey, pJobID)
	}
	return j, nil
}
