package jobs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/spomig/spomig/internal/dev/azurite"
)

func TestMain(m *testing.M) { os.Exit(azurite.RunMain(m)) }

// newStore returns a Store over a new table of the shared Azurite.
func newStore(t *testing.T, opts Options) *Store {
	t.Helper()
	srv := azurite.Shared(t)
	svc, err := aztables.NewServiceClientFromConnectionString(srv.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Table == "" {
		opts.Table = "jobs" + strings.NewReplacer("-", "", "_", "").Replace(azurite.UniqueName("t"))
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(svc, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

var testLocation = time.FixedZone("UTC+2", 2*60*60)

// fullJob returns a record with every field set (times in a non-UTC zone with nanoseconds, to exercise
// normalization).
func fullJob(id string) *Job {
	base := time.Date(2025, 5, 20, 11, 18, 48, 132456789, testLocation)
	return &Job{
		ID:          id,
		Label:       "HR archive <2025> & co",
		SiteURL:     "https://contoso.sharepoint.com/sites/hr",
		WebID:       "8f1c2b4e-52e3-4c52-9a5e-2f8c0f3f1a77",
		SPOJobID:    "6A5F0C8E-0D6B-4B4E-9E4B-7C1C9D1E2F3A",
		SecretName:  "spomig-job-" + id,
		StagingBlob: BlobRef{Container: "migration-staging", Name: id + ".zip"},
		StagingETag: `"0x8DC7B2F3A1B2C3D"`,
		Source:      SourceAPI,
		CallbackURL: "https://hooks.example.com/spomig/done",
		State:       StateRunning,
		History: []Transition{
			{State: StateAwaitingPackage, At: base, Reason: "created"},
			{State: StateEncrypting, At: base.Add(time.Minute)},
			{State: StateStaged, At: base.Add(2 * time.Minute)},
			{State: StateSubmitted, At: base.Add(3 * time.Minute), Reason: "CreateMigrationJobEncrypted"},
			{State: StateRunning, At: base.Add(4 * time.Minute), Reason: "JobStart"},
		},
		FilesTotal: 120, FilesDone: 30,
		BytesTotal: 1 << 40, BytesDone: 1 << 33,
		ObjectsTotal: 150, ObjectsDone: 40,
		Errors: 2, Warnings: 3,
		ProgressToken: "token-0042",
		LastEventAt:   base.Add(5 * time.Minute),
		SeenEvents:    []string{"JobStart|05/20/2025 09:22:48.132", "JobProgress|05/20/2025 09:23:48.132|1"},
		FirstErrors: []ItemFailure{
			{Kind: ItemError, ObjectType: "File", URL: "/sites/hr/Shared Documents/a.docx", ErrorCode: "0x80070005", Message: "access denied"},
			{Kind: ItemWarning, ObjectType: "Folder", URL: "/sites/hr/Shared Documents/x", Message: "renamed"},
		},
		FailureReason:      "",
		Postponed:          Postponement{},
		SubmitLease:        Lease{Owner: "host-1/invocation-7", Expiry: base.Add(10 * time.Minute)},
		CreatedAt:          base,
		EndedAt:            time.Time{},
		LogsBlobPrefix:     "migration-reports/" + id + "/",
		CleanupAt:          base.Add(30 * 24 * time.Hour),
		CleanedUpAt:        base.Add(31 * 24 * time.Hour),
		ContainersExpireAt: base.Add(7 * 24 * time.Hour),
	}
}

var idSeq atomic.Int64

// newID returns a job id unique in the test process.
func newID(prefix string) string {
	return fmt.Sprintf("%s-%05d-%d", prefix, idSeq.Add(1), os.Getpid())
}
