package api

import (
	"net/http"
	"strings"

	"github.com/spomig/spomig/internal/jobs"
)

// openAPI serves GET /api/openapi.json: the OpenAPI 2.0 (Swagger) document of the API, with host and
// scheme as the caller reached it, ready to import as a Power Automate custom connector.
func (s *server) openAPI(w http.ResponseWriter, r *http.Request) {
	base := s.baseURL(r) // scheme://host/api
	scheme, rest, _ := strings.Cut(base, "://")
	host := strings.TrimSuffix(rest, "/api")
	writeJSON(w, http.StatusOK, OpenAPIDocument(host, scheme, s.opts.Version))
}

type obj = map[string]any

func ref(name string) obj { return obj{"$ref": "#/definitions/" + name} }

func str(desc string) obj { return obj{"type": "string", "description": desc} }

func dateTime(desc string) obj {
	return obj{"type": "string", "format": "date-time", "description": desc}
}

func integer(desc string) obj { return obj{"type": "integer", "format": "int64", "description": desc} }

func withSummary(o obj, summary string) obj { o["x-ms-summary"] = summary; return o }

func problemResponse(desc string) obj { return obj{"description": desc, "schema": ref("Problem")} }

func throttledResponse(desc string) obj {
	return obj{"description": desc, "schema": ref("Problem"),
		"headers": obj{"Retry-After": obj{"type": "integer", "description": "Seconds to wait before retrying."}}}
}

var idParam = obj{
	"name": "id", "in": "path", "required": true, "type": "string",
	"description":  "The migration job id (a GUID) returned when the job was created.",
	"x-ms-summary": "Job id", "x-ms-visibility": "important",
}

// commonErrors are the answers any operation on one job may give.
func commonErrors(extra obj) obj {
	out := obj{
		"404": problemResponse("No job with this id (or no such route)."),
		"429": throttledResponse("SharePoint or Key Vault is throttling spomig beyond its retry budget; retry after Retry-After."),
		"502": problemResponse("An upstream service (SharePoint, Key Vault, Storage) failed."),
		"503": throttledResponse("Temporarily unavailable (upstream 503, timeout, busy record); retry after Retry-After."),
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// OpenAPIDocument returns the OpenAPI 2.0 document of the API for host (host[:port]) and scheme.
func OpenAPIDocument(host, scheme, version string) map[string]any {
	var states []any
	for _, st := range jobs.States() {
		states = append(states, string(st))
	}
	progress := func(what string) obj {
		return obj{"type": "object", "description": what + " done of total, as SharePoint reports them.",
			"required": []any{"done", "total"},
			"properties": obj{
				"done":    withSummary(integer(what+" done."), what+" done"),
				"total":   withSummary(integer(what+" in total (0 while unknown)."), what+" total"),
				"percent": withSummary(obj{"type": "number", "format": "double", "description": "done/total in percent (one decimal); absent while the total is unknown."}, what+" percent"),
			}}
	}
	jobProps := obj{
		"id":            withSummary(str("The job id (GUID)."), "Job id"),
		"label":         withSummary(str("The caller's label."), "Label"),
		"siteUrl":       withSummary(str("The destination site collection."), "Site URL"),
		"webId":         withSummary(str("The destination web (GUID)."), "Web id"),
		"state":         withSummary(obj{"type": "string", "enum": states, "description": "The job's state. AwaitingPackage → Encrypting → Staged → Submitted → Queued ⇄ Postponed → Running → Completed | CompletedWithErrors | Failed | Cancelled."}, "State"),
		"ended":         withSummary(obj{"type": "boolean", "description": "True once the job is in a final state (Completed, CompletedWithErrors, Failed, Cancelled)."}, "Ended"),
		"source":        withSummary(obj{"type": "string", "enum": []any{"api", "drop"}, "description": "How the package arrives: api (uploaded by the caller) or drop (dropped into the staging container)."}, "Source"),
		"spoJobId":      withSummary(str("SharePoint's migration job id, once submitted."), "SharePoint job id"),
		"callbackUrl":   withSummary(str("URL notified when the job ends; a signed URL is shown without its query."), "Callback URL"),
		"createdAt":     withSummary(dateTime("When the job was created (UTC)."), "Created at"),
		"updatedAt":     withSummary(dateTime("When the record last changed (UTC)."), "Updated at"),
		"endedAt":       withSummary(dateTime("When the job ended (UTC)."), "Ended at"),
		"history":       withSummary(obj{"type": "array", "items": ref("HistoryEntry"), "description": "State changes, oldest first (the first and the most recent 49)."}, "History"),
		"counters":      ref("Counters"),
		"firstErrors":   withSummary(obj{"type": "array", "items": ref("ItemFailure"), "description": "The first item errors and warnings SharePoint reported (at most 16); the counters have the totals."}, "First errors"),
		"failureReason": withSummary(str("Why the job failed (state Failed)."), "Failure reason"),
		"postponed":     ref("Postponed"),
		"links":         ref("Links"),
		"upload":        ref("Upload"),
		"logFiles":      withSummary(obj{"type": "array", "items": ref("LogFile"), "description": "The decrypted import logs (final answer of the result operation only)."}, "Log files"),
	}
	definitions := obj{
		"CreateRequest": obj{
			"type": "object", "required": []any{"siteUrl"},
			"properties": obj{
				"siteUrl": obj{"type": "string", "description": "The destination site collection, e.g. https://contoso.sharepoint.com/sites/hr (https, an allowed host).",
					"x-ms-summary": "Site URL", "x-ms-visibility": "important"},
				"webId": obj{"type": "string", "description": "The destination web's id (GUID). Default: the site's root web.",
					"x-ms-summary": "Web id", "x-ms-visibility": "advanced"},
				"label": obj{"type": "string", "description": "A label for people (at most 1024 bytes).",
					"x-ms-summary": "Label", "x-ms-visibility": "important"},
				"callbackUrl": obj{"type": "string", "description": "An https URL on an allowed host, POSTed the final report when the job ends. A signed URL (sig=: Power Automate's When an HTTP request is received, Logic Apps) is kept in Key Vault; the job shows it without its query.",
					"x-ms-summary": "Callback URL", "x-ms-visibility": "advanced"},
			},
		},
		"Job": obj{
			"type": "object", "description": "A migration job. Never carries the encryption key or a container SAS.",
			"required":   []any{"id", "siteUrl", "state", "ended", "createdAt", "updatedAt", "history", "counters", "firstErrors", "links"},
			"properties": jobProps,
		},
		"HistoryEntry": obj{"type": "object", "required": []any{"state", "at"}, "properties": obj{
			"state":  withSummary(obj{"type": "string", "enum": states, "description": "The state entered."}, "State"),
			"at":     withSummary(dateTime("When (UTC)."), "At"),
			"reason": withSummary(str("Why."), "Reason"),
		}},
		"Counters": obj{"type": "object", "description": "Progress as SharePoint reports it.",
			"required": []any{"files", "bytes", "objects", "errors", "warnings"},
			"properties": obj{
				"files":    progress("Files"),
				"bytes":    progress("Bytes"),
				"objects":  progress("Objects"),
				"errors":   withSummary(integer("Item errors in total."), "Errors"),
				"warnings": withSummary(integer("Item warnings in total."), "Warnings"),
			}},
		"ItemFailure": obj{"type": "object", "required": []any{"kind"}, "properties": obj{
			"kind":       withSummary(obj{"type": "string", "enum": []any{"error", "warning"}, "description": "error or warning."}, "Kind"),
			"objectType": withSummary(str("SharePoint object type, e.g. File."), "Object type"),
			"url":        withSummary(str("The item's URL."), "Item URL"),
			"errorCode":  withSummary(str("SharePoint's error code."), "Error code"),
			"message":    withSummary(str("SharePoint's message."), "Message"),
		}},
		"Postponed": obj{"type": "object", "description": "SharePoint's postponement (state Postponed only).", "properties": obj{
			"nextPickupTime": withSummary(dateTime("When SharePoint plans to pick the job up again (UTC)."), "Next pickup"),
			"reason":         withSummary(str("SharePoint's reason."), "Postpone reason"),
		}},
		"Links": obj{"type": "object", "required": []any{"self", "result", "logs"}, "properties": obj{
			"self":   withSummary(str("This job."), "Job link"),
			"result": withSummary(str("The result operation (poll until 200)."), "Result link"),
			"logs":   withSummary(str("The job's import logs."), "Logs link"),
		}},
		"Upload": obj{"type": "object", "description": "Where to upload the package (201 answer only). The URL is a write-only credential valid until expiresAt: keep it secret.",
			"required": []any{"url", "method", "headers", "expiresAt"},
			"properties": obj{
				"url":       withSummary(str("Upload the zip with an HTTP PUT to this URL (a SAS URL allowing create and write only)."), "Upload URL"),
				"method":    withSummary(obj{"type": "string", "enum": []any{"PUT"}, "description": "The HTTP method."}, "Upload method"),
				"headers":   withSummary(obj{"type": "object", "additionalProperties": obj{"type": "string"}, "description": "Headers to send with the upload (x-ms-blob-type: BlockBlob)."}, "Upload headers"),
				"expiresAt": withSummary(dateTime("When the upload URL expires (UTC)."), "Upload URL expires"),
			}},
		"LogFile": obj{"type": "object", "required": []any{"name", "size", "url"}, "properties": obj{
			"name": withSummary(str("File name, e.g. Import-<spoJobId>-1.log, .err, .wrn, items.csv."), "File name"),
			"size": withSummary(integer("Size in bytes."), "Size"),
			"url":  withSummary(str("Download URL (GET, function key required)."), "File URL"),
		}},
		"Logs": obj{"type": "object", "required": []any{"files"}, "properties": obj{
			"files": withSummary(obj{"type": "array", "items": ref("LogFile")}, "Files"),
		}},
		"Page": obj{"type": "object", "required": []any{"value"}, "properties": obj{
			"value":             withSummary(obj{"type": "array", "items": ref("Job")}, "Jobs"),
			"continuationToken": withSummary(str("Pass as continuationToken for the next page; absent on the last page."), "Continuation token"),
			"nextLink":          withSummary(str("The next page's URL; absent on the last page."), "Next link"),
		}},
		"Problem": obj{"type": "object", "description": "An error (RFC 9457 application/problem+json).",
			"required": []any{"type", "title", "status"},
			"properties": obj{
				"type":     withSummary(str("urn:spomig:problem:<case>."), "Problem type"),
				"title":    withSummary(str("Short summary of the case."), "Title"),
				"status":   withSummary(obj{"type": "integer", "format": "int32", "description": "The HTTP status."}, "Status"),
				"detail":   withSummary(str("What went wrong with this request."), "Detail"),
				"instance": withSummary(str("The request path."), "Instance"),
			}},
	}

	paths := obj{
		"/migrations": obj{
			"post": obj{
				"operationId": OpCreate,
				"summary":     "Create a migration job",
				"description": "Provisions SharePoint's migration containers and the site's report queue, keeps the encryption key and the container SAS URIs in Key Vault, and answers where to upload the package: PUT the zip to upload.url with the header x-ms-blob-type: BlockBlob before upload.expiresAt. The job then encrypts, submits and follows itself; poll the result operation for its end.",
				"tags":        []any{"Migrations"},
				"consumes":    []any{"application/json"},
				"produces":    []any{"application/json", "application/problem+json"},
				"parameters": []any{obj{
					"name": "body", "in": "body", "required": true, "schema": ref("CreateRequest"),
					"x-ms-summary": "Job", "x-ms-visibility": "important",
				}, obj{
					"name": "Idempotency-Key", "in": "header", "required": false, "type": "string", "maxLength": maxIdempotencyKey,
					"description":  "Makes a retried POST safe: a request with the key of an earlier one answers the job that one created instead of creating another (e.g. the flow's run id).",
					"x-ms-summary": "Idempotency key", "x-ms-visibility": "advanced",
				}},
				"responses": obj{
					"201": obj{"description": "Created: the job (state AwaitingPackage) with its upload instructions (also for a replayed Idempotency-Key while the job awaits its package).", "schema": ref("Job"),
						"headers": obj{"Location": obj{"type": "string", "description": "The job's URL."}}},
					"200": obj{"description": "A replayed Idempotency-Key whose job already has its package: the job, without upload instructions.", "schema": ref("Job"),
						"headers": obj{"Location": obj{"type": "string", "description": "The job's URL."}}},
					"409": problemResponse("The Idempotency-Key was used for a migration of another site."),
					"400": problemResponse("Malformed JSON, an unknown field, an invalid URL, GUID or label, or an invalid Idempotency-Key."),
					"403": problemResponse("The site's host is not allowed, or SharePoint denied spomig access to the site."),
					"413": problemResponse("The body is larger than 64 KiB."),
					"415": problemResponse("The body is not application/json."),
					"429": throttledResponse("SharePoint or Key Vault is throttling spomig beyond its retry budget; retry after Retry-After."),
					"502": problemResponse("An upstream service (SharePoint, Key Vault, Storage) failed."),
					"503": throttledResponse("Temporarily unavailable; retry after Retry-After."),
				},
				"x-ms-visibility": "important",
			},
			"get": obj{
				"operationId": OpList,
				"summary":     "List migration jobs",
				"description": "Lists jobs, optionally in given states, a page at a time (follow nextLink, or pass continuationToken).",
				"tags":        []any{"Migrations"},
				"produces":    []any{"application/json", "application/problem+json"},
				"parameters": []any{
					obj{"name": "state", "in": "query", "required": false, "type": "string",
						"description":  "Comma-separated states to keep, e.g. Queued,Running. Default: every state.",
						"x-ms-summary": "States", "x-ms-visibility": "advanced"},
					obj{"name": "top", "in": "query", "required": false, "type": "integer", "format": "int32", "minimum": 1, "maximum": jobs.MaxListTop,
						"description": "Page size (default 50).", "x-ms-summary": "Page size", "x-ms-visibility": "advanced"},
					obj{"name": "continuationToken", "in": "query", "required": false, "type": "string",
						"description": "The continuationToken of the previous page.", "x-ms-summary": "Continuation token", "x-ms-visibility": "internal"},
				},
				"responses": obj{
					"200": obj{"description": "A page of jobs.", "schema": ref("Page")},
					"400": problemResponse("An unknown state or parameter, a bad page size or continuation token."),
					"502": problemResponse("Storage failed."),
					"503": throttledResponse("Temporarily unavailable; retry after Retry-After."),
				},
				"x-ms-pageable":   obj{"nextLinkName": "nextLink"},
				"x-ms-visibility": "advanced",
			},
		},
		"/migrations/{id}": obj{
			"parameters": []any{idParam},
			"get": obj{
				"operationId": OpGet,
				"summary":     "Get a migration job",
				"description": "The job's state, history, counters, first errors and links.",
				"tags":        []any{"Migrations"},
				"produces":    []any{"application/json", "application/problem+json"},
				"responses": commonErrors(obj{
					"200": obj{"description": "The job.", "schema": ref("Job")},
				}),
				"x-ms-visibility": "important",
			},
			"delete": obj{
				"operationId": OpCancel,
				"summary":     "Cancel a migration job",
				"description": "Cancels a job that has not started at SharePoint: a job still queued at SharePoint is deleted from its queue first. A job that has ended, or that SharePoint is processing, cannot be cancelled (409).",
				"tags":        []any{"Migrations"},
				"produces":    []any{"application/json", "application/problem+json"},
				"responses": commonErrors(obj{
					"200": obj{"description": "Cancelled: the job (state Cancelled).", "schema": ref("Job")},
					"409": obj{"description": "The job has ended, is being submitted or is running at SharePoint.", "schema": ref("Problem"),
						"headers": obj{"Retry-After": obj{"type": "integer", "description": "Seconds to wait (submission in flight only)."}}},
				}),
				"x-ms-visibility": "advanced",
			},
		},
		"/migrations/{id}/result": obj{
			"parameters": []any{idParam},
			"get": obj{
				"operationId": OpResult,
				"summary":     "Wait for the result of a migration job",
				"description": "Asynchronous: answers 202 with Location (this operation) and Retry-After while the job runs; Power Automate polls Location by itself until the 200, whose body is the final job with its log files, whatever the outcome (see state: Completed, CompletedWithErrors, Failed or Cancelled).",
				"tags":        []any{"Migrations"},
				"produces":    []any{"application/json", "application/problem+json"},
				"responses": commonErrors(obj{
					"200": obj{"description": "The job has ended: its final state, counters, errors and log files.", "schema": ref("Job")},
					"202": obj{"description": "The job is still running; poll Location after Retry-After seconds.", "schema": ref("Job"),
						"headers": obj{
							"Location":    obj{"type": "string", "description": "Where to poll (this operation)."},
							"Retry-After": obj{"type": "integer", "description": "Seconds to wait before polling."},
						}},
				}),
				"x-ms-visibility": "important",
			},
		},
		"/migrations/{id}/logs": obj{
			"parameters": []any{idParam},
			"get": obj{
				"operationId": OpListLogs,
				"summary":     "List the import logs of a migration job",
				"description": "The decrypted import logs (Import-<spoJobId>-1.log, .err, .wrn, items.csv), once the job has ended and spomig has fetched them (404 with the reason before).",
				"tags":        []any{"Migrations"},
				"produces":    []any{"application/json", "application/problem+json"},
				"responses": commonErrors(obj{
					"200": obj{"description": "The log files.", "schema": ref("Logs")},
				}),
				"x-ms-visibility": "advanced",
			},
		},
		"/migrations/{id}/logs/{name}": obj{
			"parameters": []any{idParam, obj{
				"name": "name", "in": "path", "required": true, "type": "string",
				"description": "A file name from the list of log files.", "x-ms-summary": "File name", "x-ms-visibility": "important",
			}},
			"get": obj{
				"operationId": OpGetLog,
				"summary":     "Download an import log of a migration job",
				"description": "Streams one decrypted log file: text/plain (.log, .err, .wrn) or text/csv (.csv).",
				"tags":        []any{"Migrations"},
				"produces":    []any{"text/plain", "text/csv", "application/problem+json"},
				"responses": commonErrors(obj{
					"200": obj{"description": "The file.", "schema": obj{"type": "file"}},
				}),
				"x-ms-visibility": "advanced",
			},
		},
		"/openapi.json": obj{
			"get": obj{
				"operationId": OpGetOpenAPI,
				"summary":     "Get the OpenAPI document",
				"description": "This OpenAPI 2.0 document, for importing the API as a Power Automate custom connector.",
				"tags":        []any{"Metadata"},
				"produces":    []any{"application/json"},
				"responses": obj{
					"200": obj{"description": "The document.", "schema": obj{"type": "object"}},
				},
				"x-ms-visibility": "internal",
			},
		},
	}
	if scheme != "http" {
		scheme = "https"
	}
	return obj{
		"swagger": "2.0",
		"info": obj{
			"title":       "spomig",
			"version":     version,
			"description": "Moves content into SharePoint Online through the SharePoint Migration API: create a job for a site, upload one zip package, and spomig encrypts, stages, submits and follows it, and keeps the decrypted import logs.",
		},
		"host":        host,
		"basePath":    "/api",
		"schemes":     []any{scheme},
		"consumes":    []any{"application/json"},
		"produces":    []any{"application/json"},
		"paths":       paths,
		"definitions": definitions,
		"securityDefinitions": obj{
			"functionKey": obj{"type": "apiKey", "in": "header", "name": "x-functions-key",
				"description": "The function key of ProvisionHttp (or a host key)."},
		},
		"security": []any{obj{"functionKey": []any{}}},
		"tags": []any{
			obj{"name": "Migrations", "description": "Migration jobs."},
			obj{"name": "Metadata", "description": "About the API."},
		},
	}
}
