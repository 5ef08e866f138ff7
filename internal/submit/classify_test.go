package submit

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
)

type tokenCred struct{}

func (tokenCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "test-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// The real SharePoint client against answers of every shape: what may have created a job is never
// retried, what cannot have is.
func TestOutcomeWithTheRealClient(t *testing.T) {
	hangUp := func(w http.ResponseWriter, r *http.Request) { // read the request, then drop the connection
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	for _, tc := range []struct {
		name      string
		handler   http.HandlerFunc
		closed    bool // the server is gone: connection refused
		wantState jobs.State
		wantErr   bool
	}{
		{"created", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"value":"6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3c"}`))
		}, false, jobs.StateSubmitted, false},
		{"connection dropped after the request", hangUp, false, jobs.StateFailed, false},
		{"unreadable 2xx", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`<html>`)) }, false, jobs.StateFailed, false},
		{"bad gateway", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad gateway", http.StatusBadGateway) }, false, jobs.StateFailed, false},
		{"throttled beyond the budget", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
		}, false, jobs.StateStaged, true},
		{"sharepoint error", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"error":{"code":"-2146232832, Microsoft.SharePoint.SPException","message":{"lang":"en-US","value":"x"}}}`))
		}, false, jobs.StateStaged, true},
		{"connection refused", nil, true, jobs.StateStaged, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(tc.handler)
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "https://")
			if tc.closed {
				srv.Close()
			}
			client, err := spo.New(spo.Options{Credential: tokenCred{}, TenantHost: host, HTTPClient: srv.Client(), MaxRetries: 1})
			if err != nil {
				t.Fatal(err)
			}
			store := newStore(t)
			v := newFakeVault()
			j := stagedJob(t, store, func(j *jobs.Job) { j.SiteURL = "https://" + host + "/sites/hr" })
			v.put(j.ID, secret())
			s := newSubmitter(t, Options{Jobs: store, Vault: v, SPO: client})
			err = s.Submit(context.Background(), EncodeMessage(j.ID), 1)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Submit = %v, want error %t", err, tc.wantErr)
			}
			got := get(t, store, j.ID)
			if got.State != tc.wantState {
				t.Fatalf("state %s (%s; last error %q), want %s", got.State, got.FailureReason, LastError(got), tc.wantState)
			}
			if got.State == jobs.StateFailed && !strings.Contains(got.FailureReason, "outcome unknown") {
				t.Fatalf("reason %q", got.FailureReason)
			}
		})
	}
}

var _ net.Addr = (*net.TCPAddr)(nil)
