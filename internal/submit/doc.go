// Package submit is the domain of SubmitQueueTrigger: a migration-submit message names a staged job
// (Message, EncodeMessage), and Submitter.Submit creates its SharePoint migration job with
// CreateMigrationJobEncrypted — the key and the container SAS URIs from the job's Key Vault secret, the
// report queue when one is provisioned — and records the SPO job id: Staged → Submitted.
//
// # Exactly once
//
// A queue message may be delivered more than once (at-least-once delivery, a visibility timeout that
// ran out, a host restart, a job enqueued twice), concurrently or not. SharePoint has no idempotency
// key, and our client cannot look jobs up by container (GetMigrationStatus lists only the ids and states
// of queued jobs), so a second CreateMigrationJobEncrypted would import the package a second time.
// Every attempt therefore goes through the job record's ETag (jobs.Store.Update), in three writes:
//
//  1. Claim. The attempt (an invocation-unique id) takes the submit lease as "claim/<attempt>" for
//     Options.Lease, if the job is Staged, has no SPO job id and nobody else holds an unexpired lease.
//     Exactly one concurrent claimant wins; the others return ErrInProgress (the queue redelivers their
//     message later, when the winner has recorded the result and they acknowledge it). Only the lease
//     holder reads the job secret from Key Vault.
//  2. Call marker. Right before each single SharePoint request the holder turns its lease into
//     "call/<attempt>" (checking that it still holds its claim) with a fresh expiry. From this write on,
//     a SharePoint job may exist for the package.
//  3. Result. After SharePoint answered, one Update records the SPO job id and Submitted and releases
//     the lease, provided the lease still names this attempt (which proves nobody acted meanwhile: every
//     takeover rewrites or clears it). A failure that certainly created no job (an HTTP error answer,
//     a request refused before it was sent or never written to the connection — seen through
//     net/http/httptrace) releases the lease and records the error, so a later delivery may try again.
//
// Throttling. The client does not wait out 429/503 inside the call (spo.WithoutThrottleRetry): a
// throttled answer means SharePoint processed nothing, so the holder moves its lease back from
// "call/<attempt>" to "claim/<attempt>" with a fresh expiry (an ETag-guarded write that also checks
// the lease still names this call), waits Retry-After, and starts again at write 2. The waits of one
// attempt stay within Options.ThrottleBudget, 10 retries, the lease (its length minus the call margin)
// and the context's deadline; a wait beyond them releases the lease, records the *spo.ThrottledError
// and returns it, so the queue redelivers the message. Because each re-claim renews the lease, no other
// delivery takes the job over during a wait; should one take over anyway (the claim expired), the
// waiting attempt finds out at its next write (the claim is no longer its own) and stops.
//
// The SharePoint call runs with a deadline before the lease expires, so a live attempt never loses its
// lease to a takeover.
//
// # The one residual window, and the choice made for it
//
// A crash, or an answer that never arrives (connection reset after the request was written, timeout, an
// unreadable 2xx), between write 2 and write 3 leaves the outcome unknown: SharePoint may have created
// a job whose id we never learnt. Resubmitting could import the package twice; the job cannot be found
// by its containers. spomig never resubmits in that case: the attempt itself (when it is still alive)
// or the first delivery that finds the expired "call/" lease marks the job Failed with a reason that
// says so and asks for a manual check (ReasonOutcomeUnknown). The window is one HTTP exchange plus one
// table write; everything that can fail before it (message parsing, the record, Key Vault) happens
// before write 2, and throttle waits happen outside it, under a "claim/" lease. A claim left by a
// crash before write 2 or during a throttle wait ("claim/") is taken over once it expires: nothing was
// sent, or SharePoint refused all that was, so submitting again is safe. (A crash between a throttled
// answer and the re-claim write leaves "call/": outcome unknown, as for any crash in the window.)
//
// # Failures and poison
//
// Each failed attempt records its error in the job's History (a note, see LastError). A failure that
// retrying cannot fix (the job secret is gone, SharePoint answers 400 or 404, the request is refused
// before sending) marks the job Failed at once and acknowledges the message. Other failures return an
// error so that the host redelivers the message; on the last delivery (dequeueCount ≥
// Options.MaxDequeueCount) Submit marks the job Failed ("submission failed N times: <error>") before
// returning the error, so the job does not wait for the monitor. A message that reaches the poison
// queue anyway (host restarts count as deliveries) is resolved by the monitor with ResolvePoisoned.
//
// A message for a job that is already submitted or ended, or that does not exist, is acknowledged and
// logged; a message for a job that is not staged yet returns ErrNotStaged (redelivered later).
//
// # Secrets
//
// The key and the SAS URIs are held only for the SharePoint calls (and the throttle waits between
// them) and the key is zeroed after them; logs and errors
// carry job ids, SPO job ids and error texts, which never contain them (see internal/spo and
// internal/vault), and the record refuses signatures.
package submit
