package submit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptrace"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/dev/testenv"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/vault"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunMain(m)) }

const (
	testSite  = "https://contoso.sharepoint.com/sites/hr"
	testWebID = "8f1c2b4e-52e3-4c52-9a5e-2f8c0f3f1a77"
	testSig   = "SIGSECRETxyz%2Babc%3D"
)

var (
	testKey   = bytes.Repeat([]byte{0x5A, 0xA5, 0x3C, 0xC3}, 8)
	testData  = "https://spoprov.blob.core.windows.net/0-1-data?sv=2020-02-10&sr=c&sp=rw&spr=https&sig=" + testSig
	testMeta  = "https://spoprov.blob.core.windows.net/0-1-meta?sv=2020-02-10&sr=c&sp=rw&spr=https&sig=" + testSig
	testQueue = "https://spoprov.queue.core.windows.net/q1?sv=2020-02-10&sp=rap&sig=" + testSig
)

// newStore returns a job store over a new table of the shared Azurite.
func newStore(t *testing.T) *jobs.Store {
	t.Helper()
	return testenv.JobStore(t, testenv.StoreOptions{TablePrefix: "submit"})
}

var idSeq atomic.Int64

// stagedJob creates a Staged job record (mutate adjusts it before Create).
func stagedJob(t *testing.T, s *jobs.Store, mutate func(*jobs.Job)) *jobs.Job {
	t.Helper()
	id := fmt.Sprintf("job-%d-%d", os.Getpid(), idSeq.Add(1))
	j := &jobs.Job{ID: id, SiteURL: testSite, WebID: testWebID, SecretName: vault.JobSecretName(id),
		StagingBlob: jobs.BlobRef{Container: "migration-staging", Name: id + ".zip"}, State: jobs.StateStaged}
	if mutate != nil {
		mutate(j)
	}
	if err := s.Create(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return j
}

func get(t *testing.T, s *jobs.Store, id string) *jobs.Job {
	t.Helper()
	j, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// fakeVault serves one secret per job and one queue per site.
type fakeVault struct {
	mu       sync.Mutex
	secrets  map[string]vault.JobSecret
	queues   map[string]string
	jobErr   error
	queueErr error
	reads    int
}

func newFakeVault() *fakeVault {
	return &fakeVault{secrets: map[string]vault.JobSecret{}, queues: map[string]string{}}
}

func (v *fakeVault) put(jobID string, s vault.JobSecret) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.secrets[jobID] = s
}

func (v *fakeVault) GetJob(_ context.Context, jobID string) (*vault.JobSecret, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reads++
	if v.jobErr != nil {
		return nil, v.jobErr
	}
	s, ok := v.secrets[jobID]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", jobID, vault.ErrNotFound)
	}
	s.Key = bytes.Clone(s.Key)
	return &s, nil
}

func (v *fakeVault) GetQueue(_ context.Context, site string) (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.queueErr != nil {
		return "", v.queueErr
	}
	q, ok := v.queues[vault.NormalizeSite(site)]
	if !ok {
		return "", fmt.Errorf("get queue: %w", vault.ErrNotFound)
	}
	return q, nil
}

func secret() vault.JobSecret {
	return vault.JobSecret{Key: bytes.Clone(testKey), DataContainerURI: testData, MetadataContainerURI: testMeta, QueueURI: testQueue}
}

// fakeSPO counts CreateMigrationJobEncrypted calls; answer decides each call's outcome (default: a new
// GUID). wrote makes a call report, through the request's httptrace, that its request was written.
type fakeSPO struct {
	mu     sync.Mutex
	calls  int
	reqs   []spo.CreateJobRequest
	keys   [][]byte // the key of each call, as received
	answer func(ctx context.Context, n int) (string, error)
	wrote  bool
}

func (f *fakeSPO) CreateMigrationJobEncrypted(ctx context.Context, siteURL string, req spo.CreateJobRequest) (string, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.reqs = append(f.reqs, req)
	f.keys = append(f.keys, bytes.Clone(req.Key))
	answer, wrote := f.answer, f.wrote
	f.mu.Unlock()
	if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.GetConn != nil {
		tr.GetConn("spo:443")
		if wrote {
			tr.WroteHeaders()
		}
	}
	if answer != nil {
		return answer(ctx, n)
	}
	return fmt.Sprintf("6a5f0c8e-0d6b-4b4e-9e4b-%012d", n), nil
}

func (f *fakeSPO) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func newSubmitter(t *testing.T, opts Options) *Submitter {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// submitUntilDone delivers the message until Submit acknowledges it (ErrInProgress is redelivered).
func submitUntilDone(t *testing.T, s *Submitter, text string) error {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n := int64(1); ; n++ {
		err := s.Submit(context.Background(), text, n)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
