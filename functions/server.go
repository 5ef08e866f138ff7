package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gorilla/mux"
)

// Function names: the folder names of the app, which are also the paths the host POSTs to.
const (
	ProvisionHTTP      = "ProvisionHttp"
	EncryptBlobTrigger = "EncryptBlobTrigger"
	SubmitQueueTrigger = "SubmitQueueTrigger"
	MonitorTimer       = "MonitorTimer"
)

// Services gives the adapters the domain services, built lazily on first use: the handler must answer
// the host's GET / before any of them (and any network call) exists. A failed build is retried on the next
// invocation.
type Services interface {
	API(ctx context.Context) (http.Handler, error)
	Intake(ctx context.Context) (Intake, error)
	Submitter(ctx context.Context) (Submitter, error)
	Monitor(ctx context.Context) (Monitor, error)
}

// Intake processes a package blob that appeared in the staging container (EncryptBlobTrigger).
// It returns nil when the blob was dealt with, including when the package was invalid (the job records
// why); an error means "try again" (storage or Key Vault unavailable, …).
type Intake interface {
	ProcessBlob(ctx context.Context, container, name, etag string) error
}

// Submitter submits a staged job named by a migration-submit message (SubmitQueueTrigger).
// dequeueCount is the host's attempt number (1 on first delivery).
type Submitter interface {
	Submit(ctx context.Context, messageText string, dequeueCount int64) error
}

// Monitor runs one monitoring pass (MonitorTimer).
type Monitor interface {
	Run(ctx context.Context, pastDue bool) error
}

// Options configures NewRouter.
type Options struct {
	Services Services
	// Logger is the structured logger; its handler should come from NewLogHandler so that invocation logs
	// also reach the response Logs. Default: slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes bounds what the handler keeps of an invocation body: 16 MiB by default. The blob
	// trigger's payload (the whole package, base64) is not counted: it is skipped while reading, never
	// held in memory, because the intake reads packages from storage.
	MaxBodyBytes int64
	// HostVersion is reported by GET /. Default "spomig".
	Version string
}

// NewRouter builds the handler's router: GET / for the host's readiness and latency pings, POST
// /<FunctionName> per function, and the forwarded HTTP API under /api/.
func NewRouter(opts Options) *mux.Router {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 16 << 20
	}
	s := &server{opts: opts, log: opts.Logger}
	r := mux.NewRouter()
	r.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, `{"status":"ready","version":%q}`, opts.Version)
	}).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/"+ProvisionHTTP, s.invoke(ProvisionHTTP, s.provisionHTTP)).Methods(http.MethodPost)
	r.Handle("/"+EncryptBlobTrigger, s.invoke(EncryptBlobTrigger, s.encryptBlob, EncryptBlobBinding)).Methods(http.MethodPost)
	r.Handle("/"+SubmitQueueTrigger, s.invoke(SubmitQueueTrigger, s.submitQueue)).Methods(http.MethodPost)
	r.Handle("/"+MonitorTimer, s.invoke(MonitorTimer, s.monitorTimer)).Methods(http.MethodPost)
	r.PathPrefix("/api/").Handler(http.HandlerFunc(s.forwardedHTTP))
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeFailure(w, http.StatusNotFound, fmt.Sprintf("no function at %s %s", req.Method, req.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeFailure(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", req.Method, req.URL.Path))
	})
	return r
}

type server struct {
	opts Options
	log  *slog.Logger
}

// Invocation is one call of a function by the host.
type Invocation struct {
	ID       string
	Function string
	Request  *InvokeRequest
	Log      *slog.Logger
}

// Result is what an adapter produces: output binding values keyed by binding name, and $return.
type Result struct {
	Outputs     map[string]any
	ReturnValue any
}

type adapter func(ctx context.Context, inv *Invocation) (*Result, error)

// invoke wraps an adapter: decode, log collection, panic recovery, response envelope. The string values
// of the Data bindings named in skipData are dropped while reading (see readEnvelope).
func (s *server) invoke(name string, fn adapter, skipData ...string) http.Handler {
	skip := map[string]bool{}
	for _, n := range skipData {
		skip[n] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Azure-Functions-InvocationId")
		sink := &logSink{}
		ctx := withSink(r.Context(), sink)
		log := s.log.With("function", name, "invocation_id", id)

		body, err := readEnvelope(r.Body, skip, s.opts.MaxBodyBytes)
		if errors.Is(err, ErrBadPayload) {
			log.ErrorContext(ctx, "invalid invocation payload", "err", err)
			writeFailure(w, http.StatusBadRequest, err.Error())
			return
		}
		if err != nil {
			log.ErrorContext(ctx, "read invocation body", "err", err)
			writeFailure(w, http.StatusBadRequest, "cannot read the invocation body: "+err.Error())
			return
		}
		req, err := DecodeInvokeRequest(body)
		if err != nil {
			log.ErrorContext(ctx, "invalid invocation payload", "err", err)
			writeFailure(w, http.StatusBadRequest, err.Error())
			return
		}
		inv := &Invocation{ID: id, Function: name, Request: req, Log: log}
		res, err := safeRun(ctx, inv, fn)
		elapsed := time.Since(start)
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, ErrBadPayload) {
				status = http.StatusBadRequest
			}
			log.ErrorContext(ctx, "invocation failed", "err", err, "duration_ms", elapsed.Milliseconds())
			writeJSON(w, status, InvokeResponse{Outputs: map[string]any{}, Logs: sink.take(), ReturnValue: map[string]string{"error": err.Error()}})
			return
		}
		log.DebugContext(ctx, "invocation succeeded", "duration_ms", elapsed.Milliseconds())
		resp := InvokeResponse{Outputs: map[string]any{}, Logs: sink.take()}
		if res != nil {
			if res.Outputs != nil {
				resp.Outputs = res.Outputs
			}
			resp.ReturnValue = res.ReturnValue
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

func safeRun(ctx context.Context, inv *Invocation, fn adapter) (res *Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			inv.Log.ErrorContext(ctx, "panic in invocation", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error in %s (panic recovered; see the handler log)", inv.Function)
		}
	}()
	return fn(ctx, inv)
}

// writeJSON always sets Content-Type application/json: Go would otherwise sniff text/plain, which the host
// rejects as a failed invocation.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"Outputs":{},"Logs":["cannot encode the response"],"ReturnValue":null}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeFailure(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, InvokeResponse{Outputs: map[string]any{}, Logs: []string{msg}, ReturnValue: map[string]string{"error": msg}})
}
