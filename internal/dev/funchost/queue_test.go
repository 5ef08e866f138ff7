package funchost

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/dev/azurite"
)

const queueFnJSON = `{
  "bindings": [
    { "type": "queueTrigger", "direction": "in", "name": "item", "queueName": "%TESTAPP_IN_QUEUE%", "connection": "AzureWebJobsStorage" },
    { "type": "queue", "direction": "out", "name": "outq", "queueName": "%TESTAPP_OUT_QUEUE%" },
    { "type": "blob", "direction": "out", "name": "outblob", "path": "%TESTAPP_OUT_CONTAINER%/{orderId}.bin" },
    { "type": "blob", "direction": "out", "name": "outtext", "path": "%TESTAPP_OUT_CONTAINER%/{orderId}-{rand-guid}.txt", "dataType": "binary" },
    { "type": "queue", "direction": "out", "name": "$return", "queueName": "%TESTAPP_RET_QUEUE%" }
  ]
}`

const queueFailFnJSON = `{
  "bindings": [ { "type": "queueTrigger", "direction": "in", "name": "msg", "queueName": "%TESTAPP_FAIL_QUEUE%" } ]
}`

const queueBinFnJSON = `{
  "bindings": [ { "type": "queueTrigger", "direction": "in", "name": "raw", "dataType": "binary", "queueName": "%TESTAPP_BIN_QUEUE%" } ]
}`

// The handler's answer for QueueFn: an array to a queue output (one message per element, no base64 decoding of
// elements), a base64 string to a blob output (decoded to bytes), the same string to a dataType binary blob
// output (written as text), an output that has no binding (ignored) and a base64 ReturnValue to $return.
const queueFnReply = `{"Outputs":{"outq":["first",{"n":2},"dGVzdA=="],"outblob":"AAECAw==","outtext":"AAECAw==","ignored":"x"},` +
	`"Logs":["log line 1","log line 2"],"ReturnValue":"cmV0dXJuZWQ="}`

func TestQueueTrigger(t *testing.T) {
	t.Parallel()
	in, out, ret := azurite.UniqueName("in"), azurite.UniqueName("out"), azurite.UniqueName("ret")
	fail, bin, outc := azurite.UniqueName("fail"), azurite.UniqueName("bin"), azurite.UniqueName("outc")
	app := newTestApp(t, false, map[string]string{
		"QueueFn": queueFnJSON, "QueueFailFn": queueFailFnJSON, "QueueBinFn": queueBinFnJSON,
	}, map[string]string{
		"TESTAPP_IN_QUEUE": in, "TESTAPP_OUT_QUEUE": out, "TESTAPP_RET_QUEUE": ret, "TESTAPP_FAIL_QUEUE": fail,
		"TESTAPP_BIN_QUEUE": bin, "TESTAPP_OUT_CONTAINER": outc, "TESTHANDLER_REPLY_QueueFn": queueFnReply,
	})
	h := app.start(Options{})
	app.vars["version"] = DefaultHostVersion

	t.Run("request and outputs", func(t *testing.T) {
		msg := `{"orderId":"42","qty":3,"tags":["a"],"nested":{"x":1},"flag":true,"empty":null,"id":"custom-id","note":"<b>&\n"}`
		enqueue(t, in, b64(msg))
		recs := app.waitRecords("/QueueFn", 1, 15*time.Second)
		app.matchFixture("queue_request.json", requestView(t, recs[0]))
		// On the wire, strings are escaped as Newtonsoft does: '<', '>' and '&' stay as they are.
		if raw := recs[0].Body; !strings.Contains(raw, `\"<b>&\\n\"`) || strings.Contains(raw, `\u003c`) {
			t.Errorf("body escaping differs from Newtonsoft's: %s", raw)
		}

		// Outputs are written before the host logs the invocation as executed: wait for that line.
		waitFor(t, 10*time.Second, "QueueFn to be executed", func() bool {
			return strings.Contains(app.logs.String(), "Executed 'Functions.QueueFn' (Succeeded")
		})
		// Outputs: three messages, base64 on the wire (messageEncoding base64).
		var got []string
		waitFor(t, 10*time.Second, "3 output messages", func() bool {
			got = peekTexts(t, out)
			return len(got) == 3
		})
		for i := range got {
			got[i] = unb64(t, got[i])
		}
		want := []string{"first", "{\n  \"n\": 2\n}", "dGVzdA=="}
		if !slices.Equal(got, want) {
			t.Errorf("output queue messages = %q, want %q", got, want)
		}
		// The outputs are written one after the other: wait for the $return message too.
		var r []string
		waitFor(t, 10*time.Second, "the $return message", func() bool {
			r = peekTexts(t, ret)
			return len(r) >= 1
		})
		if len(r) != 1 || unb64(t, r[0]) != "returned" {
			t.Errorf("$return queue = %q, want one message \"returned\"", r)
		}
		var b42 []byte
		waitFor(t, 10*time.Second, "blob 42.bin", func() bool {
			b42 = readBlob(t, outc, "42.bin")
			return b42 != nil
		})
		if b := b42; !bytes.Equal(b, []byte{0, 1, 2, 3}) {
			t.Errorf("blob 42.bin = %v, want the base64-decoded bytes [0 1 2 3]", b)
		}
		names := listBlobs(t, outc, "42-")
		if len(names) != 1 || !strings.HasSuffix(names[0], ".txt") || len(names[0]) != len("42-")+36+len(".txt") {
			t.Fatalf("dataType binary output blobs = %q, want one 42-<guid>.txt", names)
		}
		if b := readBlob(t, outc, names[0]); string(b) != "AAECAw==" {
			t.Errorf("dataType binary blob = %q, want the base64 text itself", b)
		}
		waitFor(t, 5*time.Second, "the trigger message to be deleted", func() bool { return len(peekTexts(t, in)) == 0 })
		logs := app.logs.String()
		for _, s := range []string{"Executing 'Functions.QueueFn' (Reason='New queue message detected on '" + in + "'.', Id=",
			"log line 1", "log line 2", "Executed 'Functions.QueueFn' (Succeeded, Id=", "[handler] testhandler started",
			"[handler:err] testhandler stderr line"} {
			if !strings.Contains(logs, s) {
				t.Errorf("logs lack %q", s)
			}
		}
	})

	t.Run("binary dataType", func(t *testing.T) {
		enqueue(t, bin, "/wAQ") // bytes ff 00 10
		recs := app.waitRecords("/QueueBinFn", 1, 15*time.Second)
		app.matchFixture("queue_binary_request.json", envelopeBody(t, recs[0]))
	})

	t.Run("failures are retried then poisoned", func(t *testing.T) {
		for _, cmd := range []string{"cmd:fail", "cmd:badjson", "cmd:invalidjson"} {
			enqueue(t, fail, b64(cmd))
		}
		enqueue(t, fail, "not base64!") // not valid base64: straight to the poison queue
		var poison []string
		waitFor(t, 20*time.Second, "4 poison messages", func() bool {
			poison = peekTexts(t, fail+"-poison")
			return len(poison) == 4
		})
		slices.Sort(poison)
		want := []string{b64("cmd:badjson"), b64("cmd:fail"), b64("cmd:invalidjson"), "not base64!"}
		slices.Sort(want)
		if !slices.Equal(poison, want) {
			t.Errorf("poison queue = %q, want %q", poison, want)
		}
		counts := map[string][]string{}
		for _, r := range app.records("/QueueFailFn") {
			b := envelopeBody(t, r)
			data := b["Data"].(map[string]any)["msg"].(string)
			counts[data] = append(counts[data], b["Metadata"].(map[string]any)["DequeueCount"].(string))
		}
		for _, cmd := range []string{"cmd:fail", "cmd:badjson", "cmd:invalidjson"} {
			if got := counts[`"`+cmd+`"`]; !slices.Equal(got, []string{"1", "2", "3"}) {
				t.Errorf("%s: dequeue counts seen by the handler = %v, want [1 2 3]", cmd, got)
			}
		}
		if len(counts) != 3 {
			t.Errorf("handler saw %d distinct messages, want 3 (the non-base64 one must never reach it): %v", len(counts), counts)
		}
		if n := len(peekTexts(t, fail)); n != 0 {
			t.Errorf("%d messages left in the trigger queue", n)
		}
		logs := app.logs.String()
		for _, s := range []string{"(Failed, Id=", "response status code does not indicate success: 500",
			"media type 'text/plain'", "invalid HttpResponseMessage"} {
			if !strings.Contains(logs, s) {
				t.Errorf("logs lack %q", s)
			}
		}
	})

	t.Run("admin endpoint", func(t *testing.T) {
		before := len(app.records("/QueueFailFn"))
		body := strings.NewReader(`{"input":"hello admin"}`)
		resp, err := http.Post(h.URL()+"/admin/functions/QueueFailFn", "application/json", body)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("admin without key: %d, want 401", resp.StatusCode)
		}
		req, _ := http.NewRequest(http.MethodPost, h.URL()+"/admin/functions/QueueFailFn", strings.NewReader(`{"input":"hello admin"}`))
		req.Header.Set("x-functions-key", h.MasterKey())
		resp, err = http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("admin with master key: %d, want 202", resp.StatusCode)
		}
		recs := app.waitRecords("/QueueFailFn", before+1, 10*time.Second)
		app.matchFixture("queue_admin_request.json", envelopeBody(t, recs[len(recs)-1]))
	})
}

func TestQueueResponseParsing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		ct     string
		body   string
		err    string
		logs   []string
	}{
		{"ok", 200, "application/json; charset=utf-8", `{"Outputs":{"a":1},"Logs":["x"],"ReturnValue":"r"}`, "", []string{"x"}},
		{"member case ignored", 200, "application/json", `{"outputs":{},"logs":["y"],"returnValue":null}`, "", []string{"y"}},
		{"text/json", 201, "text/json", `{}`, "", nil},
		{"non-2xx", 500, "application/json", `{}`, "does not indicate success: 500", nil},
		{"text/plain", 200, "text/plain; charset=utf-8", `{}`, "media type 'text/plain'", nil},
		{"no content type", 200, "", `{}`, "media type ''", nil},
		{"invalid json", 200, "application/json", `{x`, "invalid HttpResponseMessage", nil},
		{"array", 200, "application/json", `[]`, "invalid HttpResponseMessage", nil},
		{"empty", 200, "application/json", ``, "empty JSON body", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := parseInvocationResponse(tc.status, tc.ct, []byte(tc.body))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Logs, tc.logs) {
				t.Errorf("logs = %q, want %q", res.Logs, tc.logs)
			}
		})
	}
}

func TestOutputConversion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		raw    string
		binary bool
		queue  []string
		blob   string
	}{
		{"base64 string", `"dGVzdA=="`, false, []string{"test"}, "test"},
		{"base64-looking text is decoded (the host's pitfall)", `"abcd"`, false, []string{"i\xb7\x1d"}, "i\xb7\x1d"},
		{"plain text", `"hello"`, false, []string{"hello"}, "hello"},
		{"binary keeps text", `"dGVzdA=="`, true, []string{"dGVzdA=="}, "dGVzdA=="},
		{"array", `["a",{"b":1},2,true,null]`, false, []string{"a", "{\n  \"b\": 1\n}", "2", "True", ""}, `["a",{"b":1},2,true,null]`},
		{"string holding an array", `"[\"x\",\"y\"]"`, false, []string{"x", "y"}, `["x","y"]`},
		{"object", `{"k":"v"}`, false, []string{"{\n  \"k\": \"v\"\n}"}, `{"k":"v"}`},
		{"integer", `7`, false, []string{"7"}, "\x07\x00\x00\x00"},
		{"empty string is empty base64", `""`, false, []string{""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := convertOutput(json.RawMessage(tc.raw), tc.binary)
			must(t, err)
			msgs, err := v.queueMessages()
			must(t, err)
			var got []string
			for _, m := range msgs {
				got = append(got, string(m))
			}
			if !slices.Equal(got, tc.queue) {
				t.Errorf("queue messages = %q, want %q", got, tc.queue)
			}
			if b := string(v.blobBytes()); b != tc.blob {
				t.Errorf("blob = %q, want %q", b, tc.blob)
			}
		})
	}
	if _, err := (outValue{raw: json.RawMessage(`"[not json]"`)}).queueMessages(); err == nil {
		t.Error("a string that looks like JSON but does not parse must fail the output, as JToken.Parse does")
	}
}
