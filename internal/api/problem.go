package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/vault"
)

// ProblemTypePrefix starts the type of every problem; the rest names the case (e.g. "invalid-json").
const ProblemTypePrefix = "urn:spomig:problem:"

// Problem is the application/problem+json body of an error (RFC 9457).
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// problem is an error answer being built.
type problem struct {
	Status        int
	Slug          string
	Title, Detail string
	RetryAfter    time.Duration // > 0: Retry-After header
}

func (s *server) problem(w http.ResponseWriter, r *http.Request, p problem) {
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(p.RetryAfter)))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(Problem{
		Type:     ProblemTypePrefix + p.Slug,
		Title:    p.Title,
		Status:   p.Status,
		Detail:   p.Detail,
		Instance: safePath(r.URL.Path),
	})
}

func retrySeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// fail answers err as a problem: the status and a safe detail come from what err is; err itself is only
// logged (redacted) in the audit line.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	auditOf(r.Context()).err = err
	s.problem(w, r, classify(err))
}

// classify maps an error of the domain or of an upstream service to a problem. Details are built from
// known fields only, never from an upstream message.
func classify(err error) problem {
	var (
		fe   *provision.FieldError
		te   *jobs.TransitionError
		spoT *spo.ThrottledError
		kvT  *vault.ThrottledError
		spoE *spo.Error
		kvE  *vault.Error
		kvF  *vault.ForbiddenError
		rsp  *azcore.ResponseError
	)
	switch {
	case errors.As(err, &fe) && fe.Forbidden:
		return problem{Status: http.StatusForbidden, Slug: "site-not-allowed", Title: "Site not allowed", Detail: fe.Error()}
	case errors.As(err, &fe):
		return problem{Status: http.StatusBadRequest, Slug: "invalid-field", Title: "Invalid request field", Detail: fe.Error()}
	case errors.Is(err, spo.ErrSiteNotAllowed):
		return problem{Status: http.StatusForbidden, Slug: "site-not-allowed", Title: "Site not allowed",
			Detail: "siteUrl: SharePoint tokens are only sent to allowed hosts"}
	case errors.Is(err, spo.ErrSiteNotHTTPS):
		return problem{Status: http.StatusBadRequest, Slug: "invalid-field", Title: "Invalid request field", Detail: "siteUrl: must be an https URL"}
	case errors.As(err, &spoT):
		return throttled(spoT.StatusCode, spoT.RetryAfter, "SharePoint")
	case errors.As(err, &kvT):
		return throttled(kvT.StatusCode, kvT.RetryAfter, "Key Vault")
	case spo.IsAccessDenied(err):
		return problem{Status: http.StatusForbidden, Slug: "site-access-denied", Title: "SharePoint denied access to the site",
			Detail: "spomig's identity has no access to this site: grant it Sites.FullControl.All, or Sites.Selected with full control of the site"}
	case errors.Is(err, jobs.ErrNotFound):
		return problem{Status: http.StatusNotFound, Slug: "job-not-found", Title: "Job not found", Detail: "there is no migration job with this id"}
	case errors.Is(err, provision.ErrJobIDInUse):
		return problem{Status: http.StatusConflict, Slug: "job-id-in-use", Title: "Job id in use", Detail: "a job with this id exists for another site"}
	case errors.As(err, &te):
		return problem{Status: http.StatusConflict, Slug: "illegal-transition", Title: "Illegal state transition",
			Detail: fmt.Sprintf("the job cannot move from %s to %s", te.From, te.To)}
	case errors.Is(err, provision.ErrNotAwaitingPackage):
		return problem{Status: http.StatusConflict, Slug: "not-awaiting-package", Title: "Job not awaiting its package",
			Detail: "the job already has its package; no upload URL is issued"}
	case errors.Is(err, jobs.ErrConflict):
		return problem{Status: http.StatusServiceUnavailable, Slug: "busy", Title: "Job busy",
			Detail: "the job is being changed by other updates; retry", RetryAfter: 2 * time.Second}
	case errors.Is(err, jobs.ErrInvalidContinuationToken):
		return problem{Status: http.StatusBadRequest, Slug: "invalid-continuation-token", Title: "Invalid continuation token",
			Detail: "continuationToken was not issued for this query; start again without it"}
	case errors.Is(err, provision.ErrUploadURLUnavailable):
		return problem{Status: http.StatusServiceUnavailable, Slug: "upload-unavailable", Title: "Upload URLs unavailable",
			Detail: "the storage connection cannot sign upload URLs (a SAS connection string); use an account key or an identity", RetryAfter: time.Minute}
	case errors.As(err, &spoE) && spoE.StatusCode == http.StatusNotFound && spoE.Method == "WebID":
		return problem{Status: http.StatusBadRequest, Slug: "site-not-found", Title: "Site not found", Detail: "siteUrl: SharePoint knows no site at this URL"}
	case errors.As(err, &spoE):
		return problem{Status: http.StatusBadGateway, Slug: "sharepoint-error", Title: "SharePoint failed",
			Detail: fmt.Sprintf("SharePoint answered HTTP %d to %s", spoE.StatusCode, spoE.Method)}
	case errors.Is(err, spo.ErrBadAnswer), errors.Is(err, spo.ErrBadKey), errors.Is(err, spo.ErrStorageHostNotAllowed),
		errors.Is(err, spo.ErrSameContainer), errors.Is(err, spo.ErrJobNotCreated):
		return problem{Status: http.StatusBadGateway, Slug: "sharepoint-answer-refused", Title: "SharePoint answer refused",
			Detail: "SharePoint answered something spomig does not accept (see the handler log)"}
	case errors.As(err, &kvF):
		return problem{Status: http.StatusBadGateway, Slug: "keyvault-forbidden", Title: "Key Vault refused",
			Detail: fmt.Sprintf("Key Vault refused to %s: spomig's identity lacks the permission", kvF.Op)}
	case errors.As(err, &kvE):
		return problem{Status: http.StatusBadGateway, Slug: "keyvault-error", Title: "Key Vault failed",
			Detail: fmt.Sprintf("Key Vault failed to %s (HTTP %d)", kvE.Op, kvE.StatusCode)}
	case errors.Is(err, context.DeadlineExceeded):
		return problem{Status: http.StatusServiceUnavailable, Slug: "timeout", Title: "Timed out",
			Detail: "an upstream service did not answer in time; retry", RetryAfter: 5 * time.Second}
	case errors.Is(err, context.Canceled):
		return problem{Status: http.StatusServiceUnavailable, Slug: "cancelled", Title: "Request cancelled",
			Detail: "the request was cancelled before it completed", RetryAfter: time.Second}
	case errors.As(err, &rsp):
		return problem{Status: http.StatusBadGateway, Slug: "storage-error", Title: "Storage failed",
			Detail: fmt.Sprintf("Azure Storage answered HTTP %d", rsp.StatusCode)}
	}
	return problem{Status: http.StatusInternalServerError, Slug: "internal", Title: "Internal error",
		Detail: "the request failed unexpectedly; see the handler log"}
}

// throttled answers an upstream 429/503 that outlasted our retry budget with the same status and its
// Retry-After.
func throttled(status int, after time.Duration, who string) problem {
	if status != http.StatusTooManyRequests {
		status = http.StatusServiceUnavailable
	}
	if after <= 0 {
		after = 10 * time.Second
	}
	return problem{Status: status, Slug: "upstream-throttled", Title: who + " is throttling",
		Detail:     fmt.Sprintf("%s asked spomig to slow down beyond its retry budget; retry after %d s", who, retrySeconds(after)),
		RetryAfter: after}
}
