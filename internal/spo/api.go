package spo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
)

// KeySize is the size of an AES-256-CBC key.
const KeySize = 32

// Containers are the SPO-provided containers of ProvisionMigrationContainers. The URIs carry SAS
// tokens and EncryptionKey is the job key: String, GoString and LogValue redact both.
type Containers struct {
	DataContainerURI     string // content blobs; pass as CreateJobRequest.DataContainerURI
	MetadataContainerURI string // manifests and SPO's logs; pass as CreateJobRequest.MetadataContainerURI
	EncryptionKey        []byte // 32-byte AES-256-CBC key; SharePoint forgets it once handed out
}

var (
	_ fmt.Stringer   = Containers{}
	_ fmt.GoStringer = Containers{}
	_ slog.LogValuer = Containers{}
)

func (c Containers) String() string {
	return fmt.Sprintf("{DataContainerURI:%s MetadataContainerURI:%s EncryptionKey:REDACTED}",
		RedactURL(c.DataContainerURI), RedactURL(c.MetadataContainerURI))
}

func (c Containers) GoString() string { return "spo.Containers" + c.String() }

func (c Containers) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("data_container", RedactURL(c.DataContainerURI)),
		slog.String("metadata_container", RedactURL(c.MetadataContainerURI)))
}

// Queue is the SPO-provided report queue of ProvisionMigrationQueue. Its URI carries a SAS token:
// String, GoString and LogValue redact it.
type Queue struct {
	JobQueueURI string
}

var (
	_ fmt.Stringer   = Queue{}
	_ fmt.GoStringer = Queue{}
	_ slog.LogValuer = Queue{}
)

func (q Queue) String() string       { return "{JobQueueURI:" + RedactURL(q.JobQueueURI) + "}" }
func (q Queue) GoString() string     { return "spo.Queue" + q.String() }
func (q Queue) LogValue() slog.Value { return slog.StringValue(RedactURL(q.JobQueueURI)) }

// CreateJobRequest are the arguments of CreateMigrationJobEncrypted. String, GoString and LogValue
// redact the key and the SAS signatures.
type CreateJobRequest struct {
	WebID                string // id of the destination web (GUID)
	DataContainerURI     string // azureContainerSourceUri
	MetadataContainerURI string // azureContainerManifestUri; must differ from DataContainerURI
	QueueURI             string // azureQueueReportUri; optional, omitted when empty
	Key                  []byte // options.AES256CBCKey, 32 bytes
}

var (
	_ fmt.Stringer   = CreateJobRequest{}
	_ fmt.GoStringer = CreateJobRequest{}
	_ slog.LogValuer = CreateJobRequest{}
)

func (r CreateJobRequest) String() string {
	return fmt.Sprintf("{WebID:%s DataContainerURI:%s MetadataContainerURI:%s QueueURI:%s Key:REDACTED}",
		r.WebID, RedactURL(r.DataContainerURI), RedactURL(r.MetadataContainerURI), RedactURL(r.QueueURI))
}

func (r CreateJobRequest) GoString() string { return "spo.CreateJobRequest" + r.String() }

func (r CreateJobRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("web_id", r.WebID),
		slog.String("data_container", RedactURL(r.DataContainerURI)),
		slog.String("metadata_container", RedactURL(r.MetadataContainerURI)),
		slog.String("queue", RedactURL(r.QueueURI)))
}

// JobState is SPMigrationJobState, the answer of GetMigrationJobStatus.
type JobState int32

// Job states. A finished job reads None, as does an unknown id.
const (
	JobStateNone       JobState = 0
	JobStateQueued     JobState = 2
	JobStateProcessing JobState = 4
)

func (s JobState) String() string {
	switch s {
	case JobStateNone:
		return "None"
	case JobStateQueued:
		return "Queued"
	case JobStateProcessing:
		return "Processing"
	}
	return "JobState(" + strconv.Itoa(int(s)) + ")"
}

// Progress is one page of GetMigrationJobProgress.
type Progress struct {
	// Events holds the page's events in order, each the JSON object SharePoint sent as a JSON string
	// (all its values are strings), ready for json.Unmarshal. An entry whose text is not JSON is kept
	// as a JSON string literal.
	Events []json.RawMessage
	// NextToken is the token to ask for the next page with. With nothing new it equals the token sent.
	NextToken string
}

// ProvisionMigrationContainers asks SharePoint for a fresh pair of containers and their key:
// POST {site}/_api/site/ProvisionMigrationContainers with body {}. The URIs must be Azure blob
// container URIs (ErrStorageHostNotAllowed) of two different containers (ErrSameContainer), and the
// key must be 32 bytes (ErrBadKey).
func (c *Client) ProvisionMigrationContainers(ctx context.Context, siteURL string) (Containers, error) {
	const op = "ProvisionMigrationContainers"
	s, err := c.parseSite(siteURL)
	if err != nil {
		return Containers{}, err
	}
	body, err := c.do(ctx, request{op: op, verb: http.MethodPost, site: s, path: "/_api/site/" + op, body: []byte("{}")})
	if err != nil {
		return Containers{}, err
	}
	defer clear(body) // it holds the key
	obj, err := answerObject(body, op)
	if err != nil {
		return Containers{}, err
	}
	var out Containers
	if out.DataContainerURI, err = stringMember(obj, op, "DataContainerUri"); err != nil {
		return Containers{}, err
	}
	if out.MetadataContainerURI, err = stringMember(obj, op, "MetadataContainerUri"); err != nil {
		return Containers{}, err
	}
	data, err := c.checkStorageURI(out.DataContainerURI, blobContainer)
	if err != nil {
		return Containers{}, fmt.Errorf("spo: %s: data container: %w", op, err)
	}
	meta, err := c.checkStorageURI(out.MetadataContainerURI, blobContainer)
	if err != nil {
		return Containers{}, fmt.Errorf("spo: %s: metadata container: %w", op, err)
	}
	if data == meta {
		return Containers{}, fmt.Errorf("spo: %s: %w", op, ErrSameContainer)
	}
	rawKey, _ := obj.get("EncryptionKey")
	key, err := decodeBinary(rawKey, "EncryptionKey")
	if err != nil {
		return Containers{}, fmt.Errorf("spo: %s: %w: %w", op, ErrBadKey, err)
	}
	if len(key) != KeySize {
		clear(key)
		return Containers{}, fmt.Errorf("spo: %s: EncryptionKey is %d bytes, want %d: %w", op, len(key), KeySize, ErrBadKey)
	}
	out.EncryptionKey = key
	c.log.LogAttrs(ctx, slog.LevelDebug, "spo containers provisioned", slog.String("host", s.host), slog.Any("containers", out))
	return out, nil
}

// ProvisionMigrationQueue asks SharePoint for its report queue: POST
// {site}/_api/site/ProvisionMigrationQueue with body {}. The URI must be an Azure queue URI
// (ErrStorageHostNotAllowed).
func (c *Client) ProvisionMigrationQueue(ctx context.Context, siteURL string) (Queue, error) {
	const op = "ProvisionMigrationQueue"
	s, err := c.parseSite(siteURL)
	if err != nil {
		return Queue{}, err
	}
	body, err := c.do(ctx, request{op: op, verb: http.MethodPost, site: s, path: "/_api/site/" + op, body: []byte("{}")})
	if err != nil {
		return Queue{}, err
	}
	obj, err := answerObject(body, op)
	if err != nil {
		return Queue{}, err
	}
	uri, err := stringMember(obj, op, "JobQueueUri")
	if err != nil {
		return Queue{}, err
	}
	if _, err := c.checkStorageURI(uri, storageQueue); err != nil {
		return Queue{}, fmt.Errorf("spo: %s: %w", op, err)
	}
	return Queue{JobQueueURI: uri}, nil
}

// createJobBody is the body of CreateMigrationJobEncrypted. It holds the key: never log it.
type createJobBody struct {
	WebID    string           `json:"gWebId"`
	Source   string           `json:"azureContainerSourceUri"`
	Manifest string           `json:"azureContainerManifestUri"`
	Queue    string           `json:"azureQueueReportUri,omitempty"`
	Options  encryptionOption `json:"options"`
}

type encryptionOption struct {
	AES256CBCKey []byte `json:"AES256CBCKey"` // base64 on the wire
}

// CreateMigrationJobEncrypted submits an encrypted job and returns its id: POST
// {site}/_api/site/CreateMigrationJobEncrypted with gWebId, both container URIs, the queue URI when set
// and options.AES256CBCKey. Before sending, the web id must be a GUID (ErrBadID), the URIs Azure Storage
// URIs (ErrStorageHostNotAllowed) naming two different containers (ErrSameContainer), and the key 32
// bytes (ErrBadKey). A null or empty-GUID answer is ErrJobNotCreated.
func (c *Client) CreateMigrationJobEncrypted(ctx context.Context, siteURL string, req CreateJobRequest) (string, error) {
	const op = "CreateMigrationJobEncrypted"
	s, err := c.parseSite(siteURL)
	if err != nil {
		return "", err
	}
	webID, err := checkID("web id", req.WebID)
	if err != nil {
		return "", err
	}
	data, err := c.checkStorageURI(req.DataContainerURI, blobContainer)
	if err != nil {
		return "", fmt.Errorf("spo: %s: data container: %w", op, err)
	}
	meta, err := c.checkStorageURI(req.MetadataContainerURI, blobContainer)
	if err != nil {
		return "", fmt.Errorf("spo: %s: metadata container: %w", op, err)
	}
	if data == meta {
		return "", fmt.Errorf("spo: %s: %w", op, ErrSameContainer)
	}
	if req.QueueURI != "" {
		if _, err := c.checkStorageURI(req.QueueURI, storageQueue); err != nil {
			return "", fmt.Errorf("spo: %s: queue: %w", op, err)
		}
	}
	if len(req.Key) != KeySize {
		return "", fmt.Errorf("spo: %s: key is %d bytes, want %d: %w", op, len(req.Key), KeySize, ErrBadKey)
	}
	payload, err := json.Marshal(createJobBody{
		WebID:    webID,
		Source:   req.DataContainerURI,
		Manifest: req.MetadataContainerURI,
		Queue:    req.QueueURI,
		Options:  encryptionOption{AES256CBCKey: req.Key},
	})
	if err != nil {
		return "", fmt.Errorf("spo: %s: encode request: %w", op, err)
	}
	defer clear(payload) // it holds the key
	body, err := c.do(ctx, request{op: op, verb: http.MethodPost, site: s, path: "/_api/site/" + op, body: payload,
		secrets: keyForms(req.Key)})
	if err != nil {
		return "", err
	}
	raw, err := decodeAnswer(body, op)
	if err != nil {
		return "", fmt.Errorf("spo: %s: %w", op, err)
	}
	jobID, err := decodeGUID(raw, "job id")
	if err != nil {
		return "", fmt.Errorf("spo: %s: %w", op, err)
	}
	if jobID == "" || jobID == emptyGUID {
		return "", fmt.Errorf("spo: %s: %w", op, ErrJobNotCreated)
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "spo job created", slog.String("host", s.host), slog.String("job_id", jobID))
	return jobID, nil
}

// keyForms are the textual forms of a key SharePoint might echo in an error message: base64 and
// base64url without padding, so the padded forms are caught too.
func keyForms(key []byte) []string {
	return []string{base64.RawStdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key)}
}

// GetMigrationJobStatus returns a job's queue state: POST {site}/_api/site/GetMigrationJobStatus with
// body {"id":"<guid>"}. Both a finished job and an unknown id read JobStateNone.
func (c *Client) GetMigrationJobStatus(ctx context.Context, siteURL, jobID string) (JobState, error) {
	const op = "GetMigrationJobStatus"
	raw, err := c.callWithID(ctx, op, siteURL, jobID)
	if err != nil {
		return 0, err
	}
	if n, err := decodeInt(raw, "job state"); err == nil {
		if n < -1<<31 || n > 1<<31-1 {
			return 0, fmt.Errorf("spo: %s: job state out of range: %w", op, ErrBadAnswer)
		}
		return JobState(n), nil
	}
	var name string
	if json.Unmarshal(raw, &name) == nil {
		for _, s := range []JobState{JobStateNone, JobStateQueued, JobStateProcessing} {
			if strings.EqualFold(name, s.String()) {
				return s, nil
			}
		}
	}
	return 0, fmt.Errorf("spo: %s: job state is not a number: %w", op, ErrBadAnswer)
}

// DeleteMigrationJob deletes a queued job: POST {site}/_api/site/DeleteMigrationJob with body
// {"id":"<guid>"}. It reports SharePoint's Boolean answer.
func (c *Client) DeleteMigrationJob(ctx context.Context, siteURL, jobID string) (bool, error) {
	const op = "DeleteMigrationJob"
	raw, err := c.callWithID(ctx, op, siteURL, jobID)
	if err != nil {
		return false, err
	}
	ok, err := decodeBool(raw, "answer")
	if err != nil {
		return false, fmt.Errorf("spo: %s: %w", op, err)
	}
	return ok, nil
}

// callWithID posts {"id":"<guid>"} to a site function and returns the decoded payload.
func (c *Client) callWithID(ctx context.Context, op, siteURL, jobID string) (json.RawMessage, error) {
	s, err := c.parseSite(siteURL)
	if err != nil {
		return nil, err
	}
	id, err := checkID("job id", jobID)
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(struct {
		ID string `json:"id"`
	}{id})
	if err != nil {
		return nil, fmt.Errorf("spo: %s: encode request: %w", op, err)
	}
	body, err := c.do(ctx, request{op: op, verb: http.MethodPost, site: s, path: "/_api/site/" + op, body: payload})
	if err != nil {
		return nil, err
	}
	raw, err := decodeAnswer(body, op)
	if err != nil {
		return nil, fmt.Errorf("spo: %s: %w", op, err)
	}
	return raw, nil
}

// GetMigrationJobProgress returns the events after nextToken ("" starts at the beginning, token 0):
// GET {site}/_api/site/GetMigrationJobProgress(jobId='<guid>',nextToken=<token>). Unknown jobs fail with
// IsJobNotFound, jobs older than about 5 days with IsStatusExpired (both HTTP 500, never retried).
func (c *Client) GetMigrationJobProgress(ctx context.Context, siteURL, jobID, nextToken string) (Progress, error) {
	const op = "GetMigrationJobProgress"
	s, err := c.parseSite(siteURL)
	if err != nil {
		return Progress{}, err
	}
	id, err := checkID("job id", jobID)
	if err != nil {
		return Progress{}, err
	}
	path := "/_api/site/" + op + "(jobId='" + id + "',nextToken=" + tokenLiteral(nextToken) + ")"
	body, err := c.do(ctx, request{op: op, verb: http.MethodGet, site: s, path: path})
	if err != nil {
		return Progress{}, err
	}
	obj, err := answerObject(body, op)
	if err != nil {
		return Progress{}, err
	}
	rawToken, ok := obj.get("NextToken")
	if !ok {
		return Progress{}, fmt.Errorf("spo: %s: answer has no NextToken: %w", op, ErrBadAnswer)
	}
	var p Progress
	if p.NextToken, err = decodeToken(rawToken); err != nil {
		return Progress{}, fmt.Errorf("spo: %s: %w", op, err)
	}
	rawLogs, _ := obj.get("Logs")
	if p.Events, err = decodeEvents(rawLogs); err != nil {
		return Progress{}, fmt.Errorf("spo: %s: %w", op, err)
	}
	return p, nil
}

// tokenLiteral renders nextToken for the progress URL: "" becomes the documented start token 0, a
// token of digits only is sent unquoted as in Microsoft's sample, anything else as an OData string
// literal (quotes doubled) with every byte outside [A-Za-z0-9-._~] percent-encoded.
func tokenLiteral(token string) string {
	if token == "" {
		return "0"
	}
	if isDigits(token) {
		return token
	}
	quoted := strings.ReplaceAll(token, "'", "''")
	var b strings.Builder
	b.WriteByte('\'')
	for i := 0; i < len(quoted); i++ {
		ch := quoted[i]
		switch {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9',
			ch == '-', ch == '.', ch == '_', ch == '~':
			b.WriteByte(ch)
		case ch == '\'':
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// WebID returns the id of the site's web: GET {site}/_api/web?$select=Id.
func (c *Client) WebID(ctx context.Context, siteURL string) (string, error) {
	const op = "WebID"
	s, err := c.parseSite(siteURL)
	if err != nil {
		return "", err
	}
	body, err := c.do(ctx, request{op: op, verb: http.MethodGet, site: s, path: "/_api/web", query: "$select=Id"})
	if err != nil {
		return "", err
	}
	obj, err := answerObject(body, "")
	if err != nil {
		return "", err
	}
	raw, ok := obj.get("Id")
	if !ok {
		return "", fmt.Errorf("spo: %s: answer has no Id: %w", op, ErrBadAnswer)
	}
	id, err := decodeGUID(raw, "Id")
	if err != nil {
		return "", fmt.Errorf("spo: %s: %w", op, err)
	}
	if id == "" {
		return "", fmt.Errorf("spo: %s: Id is null: %w", op, ErrBadAnswer)
	}
	return id, nil
}

// answerObject decodes an answer whose payload must be an object.
func answerObject(body []byte, op string) (object, error) {
	raw, err := decodeAnswer(body, op)
	if err != nil {
		return nil, fmt.Errorf("spo: %s: %w", op, err)
	}
	obj, ok := asObject(raw)
	if !ok {
		return nil, fmt.Errorf("spo: %s: answer is not an object: %w", op, ErrBadAnswer)
	}
	return obj, nil
}

// stringMember returns a required string member of an answer object.
func stringMember(obj object, op, name string) (string, error) {
	raw, ok := obj.get(name)
	if !ok {
		return "", fmt.Errorf("spo: %s: answer has no %s: %w", op, name, ErrBadAnswer)
	}
	s, err := decodeString(raw, name)
	if err != nil {
		return "", fmt.Errorf("spo: %s: %w", op, err)
	}
	return s, nil
}
