package funchost

import (
	"strings"
	"testing"
	"time"
)

func TestHostJSON(t *testing.T) {
	s := settings{"MY_PORT": "9", "AzureFunctionsJobHost__extensions__queues__batchSize": "8",
		"AzureFunctionsJobHost__Extensions__Http__RoutePrefix": ""}
	hc, err := parseHostJSON([]byte(`{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler",
		"workingDirectory":"bin","arguments":["--port","%MY_PORT%","%UNSET%"]}},
		"extensions":{"queues":{"maxDequeueCount":"7","messageEncoding":"None","visibilityTimeout":"00:00:30"}},"functionTimeout":"00:05:00"}`), "/app", s)
	must(t, err)
	if hc.Executable != "handler" || hc.WorkingDir != "/app/bin" || strings.Join(hc.Arguments, " ") != "--port 9 %UNSET%" {
		t.Errorf("description: %q %q %q", hc.Executable, hc.WorkingDir, hc.Arguments)
	}
	q := hc.Queues
	if q.BatchSize != 8 || q.MaxDequeueCount != 7 || q.MessageEncoding != "none" || q.VisibilityTimeout != 30*time.Second ||
		q.MaxPollingInterval != 2*time.Second {
		t.Errorf("queues: %+v", q)
	}
	if hc.RoutePrefix != "" || hc.FunctionTimeout != 5*time.Minute || hc.Forwarding || hc.Blobs.PoisonBlobThreshold != 5 {
		t.Errorf("host: %+v", hc)
	}

	hc, err = parseHostJSON([]byte(`{"version":"2.0","httpWorker":{"description":{"defaultExecutablePath":"h"}},"functionTimeout":"-1"}`), "/app", settings{})
	must(t, err)
	if !hc.Legacy || hc.RoutePrefix != "api" || hc.FunctionTimeout != 0 || hc.Queues.MessageEncoding != "base64" || hc.Queues.BatchSize != 16 {
		t.Errorf("legacy defaults: %+v", hc)
	}
	for _, bad := range []string{`{}`, `{"version":"2.0"}`, `{"version":"2.0","customHandler":{"description":{}}}`,
		`{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"h"}},"extensions":{"queues":{"batchSize":64}}}`,
		`{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"h"}},"extensions":{"queues":{"messageEncoding":"utf8"}}}`,
		`{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"h"}},"functionTimeout":"soon"}`} {
		if _, err := parseHostJSON([]byte(bad), "/app", settings{}); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestFunctionJSON(t *testing.T) {
	s := settings{"Q": "Orders", "SCHED": "0 */5 * * * *"}
	fc, err := parseFunctionJSON("Fn", []byte(`{"disabled":false,"bindings":[
		{"type":"queueTrigger","name":"item","queueName":"%Q%"},
		{"type":"timerTrigger","direction":"in","name":"x","schedule":"%SCHED%"}]}`), s)
	if err == nil || !strings.Contains(err.Error(), "more than one trigger") {
		t.Errorf("two triggers: %v", err)
	}
	fc, err = parseFunctionJSON("Fn", []byte(`{"bindings":[{"type":"QueueTrigger","name":"item","queueName":"%Q%"},
		{"type":"queue","direction":"out","name":"$return","queueName":"out-q"}]}`), s)
	must(t, err)
	if fc.Trigger.QueueName != "orders" || !fc.Trigger.in() || len(fc.outputs()) != 1 {
		t.Errorf("%+v", fc.Trigger)
	}
	if _, err := parseFunctionJSON("Fn", []byte(`{"bindings":[{"type":"queueTrigger","name":"item","queueName":"%MISSING%"}]}`), s); err == nil ||
		!strings.Contains(err.Error(), "MISSING") {
		t.Errorf("unresolved setting: %v", err)
	}
	for _, bad := range []string{`{}`, `{"bindings":[]}`, `{"bindings":[{"type":"http","direction":"out","name":"res"}]}`,
		`{"bindings":[{"type":"queueTrigger","name":"a b","queueName":"q1q"}]}`,
		`{"bindings":[{"type":"queueTrigger","name":"q","queueName":"Bad_Name"}]}`,
		`{"bindings":[{"type":"blobTrigger","name":"b","path":"{c}/x"}]}`,
		`{"bindings":[{"type":"httpTrigger","name":"r","authLevel":"sometimes"}]}`,
		`{"bindings":[{"type":"httpTrigger","name":"r"},{"type":"http","direction":"in","name":"$return"}]}`} {
		if _, err := parseFunctionJSON("Fn", []byte(bad), s); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	if _, err := parseFunctionJSON("1bad", []byte(`{"bindings":[{"type":"httpTrigger","name":"r"}]}`), s); err == nil {
		t.Error("accepted an invalid function name")
	}
	fc, err = parseFunctionJSON("Http", []byte(`{"bindings":[{"type":"httpTrigger","name":"r"},{"type":"http","direction":"out","name":"res"}]}`), s)
	must(t, err)
	if !fc.httpInAndOut() {
		t.Error("httpTrigger + http out must be forwardable")
	}
}

func TestTimeSpan(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"00:00:02": 2 * time.Second, "00:05": 5 * time.Minute, "1.02:03:04": 26*time.Hour + 3*time.Minute + 4*time.Second,
		"00:00:00.5": 500 * time.Millisecond, "00:00:00.0000001": 100 * time.Nanosecond, "2": 48 * time.Hour, "-00:01:00": -time.Minute,
	} {
		got, err := parseTimeSpan(in)
		if err != nil || got != want {
			t.Errorf("parseTimeSpan(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-", "24:00:00", "00:60", "1:2:3:4", "00:00:00.12345678", "abc", "1.2", "00:00:-1"} {
		if _, err := parseTimeSpan(bad); err == nil {
			t.Errorf("parseTimeSpan(%q) accepted", bad)
		}
	}
}

func TestSettingsAndConnections(t *testing.T) {
	ls := &localSettings{Values: map[string]string{"A": "local", "B": "local"}}
	s := buildSettings(ls, []string{"B=env", "C=env"}, map[string]string{"C": "override"})
	if s["A"] != "local" || s["B"] != "env" || s["C"] != "override" {
		t.Errorf("precedence: %v", s)
	}
	if v, ok := s.get("a"); !ok || v != "local" {
		t.Error("settings lookups ignore case")
	}

	cs := expandDevelopmentStorage("UseDevelopmentStorage=true")
	for _, want := range []string{"AccountName=devstoreaccount1", "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1",
		"QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1", "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1", "AccountKey=Eby8vdM02"} {
		if !strings.Contains(cs, want) {
			t.Errorf("expanded %q lacks %q", cs, want)
		}
	}
	if cs := expandDevelopmentStorage("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://docker.host"); !strings.Contains(cs, "http://docker.host:10001/devstoreaccount1") {
		t.Errorf("proxy: %q", cs)
	}
	if cs := expandDevelopmentStorage("AccountName=x;AccountKey=eQ=="); cs != "AccountName=x;AccountKey=eQ==" {
		t.Errorf("a plain connection string changed: %q", cs)
	}

	conns := newConnCache(settings{
		"AzureWebJobsStorage":         "UseDevelopmentStorage=true",
		"AzureWebJobsOther":           "UseDevelopmentStorage=true",
		"MyConn__blobServiceUri":      "https://acct.blob.core.windows.net",
		"MyConn__queueServiceUri":     "https://acct.queue.core.windows.net",
		"Named:accountName":           "named",
		"AZURE_TOKEN_CREDENTIALS":     "",
		"FUNCTIONS_WORKER_RUNTIME":    "custom",
		"MyConn__credential":          "",
		"Broken__somethingIrrelevant": "x",
	})
	sc, err := conns.get("")
	must(t, err)
	if !strings.HasPrefix(sc.blob.URL(), "http://127.0.0.1:10000/devstoreaccount1") || !strings.HasPrefix(sc.queue.URL(), "http://127.0.0.1:10001/devstoreaccount1") {
		t.Errorf("AzureWebJobsStorage: %s %s", sc.blob.URL(), sc.queue.URL())
	}
	if _, err := conns.get("Other"); err != nil {
		t.Errorf("the AzureWebJobs prefix may be left off: %v", err)
	}
	sc, err = conns.get("MyConn")
	must(t, err)
	if strings.TrimSuffix(sc.blob.URL(), "/") != "https://acct.blob.core.windows.net" || strings.TrimSuffix(sc.queue.URL(), "/") != "https://acct.queue.core.windows.net" {
		t.Errorf("identity: %s %s", sc.blob.URL(), sc.queue.URL())
	}
	sc, err = conns.get("Named")
	must(t, err)
	if !strings.HasPrefix(sc.queue.URL(), "https://named.queue.core.windows.net") {
		t.Errorf("accountName: %s", sc.queue.URL())
	}
	if _, err := conns.get("Broken"); err == nil {
		t.Error("an unknown connection must fail")
	}
}

func TestEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"hello":              `"\"hello\""`,
		`a"b\c`:              `"\"a\\\"b\\\\c\""`,
		"<&>é\n\x01":         `"\"<&>é\\n\\u0001\""`,
		"\u2028":             `"\"\\u2028\""`,
		string([]byte{0xff}): `"\"` + "\uFFFD" + `\""`,
	} {
		if got := string(encString(in)); got != want {
			t.Errorf("encString(%q) = %s, want %s", in, got, want)
		}
	}
	if got := string(encNumber(5)); got != `"5"` {
		t.Errorf("encNumber = %s", got)
	}
	if got := string(encTime(time.Date(2026, 12, 4, 10, 0, 0, 123, time.UTC))); got != `"2026-12-04T10:00:00+00:00"` {
		t.Errorf("encTime = %s", got)
	}
	if got := newtonsoftTime(time.Date(2026, 12, 4, 10, 0, 1, 123450000, time.UTC)); got != "2026-12-04T10:00:01.12345Z" {
		t.Errorf("newtonsoftTime = %s", got)
	}
	var buf strings.Builder
	must(t, streamDoubleEncoded(strings.NewReader("\xef\xbb\xbfa\"\n"))(&buf))
	if want := `"\"a\\\"\\n\""`; buf.String() != want {
		t.Errorf("streamDoubleEncoded = %s, want %s", buf.String(), want)
	}
}
