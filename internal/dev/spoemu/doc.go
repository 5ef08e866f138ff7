// Package spoemu emulates the SharePoint Online side of the Migration API for the local stack and for
// tests: an HTTPS server (a leaf of the dev CA) answering https://<host>/sites/<name>/_api/… (and
// /teams/<name>, and the root site), backed by an Azure Storage account, normally a separate Azurite
// over HTTPS, that plays "SharePoint's storage account".
//
// # Use
//
//	e, err := spoemu.Start(ctx, spoemu.Options{CA: ca, StorageConnectionString: azuriteHTTPS.ConnectionString(), DataDir: dir})
//	defer e.Close()
//	site := e.SiteURL("migration")          // https://127.0.0.1:<port>/sites/migration
//	webID := e.WebID("migration")           // the gWebId its jobs need
//	e.SetFaults("migration", spoemu.Faults{Throttle: &spoemu.Throttle{Count: 2}})
//	info, err := e.WaitJob(ctx, jobID)      // Outcome, Counters
//
// Tests of other packages use StartTest, which also starts a dedicated HTTPS Azurite. cmd/spoemu runs
// the emulator as a process.
//
// # REST surface
//
// Every _api call needs "Authorization: Bearer <token>" (any non-empty token; a JWT must not be expired,
// and with Options.CheckAudience its aud must name the host). Without one the answer is SharePoint's
// 401: WWW-Authenticate Bearer realm="<tenant>",client_id="00000003-0000-0ff1-ce00-000000000000",
// trusted_issuers=…,authorization_uri="https://login.windows.net/common/oauth2/authorize" and an
// access-denied error body.
//
//	GET  _api/web, _api/web/Id, _api/site, _api/site/Id ($select honoured)   SP.Web / SP.Site (stable ids per tenant and site)
//	POST _api/contextinfo                                   a form digest (not needed with bearer tokens)
//	POST _api/site/ProvisionMigrationContainers             two new containers, sp=rw sr=c spr=https SAS (~3 days), a new AES-256 key
//	POST _api/site/ProvisionMigrationQueue                  the site's one reusable queue, SAS sp=rap
//	POST _api/site/CreateMigrationJobEncrypted              {gWebId, azureContainerSourceUri, azureContainerManifestUri, azureQueueReportUri?, options:{AES256CBCKey}} → job GUID
//	POST _api/site/CreateMigrationJob                       the same without options (refused for provisioned containers)
//	POST _api/site/GetMigrationJobStatus                    {id} → 2 Queued, 4 Processing, 0 None
//	POST _api/site/DeleteMigrationJob                       {id} → true while Queued (emits JobCancelled, JobDeleted), else false
//	POST _api/site/GetMigrationStatus                       the site's queued/processing jobs
//	GET  _api/site/GetMigrationJobProgress(jobId=…,nextToken=…)   {Logs, NextToken}
//
// Arguments may come in the path (jobId=guid'…', jobId='…', positional, @alias from the query string,
// quoted or bare tokens) or in a JSON body; unknown parameters are refused as SharePoint does. Answers
// follow Accept: odata=verbose ({"d":{"<Method>":…}} with __metadata), odata=nometadata (properties at
// the top, primitives as {"value":…}) or minimal metadata (with @odata.context; also for plain
// application/json). Errors are {"error":{code,message}} (verbose) or {"odata.error":{…}} with codes in
// SharePoint's "<HRESULT>, <.NET type>" form. The admin API under /_emulator/ (see serveAdmin) sets
// faults and shows jobs.
//
// # Jobs
//
// CreateMigrationJobEncrypted checks what the service is documented to check: the two containers
// differ; both SAS parse, grant Read (the manifest container also Write; customer containers also
// List), have not expired and have started; the containers exist and accept the SAS (a probe read);
// the key is 32 bytes and, for provisioned containers, equals the key provisioned with them (only its
// SHA-256 is kept); gWebId is the site's web; a customer queue SAS grants exactly Add, Read and Update.
// A job is then Queued (JobQueued) and processed by a goroutine, at most Options.MaxJobs at once:
// optional JobPostponed (fault), JobLogFileCreate (FileName Import-<job>-1.log), JobStart, then the
// package is read as the service does — every blob from its latest snapshot, the IV from its "IV"
// metadata (looked up case-insensitively), decrypted with the job key — SystemData.xml names the
// manifests, which are streamed twice with migpkg.ScanManifest (count, then import). Every FileValue
// (current and older versions) must name a snapshotted blob of the data container that decrypts with
// valid padding to FileSize bytes; otherwise that item gets a JobError and the job goes on. JobProgress
// follows every Options.ProgressEvery objects, and JobEnd ends the job with its counters (all values
// strings, Time MM/dd/yyyy HH:mm:ss.fff UTC). A package that cannot be read (a required file missing,
// malformed XML, manifests that do not decrypt — a wrong key) ends with JobFatalError instead.
//
// Events go to the progress log (GetMigrationJobProgress, plain event JSON as the documentation shows)
// and, when a report queue was given, to the queue as base64 text of the encrypted envelope
// (crypt.SealEvent; base64 of the plain event for an unencrypted job). At the end the emulator writes
// Import-<job>-1.log (and .err, .wrn when there were errors or warnings) into the manifest container,
// encrypted with the job key, IV in the metadata "IV"; then it forgets the key. Decrypted files land in
// <DataDir>/sites/<site>/<library>/<folder>/<file> (older versions in <DataDir>/sites/<site>/_versions/
// <path>/<version>; the root site is "_root"), and a summary in <DataDir>/jobs/<job>.json.
//
// # DEVIATIONS from the real service
//
//   - Only JSON: a request that asks for XML/Atom (or sends no Accept) gets minimal-metadata JSON.
//     CSOM (_vti_bin/client.svc/ProcessQuery) is not served.
//   - Tokens are not validated (no signature, issuer or role check): any non-empty bearer token is
//     accepted, an expired JWT is refused, and aud is checked only with Options.CheckAudience. There
//     are no permissions: every caller is a site collection administrator.
//   - Every /sites/<name> and /teams/<name> exists (unless Options.Sites is set) and has one web, its
//     root web; subsites are not served. Ids are derived from the tenant and site path.
//   - The key check is the emulator's reading of "the key must be the provisioned key": SharePoint says
//     it forgets the key, yet rejects jobs on its containers without the right one. Here only the
//     SHA-256 of each provisioned key is kept. The real rejection codes and messages for SAS, key and
//     web id problems are not documented; the emulator answers HTTP 400 with .NET ArgumentException
//     shapes ("-2147024809, System.ArgumentException" / "-1, System.ArgumentException"), and
//     "-2146233079, System.InvalidOperationException" for CreateMigrationJob on provisioned containers.
//     The real service documents a null GUID answer when it cannot create a job.
//   - The provisioned queue SAS is sp=rap (Read, Add, Process): clients can dequeue and delete, the
//     emulator writes events through the same SAS, and Update is absent as reported for the real
//     queue. The real permissions are undocumented. Customer queues must be exactly sp=rau, and are
//     refused at creation ("Cannot connect the Queue") rather than failing later.
//   - The emulator reads its own (provisioned) containers with the storage account key, as the service
//     uses its own access: the container SAS it hands out has no List. Customer containers are read
//     through their SAS.
//   - Snapshots: a content blob without a snapshot is skipped with a JobError (the documented rule; the
//     docs once said enforcement was "coming in a future build"). Package XMLs are read from their latest
//     snapshot, else from the base blob with a log warning, because a working client snapshots only
//     content; Options.RequireManifestSnapshots makes that fatal ("may fail the whole job" in old docs).
//   - Package checks are the documented and reported ones only: required files (SystemData.xml, the
//     manifests it lists, ExportSettings.xml with a SiteUrl and a SourceType, UserGroup.xml with a
//     SystemId on every User), well-formed optional files (a missing optional file is a JobWarning),
//     ParentWebId equal to the job's web, FileValue blobs, decryption, FileSize. There is no XSD
//     validation, no list/item/permission semantics, no check that the library exists, and an SPFile
//     without an SPListItem is imported rather than silently skipped.
//   - Error codes inside JobError/JobFatalError are .NET HRESULTs chosen by the emulator
//     (FileNotFoundException -2147024894, CryptographicException -2146233296 "Padding is invalid and
//     cannot be removed.", XmlException -2146232000, ArgumentException -2147024809, default fatal
//     -2147213196); SharePoint's actual codes for these failures are not documented.
//   - JobFatalError is the last event unless Options.JobEndAfterFatal. DeleteMigrationJob emits
//     JobCancelled (CancelledByUser "true") and JobDeleted; the real pair is not documented.
//   - JobPostponed carries Reason (the what's-new reason codes) only when injected; JobProgress is
//     emitted per object count, not per time; duration and SQL counters are rough; FilesCreated counts
//     every version imported, FilesCreatedIrrespectiveOfVersions each file once.
//   - The log format is the emulator's own: a header, then tab-separated Time, Level, ErrorCode,
//     ObjectUrl, Message lines (CRLF). SharePoint's format and the .err/.wrn extensions are not
//     documented. Logs are not copied to _catalogs/Maintenance Logs.
//   - Status and events live in memory: a restart forgets provisioned containers, queues' provenance
//     and jobs. Retention (Options.JobRetention, 5 days) counts from the job's end. Containers are never
//     deleted (SharePoint removes them after 30–90 days). NextToken is the count of events read.
//   - Throttling happens only when injected (Faults.Throttle); there is no rate limiting or User-Agent
//     decoration rule. The HTTP-method error for GET on an action is a 400.
package spoemu
