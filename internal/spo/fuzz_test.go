package spo

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzDecodeAnswer(f *testing.F) {
	seeds := []string{
		`{"value":4}`,
		`{"@odata.context":"c","value":true}`,
		`{"d":{"GetMigrationJobStatus":2}}`,
		`{"d":{"__metadata":{"type":"SP.Web"},"Id":"` + testWebID + `"}}`,
		`{"DataContainerUri":"https://a.blob.core.windows.net/c?sig=x","MetadataContainerUri":"m","EncryptionKey":"\/Base64Binary(` + testKeyB64 + `)\/"}`,
		`{"d":{"GetMigrationJobProgress":{"Logs":{"__metadata":{"type":"Collection(Edm.String)"},"results":["{\"Event\":\"JobQueued\"}"]},"NextToken":"1764"}}}`,
		`{"value":"\/Guid(` + testJobID + `)\/"}`,
		`{"d":{"results":[{"a":1}]}}`,
		`{"d":null}`, `[]`, `"x"`, ``, `{`, "\xef\xbb\xbf{}",
	}
	for _, s := range seeds {
		f.Add([]byte(s), "GetMigrationJobProgress")
	}
	f.Fuzz(func(t *testing.T, body []byte, method string) {
		raw, err := decodeAnswer(body, method)
		if err != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("payload %q is not JSON", raw)
		}
		// The value decoders must not panic on any payload, and events must be JSON.
		_, _ = decodeGUID(raw, "g")
		_, _ = decodeBinary(raw, "b")
		_, _ = decodeInt(raw, "i")
		_, _ = decodeBool(raw, "b")
		_, _ = decodeToken(raw)
		events, err := decodeEvents(raw)
		if err == nil {
			for _, e := range events {
				if !json.Valid(e) {
					t.Fatalf("event %q is not JSON", e)
				}
			}
		}
		if obj, ok := asObject(raw); ok {
			if logs, ok := obj.get("Logs"); ok {
				_, _ = decodeEvents(logs)
			}
		}
	})
}

func FuzzParseError(f *testing.F) {
	seeds := []string{
		`{"error":{"code":"-2147213145, Microsoft.SharePoint.SPException","innererror":{"message":"m","stacktrace":"s"},"message":{"lang":"en-US","value":"Job not found"}}}`,
		`{"odata.error":{"code":"-1, System.InvalidOperationException","message":{"lang":"en-US","value":"x"}}}`,
		`{"error":{"code":-5,"message":"sig=abc&x"}}`,
		`{"error":"invalid_request","error_description":"SIG%3Dabc"}`,
		`{"error":{"code":"99999999999999999999, X","message":{"value":"\u0000\n"}}}`,
		`<html/>`, ``, `null`,
	}
	for _, s := range seeds {
		f.Add(500, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := parseError(status, body, "M")
		if e == nil || e.StatusCode != status || e.Method != "M" {
			t.Fatalf("parseError = %+v", e)
		}
		for _, s := range []string{e.Message, e.Type} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 %q", s)
			}
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("control character in %q", s)
			}
			lower := strings.ToLower(s)
			for _, marker := range []string{"sig=", "sig%3d"} {
				for rest := lower; ; {
					i := strings.Index(rest, marker)
					if i < 0 {
						break
					}
					rest = rest[i+len(marker):]
					if !strings.HasPrefix(rest, "redacted") {
						t.Fatalf("unredacted %s in %q", marker, s)
					}
				}
			}
		}
		if len(e.Message) > maxMessageLen+len("…")+len("REDACTED")*maxMessageLen/4 {
			t.Fatalf("message of %d bytes", len(e.Message))
		}
		_ = e.Error()
	})
}
