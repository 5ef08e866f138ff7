// Package api is the migration HTTP API that ProvisionHttp serves under /api/ (the Functions host forwards
// the request untouched; see functions/provision_http.go).
//
// # Routes
//
//	POST   /api/migrations                  create a job → 201, Location, job JSON with upload {url, method, headers, expiresAt}
//	GET    /api/migrations                  list jobs: ?state=…&top=…&continuationToken=… → {value, continuationToken, nextLink}
//	GET    /api/migrations/{id}             the job → 200
//	DELETE /api/migrations/{id}             cancel → 200 with the job; 409 once ended (or running at SharePoint)
//	GET    /api/migrations/{id}/result      Power Automate async pattern: 202 + Location + Retry-After while the job runs, 200 once ended
//	GET    /api/migrations/{id}/logs        index of the decrypted import logs: {files: [{name, size, url}]}
//	GET    /api/migrations/{id}/logs/{name} one log file (text/plain, or text/csv)
//	GET    /api/openapi.json                OpenAPI 2.0 document (import as a Power Automate custom connector)
//
// Authentication is the Functions host's (authLevel function: header x-functions-key or ?code=); this
// package trusts every request that reaches it.
//
// # Power Automate
//
// The document declares the function key as an apiKey security definition in the header x-functions-key,
// so a custom connector asks for it once per connection. The result operation follows the asynchronous
// request-reply pattern Power Automate applies by itself to any action answering 202 with a Location
// header: it polls Location (an absolute URL of the same operation), waiting Retry-After between polls,
// until a 200 whose body becomes the action's output. Listing is pageable (x-ms-pageable, nextLink).
//
// # Errors
//
// Every error is application/problem+json (RFC 9457) {type, title, status, detail, instance}, type a
// "urn:spomig:problem:<slug>" that names the case; throttling (429/503) carries Retry-After.
//
// # Secrets
//
// Responses, logs and errors never carry the AES key or a container or queue SAS: the job JSON is built
// from the record, which holds references only. The one credential a response carries is the staging
// upload URL minted for the caller, in the 201 body of POST /api/migrations. Every request is logged once,
// at Info: method, route template, job id, caller IP, status, duration (and the error of a failed call,
// with sig= values redacted).
package api
