// Package spo is spomig's client for the SharePoint Online Migration API: it provisions the SPO-provided
// containers and queue, creates encrypted migration jobs and follows them (status, progress, delete).
//
// # Wire choices
//
//   - Every request sends Accept and Content-Type "application/json;odata=nometadata". It is the smallest
//     answer, the flavour a working client uses for these functions, and with it complex parameters
//     (options.AES256CBCKey) need no "__metadata" tag. Answers are decoded whatever flavour SharePoint
//     chooses to send (nometadata, minimalmetadata or verbose), CSOM "\/Guid(…)\/" and
//     "\/Base64Binary(…)\/" values included; see decodeAnswer.
//   - GetMigrationJobProgress uses the documented URL form
//     GetMigrationJobProgress(jobId='<guid>',nextToken=<token>), not the third-party guid'…' form.
//     A token made of digits only (the documented start token 0 and the tokens seen so far) is sent
//     unquoted as in Microsoft's sample; any other token is sent as a quoted OData string literal.
//   - Every request is decorated with User-Agent "NONISV|<Organisation>|spomig/<Version>".
//
// # Throttling
//
// 429 and 503 are retried after exactly the time SharePoint asks for: Retry-After (seconds or an HTTP
// date), or RateLimit-Reset when it is larger. There is no exponential back-off. A 503 (or 429) without
// either header waits DefaultRetryAfter. All waits of one call together stay within Options.RetryBudget
// and Options.MaxRetries, and within the context's deadline: when the next wait would not fit, the call
// returns a *ThrottledError at once, without sleeping, so that callers can answer 429/503 with
// Retry-After themselves. A call whose context was made by WithoutThrottleRetry never waits: its first
// 429/503 becomes a *ThrottledError carrying the wait it would have slept, for callers that must record
// something between two attempts (internal/submit) and wait themselves. Nothing else is retried: not 500 (Microsoft: do not retry), not transport
// errors (a POST that may have reached SharePoint must not create a second job), not 401 (the cached
// token is dropped so the next call fetches a new one). Redirects are never followed, so a body that
// carries the key is never re-sent to another host.
//
// # Safety
//
// Site URLs are checked before any request is sent (https, no user info, host in
// Options.AllowedSiteHosts). Container and queue URIs, both those SharePoint returns and those passed to
// CreateMigrationJobEncrypted, must be https URIs on an Azure Storage host, and keys must be 32 bytes.
// Keys, tokens and SAS signatures never appear in logs or errors: URIs are passed through RedactURL, and
// answer bodies are never quoted in errors.
package spo
