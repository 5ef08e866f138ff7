package spo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// mediaType is sent as Accept and Content-Type (see the package documentation).
const mediaType = "application/json;odata=nometadata"

// Answer size limits. A successful answer is held in memory whole, so each call in flight may cost up
// to maxAnswerBytes; error answers are cut at maxErrorBytes.
const (
	maxAnswerBytes = 32 << 20
	maxErrorBytes  = 64 << 10
)

// tokenRefreshSkew is how long before ExpiresOn a cached token is replaced.
const tokenRefreshSkew = 5 * time.Minute

// Client calls SharePoint's Migration API. It is safe for concurrent use.
type Client struct {
	cred         azcore.TokenCredential
	http         *http.Client
	log          *slog.Logger
	userAgent    string
	siteHosts    map[string]bool
	storageHosts map[string]bool
	budget       time.Duration
	maxRetries   int
	sleep        func(context.Context, time.Duration) error
	now          func() time.Time

	mu     sync.Mutex // guards tokens; held while a token is fetched
	tokens map[string]azcore.AccessToken
}

// New returns a Client for opts, after applying its defaults and validating it.
func New(opts Options) (*Client, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	httpClient := *opts.HTTPClient
	httpClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c := &Client{
		cred:         opts.Credential,
		http:         &httpClient,
		log:          opts.Logger,
		userAgent:    "NONISV|" + opts.Organisation + "|spomig/" + opts.Version,
		siteHosts:    make(map[string]bool),
		storageHosts: make(map[string]bool),
		budget:       opts.RetryBudget,
		maxRetries:   opts.MaxRetries,
		sleep:        opts.Sleep,
		now:          opts.Now,
		tokens:       make(map[string]azcore.AccessToken),
	}
	for _, h := range opts.AllowedSiteHosts {
		n, _ := normalizeHost(h) // validated
		c.siteHosts[n] = true
	}
	for _, h := range opts.AllowedStorageHosts {
		c.storageHosts[strings.ToLower(strings.TrimSpace(h))] = true
	}
	return c, nil
}

// request is one API call.
type request struct {
	op    string // the API function, for errors and logs
	verb  string // HTTP method
	site  *site
	path  string // escaped path below the site, starting with "/_api/"
	query string // raw query, without '?'
	body  []byte // nil for no body
	// secrets are scrubbed from SharePoint's error text should it echo them (the key of a create call).
	secrets []string
}

// noThrottleRetryKey marks a context made by WithoutThrottleRetry.
type noThrottleRetryKey struct{}

// WithoutThrottleRetry returns a context under which the Client's calls make a single HTTP attempt:
// a 429 or 503 answer is returned at once as a *ThrottledError, whose RetryAfter is the wait the client
// would otherwise have slept (Retry-After or RateLimit-Reset, the larger, else DefaultRetryAfter),
// without sleeping and without counting against Options.RetryBudget or Options.MaxRetries. It is for
// callers that must record something between attempts, such as a submitter that keeps the throttle
// waits of CreateMigrationJobEncrypted out of its "outcome unknown" window (a throttled answer means
// SharePoint did not process the request); they wait out RetryAfter and call again themselves.
func WithoutThrottleRetry(ctx context.Context) context.Context {
	return context.WithValue(ctx, noThrottleRetryKey{}, true)
}

// noThrottleRetry reports whether ctx was made by WithoutThrottleRetry.
func noThrottleRetry(ctx context.Context) bool {
	v, _ := ctx.Value(noThrottleRetryKey{}).(bool)
	return v
}

// do sends r, waiting out throttling as the package documentation describes, and returns the body of
// a 2xx answer. Error answers become *Error, throttling past the limits *ThrottledError.
func (c *Client) do(ctx context.Context, r request) ([]byte, error) {
	target := r.site.base + r.path
	if r.query != "" {
		target += "?" + r.query
	}
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		status, header, body, err := c.send(ctx, r, target, attempt, waited)
		if err != nil {
			return nil, err
		}
		if status >= 200 && status <= 299 {
			return body, nil
		}
		wait, retry := classify(status, header, c.now())
		if !retry {
			return nil, parseError(status, body, r.op, r.secrets...)
		}
		throttled := &ThrottledError{Method: r.op, StatusCode: status, RetryAfter: wait}
		if noThrottleRetry(ctx) || attempt > c.maxRetries || waited+wait > c.budget {
			return nil, throttled
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return nil, throttled
		}
		c.log.LogAttrs(ctx, slog.LevelInfo, "spo throttled",
			slog.String("op", r.op), slog.Int("status", status), slog.Int("attempt", attempt),
			slog.Duration("retry_after", wait), slog.Duration("waited", waited))
		if err := c.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("spo: %s: waiting %s after HTTP %d: %w", r.op, wait, status, err)
		}
		waited += wait
	}
}

// send makes one attempt and reads the answer.
func (c *Client) send(ctx context.Context, r request, target string, attempt int, waited time.Duration) (int, http.Header, []byte, error) {
	token, err := c.token(ctx, r.site.scope)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("spo: %s: %w", r.op, err)
	}
	var body io.Reader = http.NoBody
	if r.body != nil {
		body = bytes.NewReader(r.body) // a fresh reader per attempt: the body is re-sent on retry
	}
	req, err := http.NewRequestWithContext(ctx, r.verb, target, body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("spo: %s: build request: %w", r.op, unwrapURLError(err))
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", mediaType)
	req.Header.Set("User-Agent", c.userAgent)
	if r.body != nil {
		req.Header.Set("Content-Type", mediaType)
	}
	start := time.Now()
	logAttrs := []slog.Attr{
		slog.String("op", r.op), slog.String("method", r.verb), slog.String("host", r.site.host),
		slog.String("path", r.site.path+r.path), slog.Int("attempt", attempt), slog.Duration("waited", waited),
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelDebug, "spo request", append(logAttrs,
			slog.Duration("elapsed", time.Since(start)), slog.String("error", redactText(unwrapURLError(err).Error())))...)
		return 0, nil, nil, fmt.Errorf("spo: %s: %s %s%s: %w", r.op, r.verb, r.site.host, r.site.path+r.path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	limit := int64(maxErrorBytes)
	if ok {
		limit = maxAnswerBytes
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	c.log.LogAttrs(ctx, slog.LevelDebug, "spo request", append(logAttrs,
		slog.Int("status", resp.StatusCode), slog.Duration("elapsed", time.Since(start)))...)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("spo: %s: read answer: %w", r.op, unwrapURLError(err))
	}
	if int64(len(data)) > limit {
		if ok {
			return 0, nil, nil, fmt.Errorf("spo: %s: answer larger than %d bytes: %w", r.op, limit, ErrBadAnswer)
		}
		data = data[:limit]
	}
	if resp.StatusCode == http.StatusUnauthorized {
		c.dropToken(r.site.scope, token)
	}
	return resp.StatusCode, resp.Header, data, nil
}

// classify is the one retry classifier: it reports whether an answer with this status is retried and
// after how long. Only 429 and 503 are retried, after Retry-After (delta seconds or an HTTP date) or
// RateLimit-Reset (delta seconds), the larger when both are present, else DefaultRetryAfter.
func classify(status int, h http.Header, now time.Time) (wait time.Duration, retry bool) {
	if status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
		return 0, false
	}
	retryAfter, okRetryAfter := parseRetryAfter(h.Get("Retry-After"), now)
	reset, okReset := parseDeltaSeconds(h.Get("RateLimit-Reset"))
	switch {
	case okRetryAfter && okReset:
		return max(retryAfter, reset), true
	case okRetryAfter:
		return retryAfter, true
	case okReset:
		return reset, true
	default:
		return DefaultRetryAfter, true
	}
}

// parseRetryAfter parses Retry-After as delta seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if d, ok := parseDeltaSeconds(v); ok {
		return d, true
	}
	t, err := http.ParseTime(strings.TrimSpace(v))
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// parseDeltaSeconds parses a non-negative whole number of seconds, capped at maxRetryAfter.
func parseDeltaSeconds(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || v[0] == '+' || v[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		var numErr *strconv.NumError
		if errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange) {
			return maxRetryAfter, true
		}
		return 0, false
	}
	if n > uint64(maxRetryAfter/time.Second) {
		return maxRetryAfter, true
	}
	return time.Duration(n) * time.Second, true
}

// token returns a cached or new token for scope. A token is renewed at its RefreshOn, else
// tokenRefreshSkew before ExpiresOn; when renewal fails, a token still valid for 30s more is used.
func (c *Client) token(ctx context.Context, scope string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	cached, ok := c.tokens[scope]
	if ok && !needsRefresh(cached, now) {
		return cached.Token, nil
	}
	t, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
	if err == nil && t.Token == "" {
		err = errors.New("credential returned an empty token")
	}
	if err != nil {
		if ok && now.Before(cached.ExpiresOn.Add(-30*time.Second)) {
			return cached.Token, nil
		}
		return "", fmt.Errorf("get token for %s: %w", scope, err)
	}
	c.tokens[scope] = t
	return t.Token, nil
}

func needsRefresh(t azcore.AccessToken, now time.Time) bool {
	if !t.RefreshOn.IsZero() && !now.Before(t.RefreshOn) {
		return true
	}
	return !now.Before(t.ExpiresOn.Add(-tokenRefreshSkew))
}

// dropToken forgets the cached token for scope if it is still token (SharePoint refused it).
func (c *Client) dropToken(scope, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[scope]; ok && t.Token == token {
		delete(c.tokens, scope)
	}
}

// unwrapURLError drops the *url.Error wrapper (its text repeats the URL); the cause stays wrapped.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
