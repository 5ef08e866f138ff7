// Package funchost is a local Azure Functions host for custom-handler apps (cmd/funchost is its command). It
// runs the real handler executable and drives it from the real host.json and <Function>/function.json files, the
// way the Functions host does in everything the app relies on. Users with Core Tools run `func start` instead;
// Core Tools cannot be installed on the development machines (reference §11).
//
// # Use
//
//	h, err := funchost.New(funchost.Options{AppDir: ".", HTTPAddr: "127.0.0.1:0", Logger: logger})
//	err = h.Start(ctx)       // handler answered GET /, listener up, triggers running
//	resp, err := http.Get(h.URL() + "/api/orders/42?code=" + h.FunctionKey())
//	h.Stop()                 // triggers stopped, running invocations drained, handler ended
//
// # What it does (references are to shared/reference/functions-custom-handler.md)
//
//   - Settings (§6): local.settings.json Values, overridden by the process environment, overridden by
//     Options.Settings; %AppSetting% in queueName/path/schedule; AzureFunctionsJobHost__a__b overrides host.json;
//     AzureWebJobs.<Name>.Disabled. Connections: AzureWebJobsStorage (or any setting) as a connection string,
//     UseDevelopmentStorage=true (expanded to the Azurite endpoints, DevelopmentStorageProxyUri honoured), or
//     identity-based <conn>__blobServiceUri / __queueServiceUri / __serviceUri / __accountName with azidentity.
//   - Handler process (§3.1): defaultExecutablePath (made absolute only if it exists under workingDirectory),
//     arguments with %VAR% expansion, FUNCTIONS_CUSTOMHANDLER_PORT / FUNCTIONS_HTTPWORKER_PORT (a free port),
//     FUNCTIONS_CUSTOMHANDLER_WORKER_ID / FUNCTIONS_HTTPWORKER_ID, FUNCTIONS_APP_ROOT_PATH and all settings in its
//     environment; readiness by GET / every 25 ms until any HTTP answer (30 s); stdout logged as "[handler] ...",
//     stderr as errors "[handler:err] ..."; restarted (with back-off) whenever it exits; own process group, ended by
//     PID (SIGTERM, SIGKILL after 5 s).
//   - Invocation (§3.2–§4.3): POST /<Function>, chunked, Content-Type application/json; charset=utf-8,
//     X-Azure-Functions-InvocationId, X-Azure-Functions-HostVersion, User-Agent Azure-Functions-Host/<v>,
//     traceparent; the value encodings of §3.3 with Newtonsoft's escaping; answer rules of §4.2 (non-2xx, a
//     non-JSON media type or invalid JSON fail the invocation); Logs printed; outputs converted as §4.3 (base64
//     strings decoded unless dataType binary, arrays → one message each, objects → indented JSON messages or
//     compact JSON blobs, messageEncoding applied, {name}/{rand-guid}/{DateTime}/{sys.*} in blob paths). The HTTP
//     client timeout is functionTimeout + 1 minute; an invocation fails when functionTimeout elapses.
//     The host log reads "Executing 'Functions.X' (Reason='...', Id=...)", the Logs lines, then
//     "Executed 'Functions.X' (Succeeded|Failed, Id=..., Duration=NNms)".
//   - HTTP (§1.3, §2.1, §4.4, §5): /<routePrefix>/<route> with ASP.NET route templates, methods (405 when the
//     route matches but not the method), authLevel with keys (below), forwarding of http-only functions when
//     enableForwardingHttpRequest (or the legacy httpWorker section, or enableProxyingHttpRequest) is set — the
//     original path, the query rebuilt as the host does (repeated keys joined with ",", re-encoded), all headers
//     but content headers, plus the host headers, the body only when Content-Length > 0, the answer returned
//     untouched, redirects not followed — otherwise the "req" envelope and the "res" conversion.
//     POST /admin/functions/{name} {"input": "..."} (master key, 202) runs a non-HTTP function once: the input is
//     the queue message, or container/blob for a blob trigger; a timer just fires. GET /admin/host/status.
//   - Queue trigger (§1.4, §8): polling with the randomized exponential back-off (100 ms after a hit, up to
//     maxPollingInterval, default 2 s), batchSize in parallel with newBatchThreshold, a 10-minute visibility lease
//     renewed at half time, delete on success, visibilityTimeout on failure, <queue>-poison after maxDequeueCount
//     attempts (the re-encoded body copied; created if missing), a message that is not base64 (messageEncoding
//     base64) moved to the poison queue verbatim at once; queues are created at start. Writing to a queue wakes
//     the host's own listeners of that queue.
//   - Blob trigger (§1.5, §7): each function scans its container every PollInterval (and right after the host
//     writes to it). A new blob version (name + ETag) gets a receipt
//     azure-webjobs-hosts/blobreceipts/<hostId>/Host.Functions.<Name>/"<ETag>"/<container>/<blob> (the real host's
//     layout: the ETag before the blob name, which may contain '/') and a message {Type, FunctionId, BlobType,
//     ContainerName, BlobName, ETag} on azure-webjobs-blobtrigger-<hostId>; that queue invokes the function
//     (maxDegreeOfParallelism at a time, across blob functions) and after poisonBlobThreshold failed attempts
//     moves the message to webjobs-blobtrigger-poison (messageEncoding applied). Completed receipts are never
//     processed again, so a restarted host does not re-run finished blobs, while a new ETag is a new receipt.
//     Content: base64 for dataType binary (streamed, never held in memory), a double-encoded string otherwise
//     (streamed; UTF-8 BOM dropped, invalid bytes as U+FFFD). Blobs larger than Options.MaxBlobSize (100 MiB)
//     fail the invocation; the real host holds the whole blob in memory and sends it.
//   - Timer trigger (§2.4, §9): 6-field NCRONTAB (or 5-field, or a TimeSpan) parsed by robfig/cron/v3; one
//     invocation at a time; with useMonitor (forced off for sub-minute schedules) the ScheduleStatus
//     {Last, Next, LastUpdated} lives in azure-webjobs-hosts/timers/<hostId>/Host.Functions.<Name>/status, a
//     missed occurrence found at start runs at once with IsPastDue true, runOnStartup runs at start. Like the
//     host, an occurrence that falls during a long invocation runs right after it (at most one catch-up).
//
// The host id is AzureFunctionsWebHost__hostid, else the machine name plus a hash of the app path.
//
// # Keys
//
// authLevel function and admin are enforced (as in Azure; Core Tools does not enforce keys locally). Keys come
// from Options.KeysFile (default <app>/.funchost/keys.json), created on first run with random keys, mode 0600:
//
//	{
//	  "masterKey": "…",                                       // admin level: admin functions, /admin/*, everything
//	  "hostKeys": { "default": "…" },                         // function level, every function
//	  "functionKeys": { "ProvisionHttp": { "default": "…" } } // optional, function level, one function
//	}
//
// The app settings FUNCHOST_MASTER_KEY and FUNCHOST_FUNCTION_KEY replace the master key and the default host
// key for a run (they are not written to the file). A key is accepted in the x-functions-key header or the code
// query parameter. A missing or wrong key answers 401 and never reaches the handler. cmd/funchost prints the keys
// at start (they are local development keys); FunctionKey and MasterKey return them.
//
// # Not reproduced
//
//   - Bindings other than httpTrigger/http, queueTrigger/queue (out), blobTrigger/blob (out) and timerTrigger:
//     blob input bindings, tables, Service Bus, Event Hubs, Cosmos DB, SignalR... are ignored with a warning;
//     no extension bundle is loaded.
//   - Blob detection through storage analytics logs and the blobscaninfo/LatestScan bookkeeping: the container is
//     listed every PollInterval. source EventGrid is polled too (Event Grid cannot reach a local host).
//   - Singleton/lease coordination between several host instances (timer singleton, blob listener leases beyond
//     the receipt lease), scale-out, drain mode, dynamic concurrency, HTTP throttles (maxOutstandingRequests,
//     maxConcurrentRequests, 429), hsts and customHeaders, CORSCredentials.
//   - function.json retry policies (Metadata.RetryContext is never sent) and the restart of the whole host after
//     a functionTimeout (the invocation fails; the handler keeps running).
//   - Handler restart limits (the real host eventually gives up; funchost retries forever with back-off) and the
//     periodic GET / latency pings after start.
//   - enableProxyingHttpRequest is served by the forwarding path (no YARP streaming or retries; the
//     x-ms-invocation-id header is added).
//   - Newtonsoft quirks beyond string escaping: ISO-date-looking strings turned into DateTime (in Outputs and in
//     spread JSON properties), .NET double formatting. Header names reach the handler canonicalized by Go
//     (X-Custom, not x-custom) and the "req" envelope lists headers sorted, not in wire order.
//   - Metadata.Properties of a blob is derived from the code, not captured (reference §13): a common subset of
//     BlobProperties, enums as numbers, the ETag and AccessTier structs as {}. Data.req.Identities is an
//     approximation (anonymous identity, or WebJobsAuthLevel with the authlevel and keyid claims). Metadata.Uri
//     leaves out a SAS query.
//   - The key management API (/admin/functions/{name}/keys, system keys, rotation); other admin routes; the
//     "disabled but callable with the master key" rule (a disabled HTTP function answers 404).
//   - host.json logging, aggregator, healthMonitor, singleton, watchDirectories (no restart on file changes);
//     Key Vault references in settings; WEBSITE_TIME_ZONE/TZ only as IANA names; {DateTime:format} expressions.
//   - NCRONTAB edge cases where robfig/cron differs (both day-of-month and day-of-week restricted).
//   - Text blobs are spread into Metadata (JSON-object properties) only up to 4 MiB; HTTP bodies are read up to
//     100 MiB; a handler answer is read up to 256 MiB.
package funchost
