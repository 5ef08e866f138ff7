package funchost

import (
	"encoding/json"
	"strings"
	"testing"
)

// Fuzz targets for every parser of outside input: host.json, function.json, TimeSpans, route templates, blob
// paths, query strings and the handler's answer. They must never panic.

func FuzzParseTimeSpan(f *testing.F) {
	for _, s := range []string{"00:00:02", "1.02:03:04.5", "-1", "2", "24:00", "00:00:00.1234567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { _, _ = parseTimeSpan(s) })
}

func FuzzHostJSON(f *testing.F) {
	f.Add([]byte(`{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"h","arguments":["%X%"]}},"extensions":{"queues":{"batchSize":"8"}}}`))
	f.Add([]byte(`{"version":"2.0","httpWorker":{"description":{"defaultExecutablePath":"h"}},"functionTimeout":"-1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseHostJSON(b, "/app", settings{"AzureFunctionsJobHost__a__b": "1", "X": "y"})
	})
}

func FuzzFunctionJSON(f *testing.F) {
	f.Add([]byte(`{"bindings":[{"type":"queueTrigger","name":"q","queueName":"%Q%"},{"type":"blob","direction":"out","name":"b","path":"c/{x}"}]}`))
	f.Add([]byte(`{"disabled":"SETTING","bindings":[{"type":"timerTrigger","name":"t","schedule":"0 * * * * *","useMonitor":"false"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if fc, err := parseFunctionJSON("Fn", b, settings{"Q": "qqq", "SETTING": "true"}); err == nil && fc.Trigger == nil {
			t.Fatal("a function without trigger was accepted")
		}
	})
}

func FuzzRouteTemplate(f *testing.F) {
	for _, s := range []string{"orders/{id:int}", "files/{*rest}", "a/{b?}", "{x}.{y}", "a/{id:regex(^\\d{{3}}$)}"} {
		f.Add(s, "orders/12")
	}
	f.Fuzz(func(t *testing.T, tmpl, path string) {
		rt, err := parseRouteTemplate(tmpl)
		if err != nil {
			return
		}
		_ = rt.precedence()
		_, _ = rt.match(path)
	})
}

func FuzzBlobPattern(f *testing.F) {
	for _, s := range []string{"c/{name}.zip", "c/{{x}}/{a}-{b}", "c/", "c/{a"} {
		f.Add(s, "dir/x.zip")
	}
	f.Fuzz(func(t *testing.T, path, name string) {
		bp, err := parseBlobPattern(path)
		if err != nil {
			return
		}
		_, _ = bp.match(bp.container, name)
	})
}

func FuzzForwardedQuery(f *testing.F) {
	for _, s := range []string{"a=1&a=2", "q=%zz&b", "=x&&c=%E2%82%AC+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q := forwardedQuery(raw)
		if q != "" && !strings.HasPrefix(q, "?") {
			t.Fatalf("query %q", q)
		}
	})
}

func FuzzInvocationResponse(f *testing.F) {
	f.Add(200, "application/json", []byte(`{"Outputs":{"res":{"statusCode":"201","body":{"a":1}}},"Logs":["x",1],"ReturnValue":"cg=="}`))
	f.Add(200, "text/json; charset=utf-8", []byte(`{"outputs":null}`))
	f.Fuzz(func(t *testing.T, status int, ct string, body []byte) {
		res, err := parseInvocationResponse(status, ct, body)
		if err != nil {
			return
		}
		for _, v := range res.Outputs {
			if len(v) == 0 {
				continue
			}
			if ov, err := convertOutput(v, false); err == nil {
				_, _ = ov.queueMessages()
				_ = ov.blobBytes()
			}
			_, _ = parseHTTPOutput(v)
		}
	})
}

func FuzzSpreadJSONObject(f *testing.F) {
	f.Add(`{"a":"b","n":1,"o":{"x":[1]},"l":[1],"t":true,"z":null}`)
	f.Fuzz(func(t *testing.T, text string) {
		var meta orderedFields
		bd := bindingData{}
		spreadJSONObject(text, &meta, bd)
		for _, m := range meta {
			if !json.Valid(m.raw) {
				t.Fatalf("invalid JSON for %s: %s", m.name, m.raw)
			}
		}
	})
}
