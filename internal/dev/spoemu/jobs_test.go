package spoemu

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/migpkg"
)

var testFiles = []pkgFile{
	{"readme.txt", "hello, world\n"},
	{"Reports/2024/q1.csv", strings.Repeat("a,b,c\n", 1000)},
	{"empty.bin", ""},
	{"exact16.bin", "0123456789abcdef"},
}

func totalBytes(files []pkgFile) int64 {
	var n int64
	for _, f := range files {
		n += int64(len(f.content))
	}
	return n
}

var timeRE = regexp.MustCompile(`^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}\.\d{3}$`)

// checkShape checks every event: a JSON object of strings, JobId, Time in SharePoint's format.
func checkShape(t *testing.T, id string, evs []crypt.Event) {
	t.Helper()
	for _, ev := range evs {
		var m map[string]any
		if err := json.Unmarshal(ev.Raw, &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			if _, ok := v.(string); !ok {
				t.Errorf("%s.%s is %T, want a string: %s", ev.Name, k, v, ev.Raw)
			}
		}
		if ev.JobID != id {
			t.Errorf("%s JobId %q, want %q", ev.Name, ev.JobID, id)
		}
		if !timeRE.MatchString(ev.TimeRaw) {
			t.Errorf("%s Time %q is not MM/dd/yyyy HH:mm:ss.fff", ev.Name, ev.TimeRaw)
		}
	}
}

func TestValidEncryptedPackageEndsWithJobEnd(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.ProgressEvery = 2 })
	c := f.provision()
	f.stage(c, testFiles, uploadOptions{})
	id := f.createJob(c, "")
	info := f.wait(id)
	if info.Outcome != OutcomeCompleted || info.State != StateNone {
		t.Fatalf("job %+v, events %v", info, f.e.Events(id))
	}
	evs := f.progress(id)
	checkShape(t, id, evs)
	got := names(evs)
	if got[0] != crypt.EventJobQueued || got[1] != crypt.EventJobLogFileCreate || got[2] != crypt.EventJobStart ||
		got[len(got)-1] != crypt.EventJobEnd {
		t.Fatalf("event sequence %v", got)
	}
	if len(find(evs, crypt.EventJobProgress)) == 0 {
		t.Errorf("no JobProgress in %v", got)
	}
	if n := len(find(evs, crypt.EventJobError)) + len(find(evs, crypt.EventJobWarning)) + len(find(evs, crypt.EventJobFatalError)); n != 0 {
		t.Fatalf("unexpected errors/warnings: %v", f.e.Events(id))
	}
	end := evs[len(evs)-1]
	want := map[string]string{
		"FilesCreated":                       strconv.Itoa(len(testFiles)),
		"FilesCreatedIrrespectiveOfVersions": strconv.Itoa(len(testFiles)),
		"BytesProcessed":                     strconv.FormatInt(totalBytes(testFiles), 10),
		"TotalExpectedBytes":                 strconv.FormatInt(totalBytes(testFiles), 10),
		"TotalErrors":                        "0",
		"TotalWarnings":                      "0",
		"MigrationType":                      "None",
		"MigrationDirection":                 "Import",
	}
	for k, v := range want {
		if got := field(t, end, k); got != v {
			t.Errorf("JobEnd %s = %q, want %q", k, got, v)
		}
	}
	objs := field(t, end, "ObjectsProcessed")
	if objs != field(t, end, "TotalExpectedSPObjects") || objs == "0" {
		t.Errorf("ObjectsProcessed %s, TotalExpectedSPObjects %s", objs, field(t, end, "TotalExpectedSPObjects"))
	}
	var byType map[string]crypt.ObjectTypeStats
	if err := end.JSON("ObjectsStatsByType", &byType); err != nil || byType["SPFile"].Count != int64(len(testFiles)) {
		t.Errorf("ObjectsStatsByType %v (%v)", byType, err)
	}
	if fn := field(t, evs[1], "FileName"); fn != "Import-"+id+"-1.log" {
		t.Errorf("JobLogFileCreate FileName %q", fn)
	}
	if field(t, evs[2], "WebId") != f.e.WebID(f.site) {
		t.Errorf("JobStart WebId %q", field(t, evs[2], "WebId"))
	}

	// The imported files, where a person can look at them.
	siteDir := filepath.Join(f.e.opts.DataDir, "sites", strings.TrimPrefix(f.site, "/sites/"))
	for _, pf := range testFiles {
		b, err := os.ReadFile(filepath.Join(siteDir, "Shared Documents", filepath.FromSlash(pf.path)))
		if err != nil || string(b) != pf.content {
			t.Errorf("imported %s: %v (%d bytes)", pf.path, err, len(b))
		}
	}
	var sum jobSummary
	b, err := os.ReadFile(filepath.Join(f.e.opts.DataDir, "jobs", id+".json"))
	if err != nil || json.Unmarshal(b, &sum) != nil || sum.Outcome != OutcomeCompleted || sum.Counters.FilesCreated != int64(len(testFiles)) {
		t.Errorf("summary %s: %v", b, err)
	}

	// The log blob: in the manifest container, IV in the metadata, readable with the job key only.
	logText := readLog(t, f, c, "Import-"+id+"-1.log", c.key(t))
	if !strings.Contains(logText, "Shared Documents/readme.txt") || !strings.Contains(logText, "Information") {
		t.Errorf("log:\n%s", logText)
	}
	if _, err := readLogErr(f, c, "Import-"+id+"-1.err", c.key(t)); err == nil {
		t.Error("an .err log was written for a job without errors")
	}
}

// readLog downloads a log blob through the manifest container SAS and decrypts it.
func readLog(t *testing.T, f *fixture, c containers, name string, key []byte) string {
	t.Helper()
	s, err := readLogErr(f, c, name, key)
	if err != nil {
		t.Fatalf("log %s: %v", name, err)
	}
	return s
}

func readLogErr(f *fixture, c containers, name string, key []byte) (string, error) {
	cc, err := container.NewClientWithNoCredential(c.MetadataContainerUri, &container.ClientOptions{ClientOptions: f.clientOpts()})
	if err != nil {
		return "", err
	}
	resp, err := cc.NewBlobClient(name).DownloadStream(context.Background(), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	iv, err := crypt.ParseIV(metaValue(resp.Metadata, "IV"))
	if err != nil {
		return "", err
	}
	dr, err := crypt.NewDecryptReader(resp.Body, key, iv)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(dr)
	return string(b), err
}

func TestUndecryptableFileIsOneJobError(t *testing.T) {
	f := newFixture(t, nil)
	c := f.provision()
	other := bytes.Repeat([]byte{7}, 32)
	bo := f.stage(c, testFiles, uploadOptions{keyFor: func(name string, k migpkg.Kind) []byte {
		if k == migpkg.Data && strings.HasSuffix(name, ".dat") && name == fileValueOf(f, "Reports/2024/q1.csv") {
			return other
		}
		return nil
	}})
	_ = bo
	id := f.createJob(c, "")
	info := f.wait(id)
	evs := f.progress(id)
	errs := find(evs, crypt.EventJobError)
	if len(errs) != 1 {
		t.Fatalf("%d JobError, want 1: %v", len(errs), f.e.Events(id))
	}
	if got := field(t, errs[0], "Url"); got != "Shared Documents/Reports/2024/q1.csv" {
		t.Errorf("JobError Url %q", got)
	}
	if got := field(t, errs[0], "ErrorType"); got != typeCrypto {
		t.Errorf("JobError ErrorType %q", got)
	}
	if field(t, errs[0], "ObjectType") != "File" || field(t, errs[0], "ErrorCode") == "" {
		t.Errorf("JobError %s", errs[0].Raw)
	}
	end := find(evs, crypt.EventJobEnd)
	if len(end) != 1 || field(t, end[0], "TotalErrors") != "1" || field(t, end[0], "FilesCreated") != strconv.Itoa(len(testFiles)-1) {
		t.Fatalf("JobEnd %v", f.e.Events(id))
	}
	if info.Outcome != OutcomeCompletedWithErrors {
		t.Errorf("outcome %q", info.Outcome)
	}
	errLog := readLog(t, f, c, "Import-"+id+"-1.err", c.key(t))
	if !strings.Contains(errLog, "q1.csv") || !strings.Contains(errLog, "Error") {
		t.Errorf(".err log:\n%s", errLog)
	}
}

// fileValueOf is the FileValue the Builder gives a file (its id + ".dat").
func fileValueOf(f *fixture, path string) string {
	b := migpkg.NewBuilder(migpkg.BuilderOptions{SiteURL: f.url, WebID: f.e.WebID(f.site)})
	_ = b.AddFile(migpkg.BuildFile{Path: path, Size: 1, Content: strings.NewReader("x")})
	var buf bytes.Buffer
	_ = b.Write(&buf)
	pkg, _ := migpkg.Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()), migpkg.Options{})
	_ = pkg.Validate(context.Background())
	items, _ := pkg.Items()
	for _, it := range items {
		if it.Container == migpkg.Data {
			return it.Name
		}
	}
	return ""
}

func TestBlobsWithoutSnapshots(t *testing.T) {
	t.Run("content items fail, manifests fall back to the base blob", func(t *testing.T) {
		f := newFixture(t, nil)
		c := f.provision()
		f.stage(c, testFiles, uploadOptions{noSnapshot: func(string, migpkg.Kind) bool { return true }})
		id := f.createJob(c, "")
		f.wait(id)
		evs := f.progress(id)
		errs := find(evs, crypt.EventJobError)
		if len(errs) != len(testFiles) {
			t.Fatalf("%d JobError, want %d: %v", len(errs), len(testFiles), f.e.Events(id))
		}
		for _, e := range errs {
			if !strings.Contains(field(t, e, "Message"), "no snapshot") {
				t.Errorf("JobError %s", e.Raw)
			}
		}
		end := find(evs, crypt.EventJobEnd)
		if len(end) != 1 || field(t, end[0], "TotalErrors") != strconv.Itoa(len(testFiles)) || field(t, end[0], "FilesCreated") != "0" {
			t.Fatalf("JobEnd %v", f.e.Events(id))
		}
	})
	t.Run("the latest snapshot is imported, not the base blob", func(t *testing.T) {
		f := newFixture(t, nil)
		c := f.provision()
		f.stage(c, testFiles[:1], uploadOptions{afterSnap: func(name string, k migpkg.Kind) []byte {
			if k == migpkg.Data {
				return []byte("changed after the snapshot")
			}
			return nil
		}})
		id := f.createJob(c, "")
		if info := f.wait(id); info.Outcome != OutcomeCompleted {
			t.Fatalf("%+v %v", info, f.e.Events(id))
		}
		b, err := os.ReadFile(filepath.Join(f.e.opts.DataDir, "sites", strings.TrimPrefix(f.site, "/sites/"), "Shared Documents", "readme.txt"))
		if err != nil || string(b) != testFiles[0].content {
			t.Fatalf("imported %q, %v", b, err)
		}
	})
	t.Run("RequireManifestSnapshots makes an unsnapshotted manifest fatal", func(t *testing.T) {
		f := newFixture(t, func(o *Options) { o.RequireManifestSnapshots = true })
		c := f.provision()
		f.stage(c, testFiles, uploadOptions{noSnapshot: func(_ string, k migpkg.Kind) bool { return k == migpkg.Metadata }})
		id := f.createJob(c, "")
		if info := f.wait(id); info.Outcome != OutcomeFailed {
			t.Fatalf("%+v", info)
		}
		evs := f.progress(id)
		if got := names(evs); got[len(got)-1] != crypt.EventJobFatalError {
			t.Fatalf("events %v", got)
		}
	})
}

func TestMissingFileValueBlobIsJobError(t *testing.T) {
	f := newFixture(t, nil)
	c := f.provision()
	missing := fileValueOf(f, "readme.txt")
	f.stage(c, testFiles, uploadOptions{skip: func(name string, k migpkg.Kind) bool { return k == migpkg.Data && name == missing }})
	id := f.createJob(c, "")
	f.wait(id)
	evs := f.progress(id)
	errs := find(evs, crypt.EventJobError)
	if len(errs) != 1 || field(t, errs[0], "ErrorType") != typeFileNotFound || field(t, errs[0], "Url") != "Shared Documents/readme.txt" {
		t.Fatalf("JobError %v", f.e.Events(id))
	}
	end := find(evs, crypt.EventJobEnd)
	if len(end) != 1 || field(t, end[0], "TotalErrors") != "1" {
		t.Fatalf("JobEnd %v", f.e.Events(id))
	}
}

func TestFatalPackages(t *testing.T) {
	cases := []struct {
		name     string
		uo       func(f *fixture) uploadOptions
		wantType string
	}{
		{"malformed Manifest.xml", func(*fixture) uploadOptions {
			return uploadOptions{replace: map[string]string{migpkg.FileManifest: `<?xml version="1.0"?><SPObjects xmlns="urn:deployment-manifest-schema"><SPObject Id="x">`}}
		}, typeXML},
		{"manifests encrypted with another key", func(*fixture) uploadOptions {
			return uploadOptions{keyFor: func(_ string, k migpkg.Kind) []byte {
				if k == migpkg.Metadata {
					return bytes.Repeat([]byte{9}, 32)
				}
				return nil
			}}
		}, typeCrypto},
		{"missing ExportSettings.xml", func(*fixture) uploadOptions {
			return uploadOptions{skip: func(name string, _ migpkg.Kind) bool { return name == migpkg.FileExportSettings }}
		}, typeFileNotFound},
		{"empty SiteUrl", func(*fixture) uploadOptions {
			return uploadOptions{replace: map[string]string{migpkg.FileExportSettings: `<ExportSettings xmlns="urn:deployment-exportsettings-schema" SiteUrl="" SourceType="FileShare"/>`}}
		}, "System.UriFormatException"},
		{"User without SystemId", func(*fixture) uploadOptions {
			return uploadOptions{replace: map[string]string{migpkg.FileUserGroup: `<UserGroupMap xmlns="urn:deployment-usergroupmap-schema"><Users><User Id="1" Name="a" Login="i:0#.f|membership|a@b.c"/></Users><Groups/></UserGroupMap>`}}
		}, "System.NullReferenceException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			c := f.provision()
			f.stage(c, testFiles[:2], tc.uo(f))
			id := f.createJob(c, "")
			info := f.wait(id)
			evs := f.progress(id)
			got := names(evs)
			if info.Outcome != OutcomeFailed || got[len(got)-1] != crypt.EventJobFatalError || len(find(evs, crypt.EventJobEnd)) != 0 {
				t.Fatalf("outcome %q, events %v", info.Outcome, got)
			}
			fatal := evs[len(evs)-1]
			if field(t, fatal, "ErrorType") != tc.wantType || field(t, fatal, "ObjectType") != "" || field(t, fatal, "Url") != "" {
				t.Fatalf("JobFatalError %s", fatal.Raw)
			}
			checkShape(t, id, evs)
		})
	}
}

func TestJobEndAfterFatal(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.JobEndAfterFatal = true })
	f.e.SetFaults(f.site, Faults{Fatal: &Fatal{Count: 1, Message: "boom"}})
	c := f.provision()
	f.stage(c, testFiles[:1], uploadOptions{})
	id := f.createJob(c, "")
	f.wait(id)
	got := names(f.progress(id))
	if got[len(got)-2] != crypt.EventJobFatalError || got[len(got)-1] != crypt.EventJobEnd {
		t.Fatalf("events %v", got)
	}
	// The fault was consumed: the next job succeeds.
	c2 := f.provision()
	f.stage(c2, testFiles[:1], uploadOptions{})
	if info := f.wait(f.createJob(c2, "")); info.Outcome != OutcomeCompleted {
		t.Fatalf("second job %+v", info)
	}
}

func TestItemErrorFault(t *testing.T) {
	f := newFixture(t, nil)
	f.e.SetFaults(f.site, Faults{ItemError: &ItemError{Match: "Reports/", Message: "The file is locked"}})
	c := f.provision()
	f.stage(c, testFiles, uploadOptions{})
	id := f.createJob(c, "")
	info := f.wait(id)
	if info.Outcome != OutcomeCompletedWithErrors || info.Counters.TotalErrors != 1 || info.Counters.FilesCreated != int64(len(testFiles)-1) {
		t.Fatalf("job %+v", info)
	}
	var jobErrors []crypt.Event
	for _, ev := range f.progress(id) {
		if ev.Name == crypt.EventJobError {
			jobErrors = append(jobErrors, ev)
		}
	}
	if len(jobErrors) != 1 {
		t.Fatalf("%d JobErrors, want 1", len(jobErrors))
	}
	if msg, _ := jobErrors[0].String("Message"); msg != "The file is locked" {
		t.Fatalf("JobError %s", jobErrors[0].Raw)
	}
	if u, _ := jobErrors[0].String("Url"); !strings.Contains(u, "Reports/2024/q1.csv") {
		t.Fatalf("JobError names %q", u)
	}
}

func TestCreateMigrationJobRejections(t *testing.T) {
	f := newFixture(t, nil)
	c := f.provision()
	c2 := f.provision()
	wrongKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	shortKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 16))
	tamper := func(uri, k, v string) string {
		u, _ := url.Parse(uri)
		q := u.Query()
		q.Set(k, v)
		u.RawQuery = q.Encode()
		return u.String()
	}
	cases := []struct {
		name     string
		method   string
		body     func() map[string]any
		wantCode string
	}{
		{"wrong key of the right length", "CreateMigrationJobEncrypted", func() map[string]any {
			return f.createBody(c, "", wrongKey)
		}, codeArgumentGeneric},
		{"another provisioning's key", "CreateMigrationJobEncrypted", func() map[string]any {
			return f.createBody(c, "", c2.EncryptionKey)
		}, codeArgumentGeneric},
		{"16-byte key", "CreateMigrationJobEncrypted", func() map[string]any {
			return f.createBody(c, "", shortKey)
		}, codeArgument},
		{"no key", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			delete(b, "options")
			return b
		}, "-2147024809, System.ArgumentNullException"},
		{"same container twice", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["azureContainerManifestUri"] = c.DataContainerUri
			return b
		}, codeArgumentGeneric},
		{"another web", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["gWebId"] = newUUID()
			return b
		}, codeArgument},
		{"not a GUID", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["gWebId"] = "web"
			return b
		}, codeInvalidQuery},
		{"SAS without Read", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["azureContainerSourceUri"] = tamper(c.DataContainerUri, "sp", "w")
			return b
		}, codeArgumentGeneric},
		{"SAS expired", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["azureContainerSourceUri"] = tamper(c.DataContainerUri, "se", "2020-01-01T00:00:00Z")
			return b
		}, codeArgumentGeneric},
		{"SAS not yet valid", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["azureContainerSourceUri"] = tamper(c.DataContainerUri, "st", "2999-01-01T00:00:00Z")
			return b
		}, codeArgumentGeneric},
		{"SAS signature altered", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["azureContainerSourceUri"] = tamper(c.DataContainerUri, "sig", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32)))
			return b
		}, codeArgumentGeneric},
		{"unknown parameter", "CreateMigrationJobEncrypted", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			b["priority"] = 1
			return b
		}, codeInvalidQuery},
		{"unencrypted job on provisioned containers", "CreateMigrationJob", func() map[string]any {
			b := f.createBody(c, "", c.EncryptionKey)
			delete(b, "options")
			return b
		}, codeInvalidOperation},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, accept := range []string{acceptNoMeta, acceptVerbose} {
				status, _, b := f.do(http.MethodPost, "/_api/site/"+tc.method, accept, tc.body())
				if status != http.StatusBadRequest {
					t.Fatalf("%s: status %d: %s", accept, status, b)
				}
				code, msg := spErrorOf(t, b)
				if code != tc.wantCode || msg == "" {
					t.Fatalf("%s: error %q %q", accept, code, msg)
				}
				if strings.Contains(string(b), "sig=") || strings.Contains(string(b), c.EncryptionKey) {
					t.Fatalf("error body leaks a secret: %s", b)
				}
			}
		})
	}
	// Nothing was created.
	f.e.mu.Lock()
	n := len(f.e.jobs)
	f.e.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d jobs created by rejected calls", n)
	}
	// Expired SAS straight from provisioning.
	g := newFixture(t, func(o *Options) { o.SASValidity = -1 })
	ce := g.provision()
	status, _, b := g.do(http.MethodPost, "/_api/site/CreateMigrationJobEncrypted", acceptNoMeta, g.createBody(ce, "", ce.EncryptionKey))
	if code, msg := spErrorOf(t, b); status != http.StatusBadRequest || !strings.Contains(msg, "expired") {
		t.Fatalf("expired provisioned SAS: %d %s %s", status, code, msg)
	}
}

func TestProvisioningShapes(t *testing.T) {
	f := newFixture(t, nil)
	a, b := f.provision(), f.provision()
	if a.DataContainerUri == b.DataContainerUri || a.DataContainerUri == a.MetadataContainerUri || a.EncryptionKey == b.EncryptionKey {
		t.Fatal("provisioning reused containers or keys")
	}
	if _, _, raw := f.do(http.MethodPost, "/_api/site/ProvisionMigrationContainers", acceptNoMeta, nil); bytes.Contains(raw, []byte(`\u0026`)) || !bytes.Contains(raw, []byte("&sig=")) {
		t.Fatalf("SAS query strings are not written as SharePoint does: %s", redact(string(raw)))
	}
	if len(a.EncryptionKey) != 44 {
		t.Fatalf("key %d base64 chars", len(a.EncryptionKey))
	}
	nameRE := regexp.MustCompile(`/0-\d+-\d{8}-[0-9a-f]{32}$`)
	for _, uri := range []string{a.DataContainerUri, a.MetadataContainerUri} {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if q.Get("sp") != "rw" || q.Get("sr") != "c" || q.Get("spr") != "https" || u.Scheme != "https" || !nameRE.MatchString(u.Path) {
			t.Fatalf("container URI %s", redact(uri))
		}
		st, err1 := parseSASTime(q.Get("st"))
		se, err2 := parseSASTime(q.Get("se"))
		if err1 != nil || err2 != nil || se.Sub(st) < 71*60*60e9 {
			t.Fatalf("SAS window %s..%s", q.Get("st"), q.Get("se"))
		}
	}
	// No List in the SAS: a client cannot list, but can write and read back.
	cc, _ := container.NewClientWithNoCredential(a.DataContainerUri, &container.ClientOptions{ClientOptions: f.clientOpts()})
	if _, err := cc.NewListBlobsFlatPager(nil).NextPage(context.Background()); err == nil {
		t.Fatal("listing through the provisioned SAS succeeded")
	}
	// The queue: one per site, reusable; SAS rap.
	q1, q2 := f.provisionQueue(), f.provisionQueue()
	u1, _ := url.Parse(q1)
	u2, _ := url.Parse(q2)
	if u1.Path != u2.Path || u1.Query().Get("sp") != "rap" || u1.Query().Get("spr") != "https" {
		t.Fatalf("queue URIs %s %s", redact(q1), redact(q2))
	}
}

func TestReportQueueMessagesNeedTheJobKey(t *testing.T) {
	f := newFixture(t, nil)
	c := f.provision()
	q := f.provisionQueue()
	f.stage(c, testFiles[:2], uploadOptions{})
	id := f.createJob(c, q)
	f.wait(id)
	msgs := f.queueMessages(q)
	logged := f.e.Events(id)
	if len(msgs) != len(logged) {
		t.Fatalf("%d queue messages, %d events", len(msgs), len(logged))
	}
	key := c.key(t)
	for i, m := range msgs {
		raw, err := base64.StdEncoding.DecodeString(m)
		if err != nil {
			t.Fatalf("message %d is not base64: %v", i, err)
		}
		var env crypt.Envelope
		if err := json.Unmarshal(raw, &env); err != nil || env.Label != "Encrypted" || env.JobID != id || env.IV == "" {
			t.Fatalf("message %d envelope %s", i, raw)
		}
		if strings.Contains(string(raw), "JobQueued") || strings.Contains(string(raw), "FilesCreated") {
			t.Fatalf("message %d is not encrypted: %s", i, raw)
		}
		ev, err := crypt.OpenMessage(m, func(string) ([]byte, error) { return key, nil })
		if err != nil {
			t.Fatalf("message %d with the job key: %v", i, err)
		}
		if string(ev.Raw) != logged[i] {
			t.Fatalf("message %d = %s, progress log has %s", i, ev.Raw, logged[i])
		}
		wrong := bytes.Repeat([]byte{3}, 32)
		if _, err := crypt.OpenMessage(m, func(string) ([]byte, error) { return wrong, nil }); err == nil {
			t.Fatalf("message %d opened with a wrong key", i)
		}
	}
}

func TestProgressPagingAndTokens(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.ProgressPageSize = 2; o.ProgressEvery = 1 })
	c := f.provision()
	f.stage(c, testFiles, uploadOptions{})
	id := f.createJob(c, "")
	f.wait(id)
	all := f.e.Events(id)
	if len(all) < 6 {
		t.Fatalf("only %d events", len(all))
	}
	type page struct {
		Logs      []string
		NextToken string
	}
	var got []string
	tok := "0"
	for {
		var p page
		f.ok(http.MethodGet, "/_api/site/GetMigrationJobProgress(jobId='"+id+"',nextToken="+tok+")", nil, &p)
		if len(p.Logs) > 2 {
			t.Fatalf("page of %d events", len(p.Logs))
		}
		got = append(got, p.Logs...)
		if p.NextToken == tok {
			if len(p.Logs) != 0 {
				t.Fatal("same token with new events")
			}
			break
		}
		tok = p.NextToken
	}
	if strings.Join(got, "\n") != strings.Join(all, "\n") {
		t.Fatalf("paged events differ:\n%v\n%v", got, all)
	}
	// Stable: the same request gives the same answer.
	var p1, p2 page
	f.ok(http.MethodGet, "/_api/site/GetMigrationJobProgress(jobId=guid'"+id+"',nextToken='"+tok+"')", nil, &p1)
	f.ok(http.MethodGet, "/_api/site/GetMigrationJobProgress(jobId=guid'"+strings.ToUpper(id)+"',nextToken='"+tok+"')", nil, &p2)
	if p1.NextToken != tok || p2.NextToken != tok || len(p1.Logs)+len(p2.Logs) != 0 {
		t.Fatalf("settled token answers %+v %+v", p1, p2)
	}
	// Other parameter spellings: POST body, positional, aliases.
	var p3 page
	f.ok(http.MethodPost, "/_api/site/GetMigrationJobProgress", map[string]any{"jobId": id, "nextToken": 2}, &p3)
	if p3.NextToken != "4" || len(p3.Logs) != 2 || p3.Logs[0] != all[2] {
		t.Fatalf("POST body page %+v", p3)
	}
	var p4 page
	f.ok(http.MethodGet, "/_api/site/GetMigrationJobProgress('"+id+"','1')", nil, &p4)
	if p4.NextToken != "3" {
		t.Fatalf("positional page %+v", p4)
	}
	var p5 page
	f.ok(http.MethodGet, "/_api/site/GetMigrationJobProgress(jobId=@j,nextToken=@t)?@j=guid'"+id+"'&@t='0'", nil, &p5)
	if p5.NextToken != "2" {
		t.Fatalf("alias page %+v", p5)
	}
	// Verbose shape of the documentation.
	status, _, b := f.do(http.MethodGet, "/_api/site/GetMigrationJobProgress(jobId='"+id+"',nextToken=0)", acceptVerbose, nil)
	var v struct {
		D struct {
			GetMigrationJobProgress struct {
				Logs struct {
					Metadata struct{ Type string } `json:"__metadata"`
					Results  []string              `json:"results"`
				}
				NextToken string
				Metadata  struct{ Type string } `json:"__metadata"`
			}
		} `json:"d"`
	}
	if err := json.Unmarshal(b, &v); status != 200 || err != nil || v.D.GetMigrationJobProgress.NextToken != "2" ||
		v.D.GetMigrationJobProgress.Logs.Metadata.Type != "Collection(Edm.String)" ||
		v.D.GetMigrationJobProgress.Metadata.Type != "SP.MigrationJobProgress" || len(v.D.GetMigrationJobProgress.Logs.Results) != 2 {
		t.Fatalf("verbose progress %d %s", status, b)
	}
	// Unknown job: HTTP 500, -2147213145.
	status, _, b = f.do(http.MethodGet, "/_api/site/GetMigrationJobProgress(jobId=guid'"+newUUID()+"',nextToken='0')", acceptVerbose, nil)
	if code, _ := spErrorOf(t, b); status != 500 || code != codeJobNotFound {
		t.Fatalf("unknown job: %d %s", status, b)
	}
}

func TestProgressOfExpiredJob(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.JobRetention = 1 })
	c := f.provision()
	f.stage(c, testFiles[:1], uploadOptions{})
	id := f.createJob(c, "")
	f.wait(id)
	status, _, b := f.do(http.MethodGet, "/_api/site/GetMigrationJobProgress(jobId='"+id+"',nextToken='0')", acceptNoMeta, nil)
	if code, msg := spErrorOf(t, b); status != 500 || code != codeJobExpired || msg != "Job status expired" {
		t.Fatalf("expired job: %d %s", status, b)
	}
}

// gate holds jobs at each phase until the test releases them.
type gate struct {
	at      chan Phase
	release chan struct{}
}

func newGate() *gate { return &gate{at: make(chan Phase), release: make(chan struct{})} }

func (g *gate) fn(ctx context.Context, _ string, ph Phase) error {
	select {
	case g.at <- ph:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fixture) status(id string) int {
	f.t.Helper()
	var v struct{ Value int }
	f.ok(http.MethodPost, "/_api/site/GetMigrationJobStatus", map[string]string{"id": id}, &v)
	return v.Value
}

func TestStatusQueuedProcessingNone(t *testing.T) {
	g := newGate()
	f := newFixture(t, func(o *Options) { o.Gate = g.fn })
	c := f.provision()
	f.stage(c, testFiles[:1], uploadOptions{})
	id := f.createJob(c, "")
	if ph := <-g.at; ph != PhaseQueued {
		t.Fatalf("phase %s", ph)
	}
	if s := f.status(id); s != StateQueued {
		t.Fatalf("status %d, want 2", s)
	}
	var list struct {
		Value []struct {
			JobId    string
			JobState int
		}
	}
	f.ok(http.MethodPost, "/_api/site/GetMigrationStatus", nil, &list)
	if len(list.Value) != 1 || list.Value[0].JobId != id || list.Value[0].JobState != 2 {
		t.Fatalf("GetMigrationStatus %+v", list)
	}
	g.release <- struct{}{}
	if ph := <-g.at; ph != PhaseProcessing {
		t.Fatalf("phase %s", ph)
	}
	if s := f.status(id); s != StateProcessing {
		t.Fatalf("status %d, want 4", s)
	}
	// Not deletable while processing.
	var del struct{ Value bool }
	f.ok(http.MethodPost, "/_api/site/DeleteMigrationJob", map[string]string{"id": id}, &del)
	if del.Value {
		t.Fatal("DeleteMigrationJob of a processing job answered true")
	}
	g.release <- struct{}{}
	f.wait(id)
	if s := f.status(id); s != StateNone {
		t.Fatalf("status %d, want 0", s)
	}
	if s := f.status(newUUID()); s != StateNone {
		t.Fatalf("unknown job status %d", s)
	}
	// Verbose primitive shape.
	_, _, b := f.do(http.MethodPost, "/_api/site/GetMigrationJobStatus", acceptVerbose, map[string]string{"id": id})
	if string(b) != `{"d":{"GetMigrationJobStatus":0}}` {
		t.Fatalf("verbose status %s", b)
	}
}

func TestDeleteQueuedJob(t *testing.T) {
	g := newGate()
	f := newFixture(t, func(o *Options) { o.Gate = g.fn })
	c := f.provision()
	q := f.provisionQueue()
	id := f.createJob(c, q)
	<-g.at
	var del struct{ Value bool }
	f.ok(http.MethodPost, "/_api/site/DeleteMigrationJob", map[string]string{"id": id}, &del)
	if !del.Value {
		t.Fatal("DeleteMigrationJob of a queued job answered false")
	}
	info := f.wait(id)
	if info.Outcome != OutcomeCancelled || f.status(id) != StateNone {
		t.Fatalf("%+v", info)
	}
	got := names(f.progress(id))
	if strings.Join(got, ",") != "JobQueued,JobCancelled,JobDeleted" {
		t.Fatalf("events %v", got)
	}
	if n := len(f.queueMessages(q)); n != 3 {
		t.Fatalf("%d queue messages", n)
	}
	f.ok(http.MethodPost, "/_api/site/DeleteMigrationJob", map[string]string{"id": id}, &del)
	if del.Value {
		t.Fatal("second delete answered true")
	}
}

func TestPostponeFault(t *testing.T) {
	f := newFixture(t, nil)
	f.e.SetFaults(f.site, Faults{Postpone: &Postpone{Count: 2, Delay: Duration(1), Reason: "JobInQueue:DBMaint"}})
	c := f.provision()
	f.stage(c, testFiles[:1], uploadOptions{})
	id := f.createJob(c, "")
	f.wait(id)
	evs := f.progress(id)
	got := names(evs)
	if got[1] != crypt.EventJobPostponed || got[2] != crypt.EventJobPostponed || got[len(got)-1] != crypt.EventJobEnd {
		t.Fatalf("events %v", got)
	}
	p := evs[1]
	if field(t, p, "Reason") != "JobInQueue:DBMaint" || !timeRE.MatchString(field(t, p, "NextPickupTime")) || field(t, p, "JobsInQueue") == "" {
		t.Fatalf("JobPostponed %s", p.Raw)
	}
}

func TestUnencryptedJobOnUserContainers(t *testing.T) {
	f := newFixture(t, nil)
	// The customer's own containers (here in the same account), SAS rl and rlw, and a queue rau.
	dataName, metaName := userContainerName(t, f), userContainerName(t, f)
	data, meta := userContainerSAS(t, dataName, "rl"), userContainerSAS(t, metaName, "rlw")
	qName := userQueueName(t, f)
	q := userQueueSAS(t, qName, "rau")
	c := containers{DataContainerUri: data, MetadataContainerUri: meta}
	// Stage unencrypted.
	b := migpkg.NewBuilder(migpkg.BuilderOptions{SiteURL: f.url, WebID: f.e.WebID(f.site)})
	_ = b.AddFile(migpkg.BuildFile{Path: "plain.txt", Size: 5, Content: strings.NewReader("plain")})
	var buf bytes.Buffer
	if err := b.Write(&buf); err != nil {
		t.Fatal(err)
	}
	pkg, _ := migpkg.Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()), migpkg.Options{})
	if err := pkg.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	items, _ := pkg.Items()
	for _, it := range items {
		uri := userContainerSAS(t, dataName, "rw") // the customer's own write access
		if it.Container == migpkg.Metadata {
			uri = userContainerSAS(t, metaName, "rw")
		}
		cc, _ := container.NewClientWithNoCredential(uri, &container.ClientOptions{ClientOptions: f.clientOpts()})
		rc, _ := it.Open()
		bb := cc.NewBlockBlobClient(it.Name)
		if _, err := bb.UploadStream(context.Background(), rc, nil); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if _, err := bb.CreateSnapshot(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	body := f.createBody(c, q, "")
	delete(body, "options")
	var id struct{ Value string }
	f.ok(http.MethodPost, "/_api/site/CreateMigrationJob", body, &id)
	info := f.wait(id.Value)
	if info.Outcome != OutcomeCompleted || info.Counters.FilesCreated != 1 {
		t.Fatalf("%+v %v", info, f.e.Events(id.Value))
	}
	msgs := f.queueMessages(userQueueSAS(t, qName, "rp")) // the customer's own access
	if len(msgs) == 0 {
		t.Fatal("no queue messages")
	}
	ev, err := crypt.OpenMessage(msgs[0], nil)
	if err != nil || ev.Name != crypt.EventJobQueued {
		t.Fatalf("plain message: %v %+v", err, ev)
	}
	// A user queue with extra rights is refused ("cannot connect the Queue").
	body["azureQueueReportUri"] = userQueue(t, f, "raup")
	status, _, eb := f.do(http.MethodPost, "/_api/site/CreateMigrationJob", acceptNoMeta, body)
	if _, msg := spErrorOf(t, eb); status != 400 || !strings.Contains(msg, "Queue") {
		t.Fatalf("raup queue: %d %s", status, eb)
	}
	// User containers without List are refused.
	body["azureQueueReportUri"] = nil
	body["azureContainerSourceUri"] = userContainer(t, f, "r")
	status, _, eb = f.do(http.MethodPost, "/_api/site/CreateMigrationJob", acceptNoMeta, body)
	if status != 400 {
		t.Fatalf("data SAS without List: %d %s", status, eb)
	}
}

func TestWriteErrorsAreRedacted(t *testing.T) {
	err := fmt.Errorf("GET https://x/c?sv=1&sig=abc%%2Bdef&se=2: %w", errors.New("boom"))
	if s := redactErr(err); strings.Contains(s, "abc") || !strings.Contains(s, "sig=REDACTED") {
		t.Fatal(s)
	}
}
