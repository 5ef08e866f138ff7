// Package vault is spomig's key custody: it keeps each migration job's AES-256 key, container SAS URIs
// and signed callback URL (if any), and each site's migration-queue SAS URI, as Azure Key Vault secrets through the real azsecrets client.
//
// SPO forgets the encryption key once ProvisionMigrationContainers has returned it, yet encrypts the import
// logs and the queue events of the job with it, so the key must be kept until every output has been read
// (spo-migration-api reference §2, "Key lifecycle"); the SAS URIs are bearer credentials of the
// SPO-provided containers and queue. Both therefore live in Key Vault, never in Table storage or logs.
//
// # Secrets
//
//	spomig-job-<id>           JobSecret as JSON (key base64), contentType JobContentType,
//	                          tags {jobId, site}, attribute exp = JobSecret.ExpiresAt (container lifetime)
//	spomig-queue-<site hash>  {"site":…,"queueUri":…}, contentType QueueContentType, tags {site},
//	                          exp = the queue SAS expiry; <site hash> = SiteHash(site)
//
// JobSecretName maps any job id to a name Key Vault accepts (^[0-9a-zA-Z-]{1,127}$). Key Vault names are
// case-insensitive; the stored value records the job id and site it belongs to and GetJob / GetQueue refuse
// a secret that belongs to another id (a sanitisation or hash collision) rather than hand out a wrong key.
//
// # Permissions (Azure RBAC on the vault, or the equivalent access policy)
//
//   - Azure RBAC vault: Key Vault Secrets Officer (data actions Microsoft.KeyVault/vaults/secrets/*) covers
//     every method: PutJob, PutQueue (set), GetJob, GetQueue (get), DeleteJob (delete), RecoverJob
//     (recover), DeletedJob (list deleted) and PurgeJob (purge). Key Vault Secrets User (get only) is
//     enough for a reader such as the monitor.
//   - Access-policy vault: secret permissions get, set, list, delete, recover and purge. Purge must be
//     granted explicitly: the "all" permission and the portal's Secret Management template do not include it.
//   - Either way, with purge protection enabled on the vault nothing can be purged before the retention
//     period ends; PurgeJob then fails (the soft-deleted secret stays recoverable until it expires).
//
// # Errors
//
// Errors are *Error, *ForbiddenError or *ThrottledError, and match errors.Is(err, ErrNotFound),
// ErrConflict, ErrDisabled, ErrUnauthorized as appropriate. Their text names the operation, the secret
// name, the HTTP status, the service error code and the service message: never a key, a SAS or a token.
// The azcore.ResponseError underneath (errors.As) prints the request URL without its query and the
// service's error body, which holds no secret values either; azsecrets itself only puts values in
// request bodies, which azcore never logs because Options.ClientOptions.Logging.IncludeBody is forced off.
//
// Throttling (429) and unavailability (503, and 408/500/502/504) are retried by azcore's retry policy,
// honouring Retry-After (Options.Retry); when the retries are exhausted the error is a *ThrottledError.
//
// # Logging
//
// Custody logs one line per operation to Options.Logger: operation, secret name, version, expiry,
// duration and, on failure, the error text above. JobSecret implements slog.LogValuer, fmt.Stringer,
// fmt.GoStringer and json.Marshaler with its key and SAS signatures redacted, so even a careless log
// line or HTTP response built from it cannot leak them.
package vault
