// Command testhandler is a custom handler for funchost's tests. It records every request it receives (method,
// path, query, headers, body) as one JSON line in $TESTHANDLER_RECORD, and answers per instructions:
//
//   - GET /                         readiness: 200, not recorded
//   - POST /<Function> (envelope)   the instruction is a trigger value that reads "cmd:<x>" (a queue message, a blob,
//     an HTTP body, possibly base64/double-encoded) or the query parameter cmd:
//     fail → 500; badjson → 200 text/plain; invalidjson → 200 application/json "{not json"; exit → process exits;
//     otherwise the reply is $TESTHANDLER_REPLY_<Function> or {"Outputs":{},"Logs":["testhandler <Function> ok"]}
//   - anything else (forwarded HTTP) echo: the recorded request as JSON; status from X-Test-Status, Location from
//     X-Test-Location; X-Test-Exit makes the process exit without answering.
//
// With $TESTHANDLER_NOLISTEN set it never listens (start-up timeout tests).
package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
)

type record struct {
	Kind             string              `json:"kind"`
	PID              int                 `json:"pid"`
	Method           string              `json:"method,omitempty"`
	Path             string              `json:"path,omitempty"`
	RawQuery         string              `json:"rawQuery,omitempty"`
	Host             string              `json:"host,omitempty"`
	Proto            string              `json:"proto,omitempty"`
	Headers          map[string][]string `json:"headers,omitempty"`
	ContentLength    int64               `json:"contentLength"`
	TransferEncoding []string            `json:"transferEncoding,omitempty"`
	Body             string              `json:"body,omitempty"`
	BodyB64          string              `json:"bodyB64,omitempty"`
	Env              map[string]string   `json:"env,omitempty"`
}

var mu sync.Mutex

func write(r record) {
	path := os.Getenv("TESTHANDLER_RECORD")
	if path == "" {
		return
	}
	r.PID = os.Getpid()
	b, _ := json.Marshal(r)
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	_, _ = f.Write(append(b, '\n'))
	_ = f.Close()
}

func main() {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "FUNCTIONS_") || strings.HasPrefix(k, "TESTAPP_") || k == "AzureWebJobsStorage" {
			env[k] = v
		}
	}
	write(record{Kind: "start", Env: env})
	os.Stdout.WriteString("testhandler started\n")
	os.Stderr.WriteString("testhandler stderr line\n")
	if os.Getenv("TESTHANDLER_NOLISTEN") != "" {
		select {}
	}
	port := os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT")
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: http.HandlerFunc(serve)}
	if err := srv.ListenAndServe(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}

func serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	body, _ := io.ReadAll(r.Body)
	rec := record{Kind: "request", Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Host: r.Host,
		Proto: r.Proto, Headers: r.Header, ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding,
		Body: string(body), BodyB64: base64.StdEncoding.EncodeToString(body)}
	write(rec)
	name := strings.TrimPrefix(r.URL.Path, "/")
	if r.Method == http.MethodPost && !strings.Contains(name, "/") && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") &&
		r.Header.Get("X-Test-Forwarded") == "" {
		envelope(w, name, body)
		return
	}
	if r.Header.Get("X-Test-Exit") != "" {
		os.Exit(3)
	}
	status := http.StatusOK
	if s := r.Header.Get("X-Test-Status"); s != "" {
		status, _ = strconv.Atoi(s)
	}
	if l := r.Header.Get("X-Test-Location"); l != "" {
		w.Header().Set("Location", l)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Handler", "testhandler")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(rec)
}

// instruction finds "cmd:<x>" in the envelope's Data values.
func instruction(body []byte) string {
	var env struct {
		Data map[string]json.RawMessage
	}
	if json.Unmarshal(body, &env) != nil {
		return ""
	}
	for _, raw := range env.Data {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			var inner string
			if strings.HasPrefix(s, `"`) && json.Unmarshal([]byte(s), &inner) == nil {
				s = inner
			}
			if strings.HasPrefix(s, "cmd:") {
				return strings.TrimPrefix(s, "cmd:")
			}
			if b, err := base64.StdEncoding.DecodeString(s); err == nil && strings.HasPrefix(string(b), "cmd:") {
				return strings.TrimPrefix(string(b), "cmd:")
			}
			continue
		}
		var obj struct {
			Body  string
			Query map[string]string
		}
		if json.Unmarshal(raw, &obj) == nil {
			if strings.HasPrefix(obj.Body, "cmd:") {
				return strings.TrimPrefix(obj.Body, "cmd:")
			}
			if c := obj.Query["cmd"]; c != "" {
				return c
			}
		}
	}
	return ""
}

func envelope(w http.ResponseWriter, name string, body []byte) {
	switch cmd := instruction(body); {
	case cmd == "fail":
		http.Error(w, "failing as instructed", http.StatusInternalServerError)
		return
	case cmd == "badjson":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, `{"Outputs":{}}`)
		return
	case cmd == "invalidjson":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{not json`)
		return
	case cmd == "exit":
		os.Exit(3)
	}
	reply := os.Getenv("TESTHANDLER_REPLY_" + name)
	if reply == "" {
		reply = `{"Outputs":{},"Logs":["testhandler ` + name + ` ok"],"ReturnValue":null}`
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, reply)
}
