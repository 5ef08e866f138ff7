// Package kvemu is a small Azure Key Vault emulator for the secrets data plane. It speaks the Key Vault
// REST protocol closely enough that the real azsecrets.Client (v1.5.1, api-version 2026-04-01) talks to it
// unmodified, over HTTPS with a leaf certificate of the development CA (internal/dev/devtls).
//
// No Key Vault emulator is installable from the registries this project can reach (see
// shared/reference/azure-sdk-local.md §2), hence this one. Product code does not know it talks to the
// emulator: it is given the emulator's URL as the vault URL, trusts the dev CA (SSL_CERT_FILE=<CA bundle>
// or an *http.Client from the CA), and sets azsecrets.ClientOptions.DisableChallengeResourceVerification,
// a real azsecrets option, because 127.0.0.1 is not a *.vault.azure.net name.
//
// # Protocol
//
// Every request needs the api-version query parameter (any value is accepted), else 400 BadParameter.
// A request without an Authorization header gets the Key Vault challenge:
//
//	401 WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"
//
// after which a bearer token is required. Any non-empty token is accepted; with Options.Strict it must be a
// JWT whose aud is the Key Vault resource and that has not expired (the signature is never checked). When
// the token is a JWT its appid (or azp), oid and iss claims form the caller identity
// ("appid=…;oid=…;iss=…"), the string the real service prints in its 403 messages; Options.AccessPolicies
// restricts which identities may do what.
//
// Routes (JSON shapes of the real service; times are Unix seconds):
//
//	PUT    /secrets/{name}                    set: 200 secret bundle (a new version)
//	GET    /secrets/{name}[/]                 latest version: 200 secret bundle
//	GET    /secrets/{name}/{version}          one version
//	PATCH  /secrets/{name}[/{version}]        update contentType, tags, enabled/nbf/exp: 200 bundle without value
//	GET    /secrets                           list (latest of each; ids without version), maxresults + nextLink
//	GET    /secrets/{name}/versions           list versions, maxresults + nextLink
//	DELETE /secrets/{name}                    soft delete: 200 deleted bundle (no value)
//	GET    /deletedsecrets                    list deleted, maxresults + nextLink
//	GET    /deletedsecrets/{name}             200 deleted bundle (no value)
//	POST   /deletedsecrets/{name}/recover     200 secret bundle (no value)
//	DELETE /deletedsecrets/{name}             purge: 204, empty body
//
// Errors are {"error":{"code":…,"message":…,"innererror":{"code":…}}} with the real codes and message
// shapes: 404 SecretNotFound, 409 Conflict (name soft-deleted: ObjectIsDeletedButRecoverable; delete or
// purge still in progress: ObjectIsBeingDeleted), 400 BadParameter (invalid name, missing api-version,
// bad body), 403 Forbidden (access policy: ForbiddenByPolicy; disabled secret: SecretDisabled), 401
// Unauthorized, 429 Throttled and 503 ServiceUnavailable (fault injection).
//
// Expired secrets: the exp and nbf attributes of a secret are informational in the real service, which
// still returns the value of an expired secret (Azure/AzureKeyVault#19 shows a 200 for a get after exp,
// although the documentation says the value "should not" be retrieved). The emulator does the same: only a
// disabled secret is refused (403 "Operation get is not allowed on a disabled secret.").
//
// Deletion is immediate unless Options.DeleteLatency / PurgeLatency are set; the real service deletes and
// purges asynchronously, and for a few seconds answers a purge or a re-create with 409
// ObjectIsBeingDeleted. The latencies reproduce that window so callers' retry logic can be tested.
// Soft-deleted secrets are purged automatically after RecoverableDays (90).
//
// # State
//
// With Options.DataDir the state (secret values included, in clear: this is a development tool) is kept in
// DataDir/kvemu-state.json (mode 0600), rewritten atomically (temporary file, fsync, rename) after every
// change, so a restarted emulator on the same folder still has every secret. Without DataDir the state
// lives in memory only.
//
// # Test hooks
//
// Under /_emulator/ (no api-version, no token; never serving secret values):
//
//	GET    /_emulator/health   200 "ok"
//	GET    /_emulator/stats    request, challenge and fault counters, identities seen (JSON Stats)
//	POST   /_emulator/faults   {"status":429,"count":2,"retryAfterMs":1000} answers the next 2 requests with 429
//	DELETE /_emulator/faults   drops pending faults
//
// InjectFaults does the same in-process. A fault is served to a request that passed the api-version and
// token checks (the challenge round trip is never consumed by a fault).
//
// # Tokens
//
// Credential is a development azcore.TokenCredential issuing unsigned JWTs (Token builds one) with chosen
// oid/appid claims, for tests; the local stack's managed-identity endpoint (internal/dev/identity) issues
// the same kind of token to the unmodified product. Neither is accepted by any real service.
//
// The emulator logs one line per request (method, path, status, identity) to Options.Logger; it never
// logs secret values, request bodies, tokens or query strings.
package kvemu
