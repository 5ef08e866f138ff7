// Package provision creates migration jobs: it is shared by the HTTP API (POST /api/migrations) and by
// the self-service drop path of the blob intake (a package dropped straight into the staging container).
//
// # Creating a job
//
// Service.Create validates the request (Policy: https site URL on an allowed host, web id a GUID,
// callback URL https on an allowed host, signed or not), looks up the web id when it is absent (spo WebID), and then
//
//  1. asks SharePoint for a fresh pair of containers and their key (ProvisionMigrationContainers);
//  2. finds the site's report queue: the one kept in Key Vault (vault GetQueue) while its SAS outlives
//     Options.RenewBefore, else a new one (ProvisionMigrationQueue, then PutQueue), so SharePoint is asked
//     for a queue once per site and SAS lifetime, not once per job;
//  3. keeps the key, both container SAS URIs, the queue URI and a signed callback URL in the job's Key
//     Vault secret (PutJob);
//  4. creates the record (jobs CreateOrGet) in state AwaitingPackage. The record holds the secret's name
//     only, never the key or a SAS, and a signed callback URL without its query.
//
// # Callback URLs
//
// A callback URL signed with sig= (Power Automate's "When an HTTP request is received", Logic Apps
// triggers) is a credential, which the record refuses even redacted. Its whole form goes to the job's
// secret (vault.JobSecret.CallbackURL), where the monitor reads it (vault GetJobCallbackURL); the record,
// and so every API answer, has it without its query (https://host/path), enough to show where the
// callback goes. An unsigned URL is kept in the record only, as before. Reprovision carries the signed URL
// into the new secret version; a job whose secret is gone has only the record's unsigned form left, which
// the monitor would POST to (and the service refuse).
//
// # Crashes and retries
//
// The state machine starts at AwaitingPackage, which promises that the containers and the secret exist,
// so the record is written last. Every earlier step leaves at worst something SharePoint or Key Vault
// cleans up on its own:
//
//   - a crash after step 1 or 2 leaves orphan containers (or a queue SAS already kept for the site):
//     SharePoint deletes unused migration containers after 30 to 90 days and nothing refers to them;
//   - a crash after step 3 leaves a secret without a record. A retried Create with the same JobID (the
//     drop path derives it from the staging blob, DropJobID) finds that secret and reuses it (no second
//     pair of containers) as long as its containers outlive Options.RenewBefore; otherwise it provisions
//     anew and the secret gets a new version. Without a JobID (the API) every Create is a new job; an
//     orphan secret expires with its containers (its exp attribute) and is never read.
//
// A retried Create whose record exists returns that record and provisions nothing. Two Creates of the same
// JobID racing each other may both provision; the key and the container URIs always travel together in one
// secret version, so whichever version is the latest is self-consistent, and the loser's containers are
// orphans as above.
//
// # Reprovisioning
//
// Container SAS expire (about 3 days after provisioning). Service.Reprovision gives a job that has not
// been staged yet new containers and a new key; the intake calls it when the SAS would expire before the
// package is staged, and then stages the whole package again.
//
// # Upload URL
//
// Service.UploadURL mints a write-only SAS (create + write; no read, list or delete) for the job's blob in
// the staging container, valid for Options.UploadURLTTL: signed with the account key when the storage
// connection has one (connection strings, Azurite), else with a user delegation key
// (service.GetUserDelegationCredential, needs the Storage Blob Data Contributor role or better on the
// identity). Only the shared-key path runs against Azurite in the tests: Azurite has no Entra identity.
//
// Secrets never reach logs or errors: spo.Containers, spo.Queue and vault.JobSecret redact themselves,
// and this package logs ids, sites and times only.
package provision
