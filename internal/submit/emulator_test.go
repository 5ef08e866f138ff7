package submit

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/dev/testenv"
	"github.com/spomig/spomig/internal/dev/testenv/capture"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/vault"
)

// Against the SPO and Key Vault emulators: eight concurrent deliveries of one message create exactly one
// SharePoint job, and no key or signature reaches the logs.
func TestExactlyOnceAgainstEmulators(t *testing.T) {
	ctx := context.Background()
	var logs capture.Buffer
	log := logs.Logger()
	sp := testenv.StartSharePoint(t, spoemu.Options{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	emu := sp.Emulator
	custody := testenv.Custody(t, kvemu.StartTest(t, kvemu.Options{CA: sp.CA}), testenv.CustodyOptions{Logger: log})
	client := sp.Client(t, testenv.ClientOptions{Logger: log})

	site := "/sites/" + azurite.UniqueName("submit")
	siteURL := emu.SiteURL(site)
	c, err := client.ProvisionMigrationContainers(ctx, siteURL)
	if err != nil {
		t.Fatal(err)
	}
	q, err := client.ProvisionMigrationQueue(ctx, siteURL)
	if err != nil {
		t.Fatal(err)
	}
	store := newStore(t)
	j := stagedJob(t, store, func(j *jobs.Job) { j.SiteURL, j.WebID = siteURL, emu.WebID(site) })
	if _, err := custody.PutJob(ctx, j.ID, siteURL, vault.JobSecret{Key: c.EncryptionKey, DataContainerURI: c.DataContainerURI,
		MetadataContainerURI: c.MetadataContainerURI}); err != nil {
		t.Fatal(err)
	}
	if err := custody.PutQueue(ctx, siteURL, q.JobQueueURI, time.Time{}); err != nil {
		t.Fatal(err)
	}

	s := newSubmitter(t, Options{Jobs: store, Vault: custody, SPO: client, Logger: log})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := submitUntilDone(t, s, EncodeMessage(j.ID)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	var all []spoemu.JobInfo
	getJSON(t, emu.HTTPClient(), emu.URL()+"/_emulator/jobs", &all)
	var ours []spoemu.JobInfo
	for _, info := range all {
		if info.Site == site {
			ours = append(ours, info)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("the emulator has %d jobs for the site, want 1: %+v", len(ours), ours)
	}
	got := get(t, store, j.ID)
	if got.State != jobs.StateSubmitted || !strings.EqualFold(got.SPOJobID, ours[0].ID) {
		t.Fatalf("record: %s, SPO job %q; emulator job %s", got.State, got.SPOJobID, ours[0].ID)
	}
	// The job reports to the site's queue: its JobQueued event is there.
	if evs := emu.Events(ours[0].ID); len(evs) == 0 || !strings.Contains(evs[0], "JobQueued") {
		t.Fatalf("events %v", evs)
	}

	// Secrets never reach the logs.
	text := logs.String()
	if !strings.Contains(text, j.ID) {
		t.Fatalf("the logs do not even name the job: %s", text)
	}
	for _, secret := range capture.SecretForms(t, c.EncryptionKey, c.DataContainerURI, c.MetadataContainerURI, q.JobQueueURI) {
		if strings.Contains(text, secret) {
			t.Fatalf("the logs contain a secret (%.6s…)", secret)
		}
	}
}

func getJSON(t *testing.T, c *http.Client, u string, v any) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
