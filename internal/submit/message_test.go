package submit

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	const id = "0b7f2c1e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
	if got := EncodeMessage(id); got != `{"jobId":"`+id+`"}` {
		t.Fatalf("EncodeMessage = %s", got)
	}
	for _, text := range []string{EncodeMessage(id), EncodeQueueMessage(id), " \n" + EncodeQueueMessage(id) + "\n"} {
		m, err := ParseMessage(text)
		if err != nil || m.JobID != id {
			t.Fatalf("ParseMessage(%q) = %+v, %v", text, m, err)
		}
	}
}

func TestParseMessage(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, text, want string
	}{
		{"json", `{"jobId":"job-1"}`, "job-1"},
		{"case-insensitive member", `{"JobId":"job-2"}`, "job-2"},
		{"extra members", `{"jobId":"job-3","reason":"staged"}`, "job-3"},
		{"base64 (poison queue)", b64(`{"jobId":"job-4"}`), "job-4"},
		{"spaces in the id", `{"jobId":"  job-5 "}`, "job-5"},
		{"empty", ``, ""},
		{"not base64", `hello world`, ""},
		{"base64 of text", b64("hello"), ""},
		{"array", `[{"jobId":"x"}]`, ""},
		{"null", `null`, ""},
		{"no job id", `{"id":"x"}`, ""},
		{"number id", `{"jobId":42}`, ""},
		{"invalid id", `{"jobId":"../../etc"}`, ""},
		{"id too long", `{"jobId":"` + strings.Repeat("a", 129) + `"}`, ""},
		{"trailing data", `{"jobId":"x"} {"jobId":"y"}`, ""},
		{"huge", `{"jobId":"x","pad":"` + strings.Repeat("a", 5000) + `"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseMessage(tc.text)
			if tc.want == "" {
				if !errors.Is(err, ErrBadMessage) {
					t.Fatalf("ParseMessage = %+v, %v; want ErrBadMessage", m, err)
				}
				if strings.Contains(err.Error(), "etc") || strings.Contains(err.Error(), "hello") {
					t.Fatalf("error quotes the input: %v", err)
				}
				return
			}
			if err != nil || m.JobID != tc.want {
				t.Fatalf("ParseMessage = %+v, %v; want %s", m, err, tc.want)
			}
		})
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(`{"jobId":"a"}`)
	f.Add(EncodeQueueMessage("b-1"))
	f.Add(`{"jobId":"a"}x`)
	f.Add("e30=")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := ParseMessage(text)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error %v does not wrap ErrBadMessage", err)
			}
			return
		}
		again, err := ParseMessage(EncodeMessage(m.JobID))
		if err != nil || again != m {
			t.Fatalf("round trip of %q: %+v, %v", m.JobID, again, err)
		}
	})
}
