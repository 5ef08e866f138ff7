package crypt

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const jobID = "5f5d2a3e-1b2c-4d5e-8f90-123456789abc"

// Event samples in the shapes of the reference §4 (every value a string, nested JSON escaped).
var (
	sampleProgress = `{"Event":"JobProgress","JobId":"` + jobID + `","Time":"05/20/2025 09:18:48.132",` +
		`"FilesCreated":"12","BytesProcessed":"123456","ObjectsProcessed":"30","TotalExpectedSPObjects":"40",` +
		`"TotalErrors":"1","TotalWarnings":"2","TotalRetryCount":"0","MigrationType":"None","MigrationDirection":"Import",` +
		`"WaitTimeOnSqlThrottlingMilliseconds":"5","TotalDurationInMs":"9000","CpuDurationInMs":"700","SqlDurationInMs":"800",` +
		`"SqlQueryCount":"90","TotalExpectedBytes":"999999",` +
		`"CreatedOrUpdatedFileStatsBySize":"{\"0-1K\":{\"Count\":\"3\",\"TotalSize\":\"1500\",\"TotalDownloadTime\":\"10\",\"TotalCreationTime\":\"20\"}}",` +
		`"ObjectsStatsByType":"{\"SPFile\":{\"Count\":\"12\",\"TotalTime\":\"340\",\"AccumulatedVersions\":\"0\",\"ObjectsWithVersions\":\"0\"},\"SPListItem\":{\"Count\":\"12\",\"TotalTime\":\"120\"}}",` +
		`"CorrelationId":"a1b2c3d4-0000-0000-0000-000000000001"}`
	sampleEndNumbers = `{"Event":"JobEnd","JobId":"` + jobID + `","Time":"05/20/2025 09:20:00.5","TotalErrors":0,` +
		`"FilesCreated":12,"BytesProcessed":1.5e3,"IsShallowCopy":false,"FilesCreatedIrrespectiveOfVersions":"12",` +
		`"ObjectsStatsByType":{"SPFile":{"Count":12,"TotalTime":"340"}},"Extra":null}`
	sampleError = `{"Event":"JobError","JobId":"` + jobID + `","Time":"05/20/2025 09:19:00.001","TotalRetryCount":"0",` +
		`"MigrationType":"None","MigrationDirection":"Import","ObjectType":"File","Url":"Shared Documents/a.txt",` +
		`"Id":"0a0b0c0d-0000-0000-0000-000000000000","ErrorCode":"-2147024816","ErrorType":"Microsoft.SharePoint.SPException",` +
		`"Message":"File is locked","CorrelationId":"c","SourceListItemIntId":"1","TargetListItemIntId":"2"}`
	samplePostponed = `{"Event":"JobPostponed","JobId":"` + jobID + `","Time":"05/20/2025 09:18:00.000",` +
		`"NextPickupTime":"05/20/2025 09:48:00.000","SiteId":"s","DbId":"d","JobsInQueue":"7","TotalRetryCount":"1",` +
		`"MigrationType":"None","MigrationDirection":"Import","CorrelationId":"c"}`
	sampleUnknown = `{"Event":"JobFutureThing","JobId":"` + jobID + `","Time":"05/20/2025 09:18:00.000","Foo":"bar","Nested":{"a":[1,2]}}`
)

func mustParse(t *testing.T, s string) Event {
	t.Helper()
	ev, err := ParseEvent([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestParseEventViews(t *testing.T) {
	at := func(s string) time.Time { tm, _ := time.Parse("2006-01-02 15:04:05.000", s); return tm }
	common := Common{JobID: jobID, Time: at("2025-05-20 09:18:48.132"), MigrationType: "None",
		MigrationDirection: "Import", CorrelationID: "a1b2c3d4-0000-0000-0000-000000000001"}
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"JobProgress strings and nested JSON", sampleProgress, JobProgress{Common: common, Counters: Counters{
			FilesCreated: 12, BytesProcessed: 123456, ObjectsProcessed: 30, TotalExpectedSPObjects: 40, TotalErrors: 1,
			TotalWarnings: 2, WaitTimeOnSQLThrottlingMilliseconds: 5, TotalDurationInMs: 9000, CPUDurationInMs: 700,
			SQLDurationInMs: 800, SQLQueryCount: 90, TotalExpectedBytes: 999999,
			CreatedOrUpdatedFileStatsBySize: map[string]FileSizeStats{"0-1K": {Count: 3, TotalSize: 1500, TotalDownloadTime: 10, TotalCreationTime: 20}},
			ObjectsStatsByType: map[string]ObjectTypeStats{"SPFile": {Count: 12, TotalTime: 340},
				"SPListItem": {Count: 12, TotalTime: 120}},
		}}},
		{"JobEnd numbers not strings", sampleEndNumbers, JobEnd{
			Common: Common{JobID: jobID, Time: at("2025-05-20 09:20:00.500")},
			Counters: Counters{FilesCreated: 12, BytesProcessed: 1500, FilesCreatedIrrespectiveOfVersions: 12,
				ObjectsStatsByType: map[string]ObjectTypeStats{"SPFile": {Count: 12, TotalTime: 340}}},
		}},
		{"JobError", sampleError, JobError{Common: Common{JobID: jobID, Time: at("2025-05-20 09:19:00.001"),
			MigrationType: "None", MigrationDirection: "Import", CorrelationID: "c"},
			ObjectType: "File", URL: "Shared Documents/a.txt", ID: "0a0b0c0d-0000-0000-0000-000000000000",
			ErrorCode: "-2147024816", ErrorType: "Microsoft.SharePoint.SPException", Message: "File is locked",
			SourceListItemIntID: "1", TargetListItemIntID: "2"}},
		{"JobWarning", strings.Replace(sampleError, `"JobError"`, `"JobWarning"`, 1), JobWarning{
			Common: Common{JobID: jobID, Time: at("2025-05-20 09:19:00.001"), MigrationType: "None",
				MigrationDirection: "Import", CorrelationID: "c"},
			ObjectType: "File", URL: "Shared Documents/a.txt", ID: "0a0b0c0d-0000-0000-0000-000000000000",
			ErrorCode: "-2147024816", ErrorType: "Microsoft.SharePoint.SPException", Message: "File is locked",
			SourceListItemIntID: "1", TargetListItemIntID: "2"}},
		{"JobFatalError", `{"Event":"JobFatalError","JobId":"j","Time":"01/02/2025 03:04:05.006","ObjectType":"","Url":"","Id":"","ErrorCode":"-2147213196","Message":"fatal"}`,
			JobFatalError{Common: Common{JobID: "j", Time: at("2025-01-02 03:04:05.006")}, ErrorCode: "-2147213196", Message: "fatal"}},
		{"JobPostponed", samplePostponed, JobPostponed{Common: Common{JobID: jobID, Time: at("2025-05-20 09:18:00.000"),
			TotalRetryCount: 1, MigrationType: "None", MigrationDirection: "Import", CorrelationID: "c"},
			SiteID: "s", DBID: "d", NextPickupTime: at("2025-05-20 09:48:00.000"), JobsInQueue: 7}},
		{"JobQueued", `{"Event":"JobQueued","JobId":"j","Time":"05/20/2025 09:18:48.132","SiteId":"s","DbId":"d"}`,
			JobQueued{Common: Common{JobID: "j", Time: at("2025-05-20 09:18:48.132")}, SiteID: "s", DBID: "d"}},
		{"JobStart", `{"Event":"JobStart","JobId":"j","Time":"05/20/2025 09:18:48.132","SiteId":"s","WebId":"w","DBId":"d","FarmId":"f","ServerId":"v","SubscriptionId":"u"}`,
			JobStart{Common: Common{JobID: "j", Time: at("2025-05-20 09:18:48.132")}, SiteID: "s", WebID: "w", DBID: "d",
				FarmID: "f", ServerID: "v", SubscriptionID: "u"}},
		{"JobLogFileCreate", `{"Event":"JobLogFileCreate","JobId":"j","Time":"05/20/2025 09:18:48.132","FileName":"Import-j-1.log"}`,
			JobLogFileCreate{Common: Common{JobID: "j", Time: at("2025-05-20 09:18:48.132")}, FileName: "Import-j-1.log"}},
		{"JobCancelled", `{"Event":"JobCancelled","JobId":"j","Time":"05/20/2025 09:18:48.132","CancelledByUser":"True"}`,
			JobCancelled{Common: Common{JobID: "j", Time: at("2025-05-20 09:18:48.132")}, CancelledByUser: true}},
		{"JobDeleted", `{"Event":"JobDeleted","JobId":"j","Time":"05/20/2025 09:18:48.132"}`,
			JobDeleted{Common: Common{JobID: "j", Time: at("2025-05-20 09:18:48.132")}}},
		{"FinishManifestFileUpload ISO time", `{"Event":"FinishManifestFileUpload","JobId":"j","Time":"2019-09-03T19:11:33.903","ManifestFileName":"j/ExportSettings.xml"}`,
			FinishManifestFileUpload{Common: Common{JobID: "j", Time: at("2019-09-03 19:11:33.903")}, ManifestFileName: "j/ExportSettings.xml"}},
		{"unknown event", sampleUnknown, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := mustParse(t, tc.in)
			if got := ev.View(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("View() =\n%#v\nwant\n%#v", got, tc.want)
			}
			if !bytes.Equal(ev.Raw, []byte(tc.in)) {
				t.Fatal("Raw differs from the input")
			}
		})
	}
}

func TestEventFieldsKept(t *testing.T) {
	ev := mustParse(t, sampleUnknown)
	if ev.Name != "JobFutureThing" || ev.JobID != jobID || ev.Fields["Foo"] != "bar" || ev.Fields["Nested"] != `{"a":[1,2]}` {
		t.Fatalf("unknown event lost data: %+v", ev)
	}
	ev = mustParse(t, sampleEndNumbers)
	for k, want := range map[string]string{"TotalErrors": "0", "BytesProcessed": "1.5e3", "IsShallowCopy": "false",
		"Extra": "", "ObjectsStatsByType": `{"SPFile":{"Count":12,"TotalTime":"340"}}`} {
		if got, ok := ev.String(k); !ok || got != want {
			t.Errorf("String(%q) = %q, %v; want %q", k, got, ok, want)
		}
	}
	if n, ok := ev.Int("bytesprocessed"); !ok || n != 1500 { // case-insensitive fallback, float form
		t.Errorf("Int(bytesprocessed) = %d, %v", n, ok)
	}
	if _, ok := ev.Int("Missing"); ok {
		t.Error("Int(Missing) reported present")
	}
	if _, ok := ev.Int("IsShallowCopy"); ok {
		t.Error("Int(IsShallowCopy) parsed a boolean")
	}
	var stats map[string]map[string]any
	if err := ev.JSON("ObjectsStatsByType", &stats); err != nil || stats["SPFile"]["TotalTime"] != "340" {
		t.Errorf("JSON(ObjectsStatsByType) = %v, %v", stats, err)
	}
	if err := ev.JSON("Missing", &stats); err == nil {
		t.Error("JSON(Missing) did not fail")
	}
	alias := mustParse(t, `{"Event":"JobEnd","CpuDurationMs":"7","SqlDurationMs":8}`).View().(JobEnd)
	if alias.CPUDurationInMs != 7 || alias.SQLDurationInMs != 8 {
		t.Errorf("CpuDurationMs/SqlDurationMs spellings: %+v", alias.Counters)
	}
	ev = mustParse(t, sampleProgress)
	var nested map[string]map[string]string
	if err := ev.JSON("CreatedOrUpdatedFileStatsBySize", &nested); err != nil || nested["0-1K"]["TotalSize"] != "1500" {
		t.Errorf("nested JSON in a string: %v, %v", nested, err)
	}
}

func TestParseEventErrors(t *testing.T) {
	for _, in := range []string{``, `null`, `[]`, `"x"`, `{"JobId":"j"}`, `{"Event":""}`, `{"Event":"JobEnd"`, "\xff"} {
		_, err := ParseEvent([]byte(in))
		if !errors.Is(err, ErrMalformedEvent) {
			t.Errorf("ParseEvent(%q) = %v, want ErrMalformedEvent", in, err)
		}
	}
	_, err := ParseEvent([]byte(`{"Event":"JobEnd","Message":"top-secret-value",`))
	if err == nil || strings.Contains(err.Error(), "top-secret") {
		t.Errorf("error %v quotes the input", err)
	}
}

func TestEventTime(t *testing.T) {
	want := time.Date(2025, 5, 20, 9, 18, 48, 132e6, time.UTC)
	for _, in := range []string{"05/20/2025 09:18:48.132", "5/20/2025 9:18:48.132", "05/20/2025 09:18:48.1320000",
		"2025-05-20T09:18:48.132", "2025-05-20T09:18:48.132Z", "2025-05-20T11:18:48.132+02:00", " 05/20/2025 09:18:48.132 "} {
		got, err := ParseEventTime(in)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseEventTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if got, err := ParseEventTime("5/20/2025 9:18:48 AM"); err != nil || !got.Equal(want.Truncate(time.Second)) {
		t.Errorf(".NET form: %v, %v", got, err)
	}
	for _, in := range []string{"", "yesterday", "13/45/2025 09:18:48.132"} {
		if _, err := ParseEventTime(in); !errors.Is(err, ErrMalformedEvent) {
			t.Errorf("ParseEventTime(%q) = %v", in, err)
		}
	}
	if got := FormatEventTime(want.In(time.FixedZone("x", 3600))); got != "05/20/2025 09:18:48.132" {
		t.Errorf("FormatEventTime = %q", got)
	}
	if got := FormatEventTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)); got != "01/02/2025 03:04:05.000" {
		t.Errorf("FormatEventTime = %q", got)
	}
	ev := mustParse(t, `{"Event":"JobEnd","Time":"garbage"}`)
	if !ev.Time.IsZero() || ev.TimeRaw != "garbage" {
		t.Errorf("bad Time: %v %q", ev.Time, ev.TimeRaw)
	}
}

func TestMarshalEvent(t *testing.T) {
	tm := time.Date(2025, 5, 20, 9, 18, 48, 132e6, time.UTC)
	b, err := MarshalEvent("JobEnd", jobID, tm, map[string]string{"TotalErrors": "0", "ObjectsStatsByType": `{"SPFile":{"Count":"1"}}`,
		"Event": "ignored", "Message": `quote " and <tag>`})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Event":"JobEnd","JobId":"` + jobID + `","Time":"05/20/2025 09:18:48.132",` +
		`"Message":"quote \" and \u003ctag\u003e","ObjectsStatsByType":"{\"SPFile\":{\"Count\":\"1\"}}","TotalErrors":"0"}`
	if string(b) != want {
		t.Fatalf("MarshalEvent =\n%s\nwant\n%s", b, want)
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	for k, v := range all {
		if _, ok := v.(string); !ok {
			t.Errorf("member %s is %T, want string", k, v)
		}
	}
	ev := mustParse(t, string(b))
	if v, ok := ev.View().(JobEnd); !ok || !v.Time.Equal(tm) || v.ObjectsStatsByType["SPFile"].Count != 1 {
		t.Fatalf("round trip view: %#v", ev.View())
	}
	if _, err := MarshalEvent("", jobID, tm, nil); !errors.Is(err, ErrMalformedEvent) {
		t.Errorf("empty name: %v", err)
	}
	// Event as JSON: Raw when present, else rebuilt.
	out, _ := json.Marshal(ev)
	if string(out) != want {
		t.Errorf("json.Marshal(Event) = %s", out)
	}
	var back Event
	if err := json.Unmarshal(out, &back); err != nil || back.DedupKey() != ev.DedupKey() {
		t.Errorf("json.Unmarshal(Event): %v", err)
	}
	ev.Raw = nil
	out, _ = json.Marshal(ev)
	if string(out) != want {
		t.Errorf("json.Marshal(Event without Raw) = %s", out)
	}
}

func TestDedupKey(t *testing.T) {
	base := mustParse(t, sampleError)
	reordered := `{"Time":"05/20/2025 09:19:00.001","Event":"JobError","JobId":"{` + strings.ToUpper(jobID) + `}",
		"Message":"File is locked","TotalRetryCount":0,"MigrationType":"None","MigrationDirection":"Import","ObjectType":"File",
		"Url":"Shared Documents/a.txt","Id":"0a0b0c0d-0000-0000-0000-000000000000","ErrorCode":-2147024816,
		"ErrorType":"Microsoft.SharePoint.SPException","CorrelationId":"c","SourceListItemIntId":"1","TargetListItemIntId":"2"}`
	tests := []struct {
		name string
		in   string
		same bool
	}{
		{"identical", sampleError, true},
		{"reordered, spaced, numbers unquoted, job id in braces and upper case", reordered, true},
		{"other Url", strings.Replace(sampleError, "a.txt", "b.txt", 1), false},
		{"other time", strings.Replace(sampleError, "09:19:00.001", "09:19:00.002", 1), false},
		{"other event", strings.Replace(sampleError, `"JobError"`, `"JobWarning"`, 1), false},
		{"extra field", strings.Replace(sampleError, `"Message"`, `"X":"1","Message"`, 1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := mustParse(t, tc.in).DedupKey()
			if (k == base.DedupKey()) != tc.same {
				t.Fatalf("key %s vs %s, same=%v", k, base.DedupKey(), tc.same)
			}
		})
	}
	k := base.DedupKey()
	if !strings.HasPrefix(k, jobID+"|20250520T091900.001Z|JobError|") || len(k) > 140 {
		t.Fatalf("key %q", k)
	}
	odd := mustParse(t, `{"Event":"Job/Evil#?\\","JobId":"a/b","Time":"x"}`).DedupKey()
	if strings.ContainsAny(odd, "/\\#?") || !strings.Contains(odd, "|notime|") {
		t.Fatalf("key %q has characters not allowed in a Table key", odd)
	}
}

func TestEnvelope(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	otherKey := bytes.Repeat([]byte{0x43}, 32)
	keys := map[string][]byte{jobID: key, "other": otherKey}
	keyFor := func(id string) ([]byte, error) {
		if k, ok := keys[id]; ok {
			return k, nil
		}
		return nil, errors.New("unknown job")
	}
	sealed, err := SealEvent([]byte(sampleProgress), jobID, key)
	if err != nil {
		t.Fatal(err)
	}
	sealed2, _ := SealEvent([]byte(sampleProgress), jobID, key)
	if sealed == sealed2 {
		t.Fatal("two seals of one event are identical: IV not fresh")
	}
	// The envelope has the documented shape.
	raw, _ := base64.StdEncoding.DecodeString(sealed)
	var env map[string]string
	if err := json.Unmarshal(raw, &env); err != nil || env["Label"] != "Encrypted" || env["JobId"] != jobID ||
		len(env) != 4 || !strings.HasPrefix(string(raw), `{"Label":"Encrypted","JobId":`) {
		t.Fatalf("envelope %s, %v", raw, err)
	}
	if iv, err := ParseIV(env["IV"]); err != nil || len(iv) != 16 {
		t.Fatalf("envelope IV: %v", err)
	}
	noJobID, _ := SealEvent([]byte(`{"Event":"JobQueued","Time":"05/20/2025 09:18:48.132"}`), jobID, key)
	envJSON := func(label, job, iv, content string) string {
		b, _ := json.Marshal(map[string]string{"Label": label, "JobId": job, "IV": iv, "Content": content})
		return base64.StdEncoding.EncodeToString(b)
	}

	tests := []struct {
		name     string
		msg      string
		wantName string
		wantErr  error
	}{
		{"encrypted", sealed, "JobProgress", nil},
		{"encrypted, job id from envelope", noJobID, "JobQueued", nil},
		{"plain base64", PlainMessage([]byte(sampleError)), "JobError", nil},
		{"plain JSON text", sampleError, "JobError", nil},
		{"plain with other Label", PlainMessage([]byte(`{"Label":"Plain","Event":"JobEnd","JobId":"j"}`)), "JobEnd", nil},
		{"plain unknown event", PlainMessage([]byte(sampleUnknown)), "JobFutureThing", nil},
		{"surrounding white space", "\n" + sealed + " ", "JobProgress", nil},
		{"wrong key", envJSON("Encrypted", "other", env["IV"], env["Content"]), "", ErrBadPadding},
		{"unknown job", envJSON("Encrypted", "nobody", env["IV"], env["Content"]), "", nil},
		{"envelope without JobId", envJSON("Encrypted", "", env["IV"], env["Content"]), "", ErrMalformedMessage},
		{"bad IV", envJSON("Encrypted", jobID, "AAAA", env["Content"]), "", ErrIVSize},
		{"bad content base64", envJSON("Encrypted", jobID, env["IV"], "!!"), "", ErrBase64},
		{"truncated content", envJSON("Encrypted", jobID, env["IV"], env["Content"][:20]), "", ErrNotBlockMultiple},
		{"empty content", envJSON("Encrypted", jobID, env["IV"], ""), "", ErrNotBlockMultiple},
		{"not base64", "%%%", "", ErrMalformedMessage},
		{"base64 of non-JSON", base64.StdEncoding.EncodeToString([]byte("hello")), "", ErrMalformedMessage},
		{"base64 of array", base64.StdEncoding.EncodeToString([]byte("[1]")), "", ErrMalformedMessage},
		{"empty", "", "", ErrMalformedMessage},
		{"plain without Event", PlainMessage([]byte(`{"JobId":"j"}`)), "", ErrMalformedEvent},
	}
	secrets := []string{string(key), string(otherKey), hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key),
		hex.EncodeToString(otherKey), base64.StdEncoding.EncodeToString(otherKey), "BytesProcessed"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := OpenMessage(tc.msg, keyFor)
			if tc.wantName != "" {
				if err != nil || ev.Name != tc.wantName {
					t.Fatalf("OpenMessage = %q, %v; want %q", ev.Name, err, tc.wantName)
				}
				if ev.JobID == "" {
					t.Fatal("no JobID")
				}
				return
			}
			if err == nil {
				t.Fatalf("OpenMessage succeeded: %+v", ev)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error %q contains key material or content", err)
				}
			}
		})
	}

	ev, err := OpenMessage(sealed, keyFor)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ev.Raw, []byte(sampleProgress)) || ev.DedupKey() != mustParse(t, sampleProgress).DedupKey() {
		t.Fatal("encrypted event differs from the plain one")
	}
	if _, err := OpenMessage(sealed, nil); err == nil {
		t.Fatal("nil keyFor accepted")
	}
	if _, err := SealEvent([]byte("not json"), jobID, key); !errors.Is(err, ErrMalformedEvent) {
		t.Fatalf("SealEvent(not JSON) = %v", err)
	}
	if _, err := SealEvent([]byte(sampleError), jobID, key[:16]); !errors.Is(err, ErrKeySize) {
		t.Fatalf("SealEvent(short key) = %v", err)
	}
}
