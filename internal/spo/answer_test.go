package spo

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestDecodeAnswer(t *testing.T) {
	tests := []struct {
		desc   string
		method string
		body   string
		want   string // compact JSON of the payload; "" when an error is expected
	}{
		{"nometadata primitive", "GetMigrationJobStatus", `{"value":4}`, `4`},
		{"nometadata props", "ProvisionMigrationQueue", `{"JobQueueUri":"q"}`, `{"JobQueueUri":"q"}`},
		{"nometadata null", "CreateMigrationJobEncrypted", `{"value":null}`, `null`},
		{"minimalmetadata primitive", "DeleteMigrationJob", `{"@odata.context":"https://x/_api/$metadata#Edm.Boolean","value":true}`, `true`},
		{"odata v3 light primitive", "DeleteMigrationJob", `{"odata.metadata":"https://x/_api/$metadata#Edm.Boolean","value":false}`, `false`},
		{"minimalmetadata props", "ProvisionMigrationQueue", `{"@odata.context":"c","JobQueueUri":"q"}`, `{"@odata.context":"c","JobQueueUri":"q"}`},
		{"verbose primitive", "GetMigrationJobStatus", `{"d":{"GetMigrationJobStatus":2}}`, `2`},
		{"verbose method case", "GetMigrationJobStatus", `{"d":{"getmigrationjobstatus":2}}`, `2`},
		{"verbose complex", "ProvisionMigrationQueue", `{"d":{"ProvisionMigrationQueue":{"__metadata":{"type":"SP.ProvisionedMigrationQueueInfo"},"JobQueueUri":"q"}}}`,
			`{"__metadata":{"type":"SP.ProvisionedMigrationQueueInfo"},"JobQueueUri":"q"}`},
		{"verbose props", "ProvisionMigrationQueue", `{"d":{"__metadata":{"type":"SP.ProvisionedMigrationQueueInfo"},"JobQueueUri":"q"}}`,
			`{"__metadata":{"type":"SP.ProvisionedMigrationQueueInfo"},"JobQueueUri":"q"}`},
		{"verbose collection", "GetMigrationStatus", `{"d":{"results":[{"JobId":"j","JobState":2}]}}`, `[{"JobId":"j","JobState":2}]`},
		{"verbose method collection", "GetMigrationStatus", `{"d":{"GetMigrationStatus":{"__metadata":{"type":"Collection(SP.SPMigrationJobStatus)"},"results":[]}}}`, `[]`},
		{"verbose null", "CreateMigrationJobEncrypted", `{"d":{"CreateMigrationJobEncrypted":null}}`, `null`},
		{"d null", "x", `{"d":null}`, `null`},
		{"value collection", "x", `{"value":["a","b"]}`, `["a","b"]`},
		{"value beside props is a prop", "x", `{"value":1,"other":2}`, `{"value":1,"other":2}`},
		{"d beside props is a prop", "x", `{"d":1,"other":2}`, `{"d":1,"other":2}`},
		{"method key skipped when empty", "", `{"d":{"Id":"g"}}`, `{"Id":"g"}`},
		{"bare scalar", "x", `"g"`, `"g"`},
		{"bare array", "x", `[1]`, `[1]`},
		{"BOM and whitespace", "x", "\xef\xbb\xbf \n{\"value\": 7}\n", `7`},
		{"empty", "x", ``, ""},
		{"whitespace only", "x", " \n ", ""},
		{"not JSON", "x", `<html><body>Bad gateway</body></html>`, ""},
		{"truncated", "x", `{"value":`, ""},
		{"trailing garbage", "x", `{"value":1} x`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, err := decodeAnswer([]byte(tt.body), tt.method)
			if tt.want == "" {
				if !errors.Is(err, ErrBadAnswer) {
					t.Fatalf("err = %v, want ErrBadAnswer", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, got); err != nil {
				t.Fatalf("payload %q is not JSON: %v", got, err)
			}
			if compact.String() != tt.want {
				t.Errorf("payload = %s, want %s", compact.String(), tt.want)
			}
		})
	}
}

// TestDecodeAnswerErrorsHoldNoBody checks that decoding errors never quote the answer.
func TestDecodeAnswerErrorsHoldNoBody(t *testing.T) {
	for _, body := range []string{`{"EncryptionKey":"` + testKeyB64 + `"`, testKeyB64, `{"EncryptionKey":"` + testKeyB64 + `"} trailing`} {
		_, err := decodeAnswer([]byte(body), "x")
		if err == nil || bytes.Contains([]byte(err.Error()), []byte(testKeyB64[:8])) {
			t.Errorf("err = %v", err)
		}
	}
}

func TestDecodeValues(t *testing.T) {
	guid := testJobID
	t.Run("guid", func(t *testing.T) {
		for in, want := range map[string]string{
			`"` + guid + `"`:                                 guid,
			`"{` + guid + `}"`:                               guid,
			`"\/Guid(` + guid + `)\/"`:                       guid,
			`"/Guid(2F1A3B4C-5D6E-4F70-8192-A3B4C5D6E7F8)/"`: testWebID,
			`null`: "",
		} {
			got, err := decodeGUID(json.RawMessage(in), "id")
			if err != nil || got != want {
				t.Errorf("decodeGUID(%s) = %q, %v; want %q", in, got, err, want)
			}
		}
		for _, in := range []string{`"x"`, `42`, `"` + guid + `x"`, `"\/Guid(` + guid + `)"`, `{}`} {
			if _, err := decodeGUID(json.RawMessage(in), "id"); !errors.Is(err, ErrBadAnswer) {
				t.Errorf("decodeGUID(%s) err = %v", in, err)
			}
		}
	})
	t.Run("binary", func(t *testing.T) {
		for _, in := range []string{`"` + testKeyB64 + `"`, `"\/Base64Binary(` + testKeyB64 + `)\/"`, `"` + testKeyB64[:43] + `"`} {
			got, err := decodeBinary(json.RawMessage(in), "key")
			if err != nil || !bytes.Equal(got, testKey) {
				t.Errorf("decodeBinary(%s) = %x, %v", in, got, err)
			}
		}
		for _, in := range []string{`null`, `12`, `"!!!"`, `"\/Base64Binary(!!)\/"`} {
			if _, err := decodeBinary(json.RawMessage(in), "key"); !errors.Is(err, ErrBadAnswer) {
				t.Errorf("decodeBinary(%s) err = %v", in, err)
			}
		}
	})
	t.Run("int", func(t *testing.T) {
		for in, want := range map[string]int64{`2`: 2, `"4"`: 4, `0`: 0, `" 2 "`: 2} {
			got, err := decodeInt(json.RawMessage(in), "n")
			if err != nil || got != want {
				t.Errorf("decodeInt(%s) = %d, %v", in, got, err)
			}
		}
		for _, in := range []string{`null`, `2.5`, `"x"`, `true`, `1e400`} {
			if _, err := decodeInt(json.RawMessage(in), "n"); !errors.Is(err, ErrBadAnswer) {
				t.Errorf("decodeInt(%s) err = %v", in, err)
			}
		}
	})
	t.Run("bool", func(t *testing.T) {
		for in, want := range map[string]bool{`true`: true, `false`: false, `"true"`: true, `"False"`: false} {
			got, err := decodeBool(json.RawMessage(in), "b")
			if err != nil || got != want {
				t.Errorf("decodeBool(%s) = %v, %v", in, got, err)
			}
		}
		for _, in := range []string{`null`, `1`, `"yes"`} {
			if _, err := decodeBool(json.RawMessage(in), "b"); !errors.Is(err, ErrBadAnswer) {
				t.Errorf("decodeBool(%s) err = %v", in, err)
			}
		}
	})
	t.Run("events", func(t *testing.T) {
		tests := []struct {
			in   string
			want []string
		}{
			{`["{\"Event\":\"JobQueued\"}", "{\"Event\":\"JobStart\"}"]`, []string{`{"Event":"JobQueued"}`, `{"Event":"JobStart"}`}},
			{`{"__metadata":{"type":"Collection(Edm.String)"},"results":["{\"Event\":\"JobEnd\"}"]}`, []string{`{"Event":"JobEnd"}`}},
			{`[{"Event":"JobEnd"}]`, []string{`{"Event":"JobEnd"}`}},
			{`["not json", null, " {\"Event\":\"JobEnd\"} "]`, []string{`"not json"`, `{"Event":"JobEnd"}`}},
			{`[]`, []string{}},
			{`null`, nil},
			{``, nil},
		}
		for _, tt := range tests {
			got, err := decodeEvents(json.RawMessage(tt.in))
			if err != nil {
				t.Errorf("decodeEvents(%s): %v", tt.in, err)
				continue
			}
			var gotS []string
			if got != nil {
				gotS = []string{}
			}
			for _, e := range got {
				gotS = append(gotS, string(e))
			}
			if !reflect.DeepEqual(gotS, tt.want) {
				t.Errorf("decodeEvents(%s) = %q, want %q", tt.in, gotS, tt.want)
			}
		}
		for _, in := range []string{`"x"`, `{"results":1}`, `{}`} {
			if _, err := decodeEvents(json.RawMessage(in)); !errors.Is(err, ErrBadAnswer) {
				t.Errorf("decodeEvents(%s) err = %v", in, err)
			}
		}
	})
}
