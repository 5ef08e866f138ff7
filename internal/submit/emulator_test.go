package submit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/kvemu"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/vault"
)

// Against the SPO and Key Vault emulators: eight concurrent deliveries of one message create exactly one
// SharePoint job, and no key or signature reaches the logs.
func TestExactlyOnceAgainstEmulators(t *testing.T) {
	ctx := context.Background()
	var logs logBuffer
	log := logs.logger()
	ca, err := devtls.New()
	if err != nil {
		t.Fatal(err)
	}
	emu := spoemu.StartTest(t, spoemu.Options{CA: ca,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	kv, err := kvemu.Start(kvemu.Options{CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	custody, err := vault.New(vault.Options{VaultURL: kv.URL(), Credential: &kvemu.Credential{},
		DisableChallengeResourceVerification: true, ClientOptions: azcore.ClientOptions{Transport: ca.HTTPClient()}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var health struct{ BlobEndpoint, QueueEndpoint string }
	getJSON(t, emu.HTTPClient(), emu.URL()+"/_emulator/health", &health)
	client, err := spo.New(spo.Options{Credential: &kvemu.Credential{}, TenantHost: strings.TrimPrefix(emu.URL(), "https://"),
		HTTPClient: ca.HTTPClient(), AllowedStorageHosts: []string{hostOf(t, health.BlobEndpoint), hostOf(t, health.QueueEndpoint)},
		Logger: log})
	if err != nil {
		t.Fatal(err)
	}

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
	for _, secret := range secretsOf(t, c.EncryptionKey, c.DataContainerURI, c.MetadataContainerURI, q.JobQueueURI) {
		if strings.Contains(text, secret) {
			t.Fatalf("the logs contain a secret (%.6s…)", secret)
		}
	}
}

// secretsOf lists the textual forms of a key and of the SAS signatures of URIs.
func secretsOf(t *testing.T, key []byte, uris ...string) []string {
	t.Helper()
	out := []string{base64.StdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key), base64.RawStdEncoding.EncodeToString(key)}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		sig := p.Query().Get("sig")
		if sig == "" {
			t.Fatalf("URI without a signature")
		}
		out = append(out, sig, url.QueryEscape(sig))
	}
	return out
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

func hostOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Fatalf("endpoint %q: %v", raw, errors.Join(err, errors.New("no host")))
	}
	return u.Host
}
