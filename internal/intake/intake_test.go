package intake

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/spomig/spomig/functions"
	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/stage"
	"github.com/spomig/spomig/internal/vault"
)

// stateHistory lists the states a job went through.
func stateHistory(j *jobs.Job) []jobs.State {
	var s []jobs.State
	for _, h := range j.History {
		s = append(s, h.State)
	}
	return s
}

func contentTotals(t *testing.T, zipData []byte) (files, size int64) {
	for _, it := range expectedItems(t, zipData) {
		if it.Container == migpkg.Data {
			files++
			size += it.Size
		}
	}
	return files, size
}

func TestAPIJobStagedAndImported(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	zipData := e.buildPackage(func(o *migpkg.BuilderOptions) { o.OmitOptionalFiles = true })
	name := job.ID + ".zip"
	etag := e.put(name, zipData, nil)

	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
		t.Fatal(err)
	}
	got := e.job(job.ID)
	if got.State != jobs.StateStaged {
		t.Fatalf("state %s, want Staged (%s)", got.State, got.FailureReason)
	}
	if want := []jobs.State{jobs.StateAwaitingPackage, jobs.StateEncrypting, jobs.StateStaged}; !slices.Equal(stateHistory(got), want) {
		t.Errorf("history %v, want %v", stateHistory(got), want)
	}
	files, size := contentTotals(t, zipData)
	if got.FilesTotal != files || got.BytesTotal != size || got.FilesDone != files || got.BytesDone != size {
		t.Errorf("counters files %d/%d bytes %d/%d, want %d and %d", got.FilesDone, got.FilesTotal, got.BytesDone, got.BytesTotal, files, size)
	}
	if got.StagingETag != normETag(etag) || got.StagingBlob.Name != name || got.StagingBlob.Container != e.stagingName {
		t.Errorf("staging blob %+v etag %q", got.StagingBlob, got.StagingETag)
	}

	sec := e.verifyStaged(job.ID, zipData)

	// The optional package files the package left out were added (empty documents) and staged.
	var synthetic []string
	for _, it := range expectedItems(t, zipData) {
		if it.Synthetic {
			synthetic = append(synthetic, it.Name)
		}
	}
	slices.Sort(synthetic)
	want := []string{migpkg.FileLookupListMap, migpkg.FileRequirements, migpkg.FileRootObjectMap, migpkg.FileViewFormsList}
	if !slices.Equal(synthetic, want) {
		t.Errorf("synthetic files %v, want %v", synthetic, want)
	}

	if msgs := e.submitMessages(); !slices.Equal(msgs, []string{job.ID}) {
		t.Errorf("submit messages %v, want [%s]", msgs, job.ID)
	}
	if _, err := e.staging.NewBlobClient(name).GetProperties(e.ctx, nil); err != nil {
		t.Errorf("staged zip: %v", err)
	}
	if e.up.callCount() != 1 {
		t.Errorf("uploader called %d times", e.up.callCount())
	}

	// SharePoint (the emulator) imports the staged package without an error.
	evs := e.importWithSPO(got, sec)
	last := evs[len(evs)-1]
	if last.Name != crypt.EventJobEnd {
		t.Fatalf("import ended with %s: %s", last.Name, last.Raw)
	}
	if n, _ := last.Int("TotalErrors"); n != 0 {
		t.Errorf("JobEnd TotalErrors %d: %v", n, names(evs))
	}
	for _, ev := range evs {
		if ev.Name == crypt.EventJobError || ev.Name == crypt.EventJobFatalError {
			t.Errorf("%s: %s", ev.Name, ev.Raw)
		}
	}
	if n, _ := last.Int("FilesCreated"); n != files {
		t.Errorf("FilesCreated %d, want %d", n, files)
	}
}

func TestProgressUpdatedWhileUploading(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	zipData := e.buildPackage(nil)
	items := expectedItems(t, zipData)
	// The last item waits until the record shows the progress of the items before it.
	e.up.open = func(call, idx int) error {
		if idx != len(items)-1 {
			return nil
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			j := e.job(job.ID)
			if j.State == jobs.StateEncrypting && j.FilesDone > 0 && j.BytesDone > 0 {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		return errors.New("no progress recorded")
	}
	name := job.ID + ".zip"
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, e.put(name, zipData, nil)); err != nil {
		t.Fatal(err)
	}
	if j := e.job(job.ID); j.State != jobs.StateStaged {
		t.Fatalf("state %s", j.State)
	}
}

func TestSelfServiceDrop(t *testing.T) {
	t.Run("metadata", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		zipData := e.buildPackage(nil)
		name := "incoming/hr-archive.zip"
		etag := e.put(name, zipData, map[string]string{"SiteUrl": e.siteURL + "/", "WEBID": "{" + strings.ToUpper(e.webID) + "}", "label": "HR%20archive%20%E2%9C%93"})
		if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
			t.Fatal(err)
		}
		id := DropJobID(e.stagingName, name, etag)
		j := e.job(id)
		if j.State != jobs.StateStaged || j.Source != jobs.SourceDrop || j.SiteURL != e.siteURL || j.WebID != e.webID || j.Label != "HR archive ✓" {
			t.Fatalf("drop job %+v", j)
		}
		if j.StagingBlob.Name != name || j.StagingETag != normETag(etag) {
			t.Errorf("staging blob %+v %q", j.StagingBlob, j.StagingETag)
		}
		sec := e.verifyStaged(id, zipData)
		if !slices.Equal(e.submitMessages(), []string{id}) {
			t.Errorf("submit messages %v", e.submitMessages())
		}

		// A re-delivered trigger (unquoted ETag, as some hosts send it) finds the same job: nothing is
		// provisioned or uploaded again, the submit message is sent again.
		if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, normETag(etag)); err != nil {
			t.Fatal(err)
		}
		if n := e.spoCalls.count("ProvisionMigrationContainers"); n != 1 {
			t.Errorf("ProvisionMigrationContainers called %d times", n)
		}
		if e.up.callCount() != 1 {
			t.Errorf("uploader called %d times", e.up.callCount())
		}
		if msgs := e.submitMessages(); !slices.Equal(msgs, []string{id, id}) {
			t.Errorf("submit messages %v", msgs)
		}
		e.importWithSPO(e.job(id), sec)
	})

	t.Run("spomig.json", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		zipData := rewriteZip(t, e.buildPackage(nil), nil, zipEntry{name: DropConfigName, method: 8,
			data: []byte(fmt.Sprintf(`{"siteUrl": %q, "webId": %q}`, e.siteURL, e.webID))})
		name := "drop.zip"
		etag := e.put(name, zipData, nil)
		if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
			t.Fatal(err)
		}
		id := DropJobID(e.stagingName, name, etag)
		j := e.job(id)
		if j.State != jobs.StateStaged || j.Source != jobs.SourceDrop || j.SiteURL != e.siteURL || j.Label != name {
			t.Fatalf("drop job %+v", j)
		}
		sec := e.verifyStaged(id, zipData)
		// spomig.json is the drop's control file, not content.
		e.assertNotUploaded(sec, []migpkg.Item{{Name: DropConfigName, Container: migpkg.Data}})
		if files, _ := contentTotals(t, zipData); j.FilesTotal != files {
			t.Errorf("FilesTotal %d, want %d", j.FilesTotal, files)
		}
	})

	t.Run("metadata wins over spomig.json", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		zipData := rewriteZip(t, e.buildPackage(nil), nil, zipEntry{name: DropConfigName, method: 8,
			data: []byte(`{"siteUrl": "https://elsewhere.example.com/sites/x"}`)})
		etag := e.put("d.zip", zipData, map[string]string{"siteurl": e.siteURL})
		if err := e.in.ProcessBlob(e.ctx, e.stagingName, "d.zip", etag); err != nil {
			t.Fatal(err)
		}
		if j := e.job(DropJobID(e.stagingName, "d.zip", etag)); j.State != jobs.StateStaged || j.SiteURL != e.siteURL {
			t.Fatalf("drop job %s %s", j.State, j.SiteURL)
		}
	})
}

func TestRejectedDrops(t *testing.T) {
	e := newEnv(t, envOptions{})
	valid := e.buildPackage(nil)
	cases := []struct {
		name   string
		data   []byte
		md     map[string]string
		reason string // in FailureReason
		site   string // recorded SiteURL
	}{
		{name: "no target", data: valid, reason: "no target"},
		{name: "not a zip", data: []byte("just some text, not a zip"), md: map[string]string{"siteurl": e.siteURL},
			reason: migpkg.CodeZipMalformed, site: e.siteURL},
		{name: "not a zip, no target", data: []byte("PK\x03\x04 truncated"), reason: migpkg.CodeZipMalformed},
		{name: "http site", data: valid, md: map[string]string{"siteurl": "http://contoso.sharepoint.com/sites/x"}, reason: "https"},
		{name: "bad web id", data: valid, md: map[string]string{"siteurl": e.siteURL, "webid": "not-a-guid"}, reason: "webId"},
		{name: "site not allowed", data: valid, md: map[string]string{"siteurl": "https://evil.example.com/sites/x"},
			reason: "cannot provision", site: "https://evil.example.com/sites/x"},
		{name: "bad spomig.json", data: rewriteZip(t, valid, nil, zipEntry{name: DropConfigName, data: []byte(`{"siteUrl": 42}`)}), reason: "siteUrl must be a string"},
		{name: "spomig.json without siteUrl", data: rewriteZip(t, valid, nil, zipEntry{name: DropConfigName, data: []byte(`{"webId": "x"}`)}), reason: "has no siteUrl"},
		{name: "invalid package with target", data: rewriteZip(t, valid, func(n string, d []byte) ([]byte, bool) { return d, n != migpkg.FileManifest }),
			md: map[string]string{"siteurl": e.siteURL}, reason: migpkg.CodePackageMissingFile, site: e.siteURL},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("rejected-%d.zip", i)
			etag := e.put(name, c.data, c.md)
			if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
				t.Fatal(err)
			}
			id := DropJobID(e.stagingName, name, etag)
			j := e.job(id)
			if j.State != jobs.StateFailed || j.Source != jobs.SourceDrop || !strings.Contains(j.FailureReason, c.reason) {
				t.Fatalf("job %s %s %q, want Failed with %q", j.State, j.Source, j.FailureReason, c.reason)
			}
			if j.StagingBlob.Name != name || j.StagingBlob.Container != e.stagingName || j.StagingETag != normETag(etag) {
				t.Errorf("staging blob %+v %q", j.StagingBlob, j.StagingETag)
			}
			if j.SiteURL != c.site {
				t.Errorf("SiteURL %q, want %q", j.SiteURL, c.site)
			}
			// A re-delivery changes nothing.
			if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
				t.Fatal(err)
			}
			if j2 := e.job(id); j2.Version != j.Version {
				t.Errorf("re-delivery rewrote the record")
			}
		})
	}
	if n := e.spoCalls.count("ProvisionMigrationContainers"); n != 0 {
		t.Errorf("ProvisionMigrationContainers called %d times for rejected drops", n)
	}
	if e.up.callCount() != 0 || len(e.submitMessages()) != 0 {
		t.Errorf("rejected drops were uploaded (%d) or enqueued (%v)", e.up.callCount(), e.submitMessages())
	}
}

// zeros deflates to almost nothing: a compression ratio far above the zip-bomb bound.
func zeros(n int) []byte { return make([]byte, n) }

func TestInvalidPackages(t *testing.T) {
	e := newEnv(t, envOptions{})
	valid := e.buildPackage(nil)
	validItems := expectedItems(t, valid)
	firstContent := ""
	for _, it := range validItems {
		if it.Container == migpkg.Data && it.Size > 0 {
			firstContent = it.Name
			break
		}
	}
	drop := func(name string) func(string, []byte) ([]byte, bool) {
		return func(n string, d []byte) ([]byte, bool) { return d, n != name }
	}
	replace := func(name string, with []byte) func(string, []byte) ([]byte, bool) {
		return func(n string, d []byte) ([]byte, bool) {
			if n == name {
				return with, true
			}
			return d, true
		}
	}
	cases := []struct {
		name  string
		data  []byte
		code  string
		entry string
	}{
		{"not a zip", []byte("this is not a zip archive at all"), migpkg.CodeZipMalformed, ""},
		{"path traversal", rewriteZip(t, valid, nil, zipEntry{name: "../evil.txt", data: []byte("x")}), migpkg.CodeZipDotDot, "../evil.txt"},
		{"absolute path", rewriteZip(t, valid, nil, zipEntry{name: "/etc/passwd", data: []byte("x")}), migpkg.CodeZipAbsolutePath, "/etc/passwd"},
		{"zip bomb", rewriteZip(t, valid, nil, zipEntry{name: "bomb.bin", method: zip.Deflate, data: zeros(8 << 20)}), migpkg.CodeZipCompressionRatio, "bomb.bin"},
		{"duplicate entry", rewriteZip(t, valid, nil, zipEntry{name: migpkg.FileUserGroup, data: []byte("<UserGroupMap/>")}), migpkg.CodeZipDuplicate, migpkg.FileUserGroup},
		{"missing Manifest.xml", rewriteZip(t, valid, drop(migpkg.FileManifest)), migpkg.CodePackageMissingFile, migpkg.FileManifest},
		{"missing content", rewriteZip(t, valid, drop(firstContent)), migpkg.CodeManifestMissingContent, ""},
		{"content size differs", rewriteZip(t, valid, replace(firstContent, []byte("changed"))), migpkg.CodeManifestSizeMismatch, ""},
		{"malformed XML", rewriteZip(t, valid, replace(migpkg.FileSystemData, []byte("<SystemData xmlns="))), migpkg.CodeXMLMalformed, migpkg.FileSystemData},
		{"no SourceType", rewriteZip(t, valid, replace(migpkg.FileExportSettings,
			[]byte(`<ExportSettings xmlns="urn:deployment-exportsettings-schema" SiteUrl="`+e.siteURL+`" FileLocation="C:\Temp" IncludeSecurity="None"/>`))),
			migpkg.CodeExportSettingsMissingSourceType, migpkg.FileExportSettings},
		{"built for another web", e.buildPackage(func(o *migpkg.BuilderOptions) { o.WebID = "0d9a1c2b-7e6f-4a3b-8c5d-1e2f3a4b5c6d" }),
			migpkg.CodeManifestWrongWeb, migpkg.FileManifest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job := e.apiJob()
			name := job.ID + ".zip"
			etag := e.put(name, c.data, nil)
			calls := e.up.callCount()
			if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
				t.Fatalf("ProcessBlob: %v (an invalid package is dealt with)", err)
			}
			j := e.job(job.ID)
			if j.State != jobs.StateFailed {
				t.Fatalf("state %s, want Failed", j.State)
			}
			if !strings.HasPrefix(j.FailureReason, "invalid package: ") || !strings.Contains(j.FailureReason, "["+c.code+"]") {
				t.Errorf("FailureReason %q lacks [%s]", j.FailureReason, c.code)
			}
			found := false
			for _, f := range j.FirstErrors {
				if f.ErrorCode == c.code && f.Message != "" && (c.entry == "" || f.URL == c.entry) {
					found = true
				}
			}
			if !found {
				t.Errorf("FirstErrors %+v lack %s (entry %q)", j.FirstErrors, c.code, c.entry)
			}
			if j.StagingETag != normETag(etag) {
				t.Errorf("StagingETag %q", j.StagingETag)
			}
			// Nothing was uploaded: the uploader never ran and no blob of the package exists.
			if e.up.callCount() != calls {
				t.Errorf("uploader ran for an invalid package")
			}
			e.assertNotUploaded(e.secret(job.ID), validItems)
			if _, err := e.staging.NewBlobClient(name).GetProperties(e.ctx, nil); err != nil {
				t.Errorf("staged zip gone: %v", err)
			}
			// The full problem list is in the reports container.
			if !strings.HasSuffix(j.LogsBlobPrefix, "/"+job.ID+"/") {
				t.Fatalf("LogsBlobPrefix %q", j.LogsBlobPrefix)
			}
			resp, err := e.reports.NewBlobClient(job.ID+"/package-problems.txt").DownloadStream(e.ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			report, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Contains(report, []byte("["+c.code+"]")) {
				t.Errorf("report lacks %s:\n%s", c.code, report)
			}
			// A retried trigger leaves the failed job alone.
			if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
				t.Fatal(err)
			}
			if j2 := e.job(job.ID); j2.Version != j.Version {
				t.Errorf("retry rewrote the failed job")
			}
		})
	}
	if len(e.submitMessages()) != 0 {
		t.Errorf("an invalid package was enqueued for submission")
	}
}

func TestPackageReasonBounded(t *testing.T) {
	var ps []migpkg.Problem
	for i := range 40 {
		ps = append(ps, migpkg.Problem{Entry: fmt.Sprintf("dir/file-%02d.dat", i), Code: migpkg.CodeManifestMissingContent, Message: strings.Repeat("ü", 10)})
	}
	for _, n := range []int{1, 2, 40} {
		r := packageReason(&migpkg.ValidationError{Problems: ps[:n]})
		if len(r) > 480 || !strings.Contains(r, `[manifest.missing-content] "dir/file-00.dat"`) {
			t.Errorf("%d problems: %d bytes: %s", n, len(r), r)
		}
		if n == 40 && !strings.HasSuffix(r, " more") {
			t.Errorf("no count of the rest: %s", r)
		}
	}
	long := packageReason(&migpkg.ValidationError{Problems: []migpkg.Problem{{Code: "x", Message: strings.Repeat("é", 600)}, {Code: "y"}}})
	if len(long) > 480 || !strings.HasSuffix(long, "; … 1 more") {
		t.Errorf("long first problem: %d bytes: %s", len(long), long)
	}
}

func TestCrashThenRetry(t *testing.T) {
	cases := []struct {
		name  string
		setup func(e *env, cancel context.CancelFunc)
	}{
		{"uploader error after two items", func(e *env, _ context.CancelFunc) {
			e.up.open = func(call, idx int) error {
				if call == 1 && idx >= 2 {
					return errors.New("injected failure")
				}
				return nil
			}
		}},
		{"context cancelled after two items", func(e *env, cancel context.CancelFunc) {
			e.up.open = func(call, idx int) error {
				if call == 1 && idx == 2 {
					cancel()
				}
				return nil
			}
		}},
		{"committed but not snapshotted", func(e *env, _ context.CancelFunc) {
			// The first attempt uploads every blob without its snapshot (base blobs with IVs that no
			// snapshot matches), then stops: the state a crash between commit and snapshot leaves.
			e.up.fault = func(ctx context.Context, call int, dst stage.Destination, items []stage.Item) (bool, error) {
				if call != 1 {
					return false, nil
				}
				for _, it := range items {
					uri := dst.DataContainerURI
					if it.Metadata {
						uri = dst.MetadataContainerURI
					}
					iv, _ := crypt.NewIV()
					rc, err := it.Open()
					if err != nil {
						return true, err
					}
					er, _ := crypt.NewEncryptReader(rc, dst.Key, iv)
					_, err = e.sasContainer(uri).NewBlockBlobClient(it.Name).UploadStream(ctx, er,
						&blockblob.UploadStreamOptions{Metadata: map[string]*string{"IV": to.Ptr(b64(iv))}})
					rc.Close()
					if err != nil {
						return true, err
					}
				}
				return true, errors.New("crash before the snapshots")
			}
		}},
		{"older snapshots of another package version", func(e *env, _ context.CancelFunc) {
			// The first attempt stages everything (snapshots included) but "crashes" before Staged:
			// the retry must still leave only its own uploads as the latest snapshots.
			e.up.fault = func(ctx context.Context, call int, dst stage.Destination, items []stage.Item) (bool, error) {
				if call != 1 {
					return false, nil
				}
				if _, err := e.up.inner.UploadAll(ctx, dst, items); err != nil {
					return true, err
				}
				return true, errors.New("crash before Staged")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			job := e.apiJob()
			zipData := e.buildPackage(nil)
			name := job.ID + ".zip"
			etag := e.put(name, zipData, nil)
			ctx, cancel := context.WithCancel(e.ctx)
			defer cancel()
			c.setup(e, cancel)
			if err := e.in.ProcessBlob(ctx, e.stagingName, name, etag); err == nil {
				t.Fatal("the first attempt succeeded")
			}
			if j := e.job(job.ID); j.State != jobs.StateEncrypting {
				t.Fatalf("after the failed attempt: %s", j.State)
			}
			if len(e.submitMessages()) != 0 {
				t.Fatal("enqueued after a failed attempt")
			}
			// The host retries.
			if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
				t.Fatal(err)
			}
			if j := e.job(job.ID); j.State != jobs.StateStaged {
				t.Fatalf("after the retry: %s %s", j.State, j.FailureReason)
			}
			sec := e.verifyStaged(job.ID, zipData)
			if !slices.Equal(e.submitMessages(), []string{job.ID}) {
				t.Errorf("submit messages %v", e.submitMessages())
			}
			e.importWithSPO(e.job(job.ID), sec)
		})
	}
}

func TestStagedAndLaterStates(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	zipData := e.buildPackage(nil)
	name := job.ID + ".zip"
	etag := e.put(name, zipData, nil)
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
		t.Fatal(err)
	}
	// A retried trigger of a Staged job enqueues again and does not encrypt again.
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
		t.Fatal(err)
	}
	if e.up.callCount() != 1 || !slices.Equal(e.submitMessages(), []string{job.ID, job.ID}) {
		t.Fatalf("uploads %d, messages %v", e.up.callCount(), e.submitMessages())
	}
	// A job past Staged is not touched.
	if _, err := e.store.Update(e.ctx, job.ID, func(j *jobs.Job) error {
		j.SPOJobID = "6a5f0c8e-0d6b-4b4e-9e4b-7c1c9d1e2f3a"
		return j.Transition(jobs.StateSubmitted, time.Now(), "test")
	}); err != nil {
		t.Fatal(err)
	}
	before := e.job(job.ID)
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
		t.Fatal(err)
	}
	if after := e.job(job.ID); after.Version != before.Version || len(e.submitMessages()) != 2 || e.up.callCount() != 1 {
		t.Errorf("a submitted job was touched")
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	zipData := e.buildPackage(nil)
	name := job.ID + ".zip"
	etag := e.put(name, zipData, nil)

	started, release := make(chan struct{}), make(chan struct{})
	e.up.fault = func(ctx context.Context, call int, _ stage.Destination, _ []stage.Item) (bool, error) {
		if call == 1 {
			close(started)
			<-release
		}
		return false, nil
	}
	first := make(chan error, 1)
	go func() { first <- e.in.ProcessBlob(e.ctx, e.stagingName, name, etag) }()
	<-started
	// The second delivery finds the blob leased: retry later.
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); !errors.Is(err, ErrBusy) {
		t.Errorf("second delivery: %v, want ErrBusy", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// Its retry finds the job Staged.
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
		t.Fatal(err)
	}
	if e.up.callCount() != 1 {
		t.Errorf("uploader called %d times", e.up.callCount())
	}
	e.verifyStaged(job.ID, zipData)

	// Many deliveries at once: exactly one stages, the others are told to retry or find it staged.
	job2 := e.apiJob()
	name2 := job2.ID + ".zip"
	etag2 := e.put(name2, zipData, nil)
	e.up.fault = nil
	calls := e.up.callCount()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.in.ProcessBlob(e.ctx, e.stagingName, name2, etag2)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrBusy):
		default:
			t.Errorf("delivery: %v", err)
		}
	}
	if ok == 0 || e.up.callCount()-calls != 1 {
		t.Errorf("%d deliveries succeeded, %d uploads", ok, e.up.callCount()-calls)
	}
	if j := e.job(job2.ID); j.State != jobs.StateStaged {
		t.Errorf("state %s", j.State)
	}
}

func TestLeaseOfACrashedInvocation(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	zipData := e.buildPackage(nil)
	name := job.ID + ".zip"
	etag := e.put(name, zipData, nil)
	// A crashed invocation left its lease (it would expire within LeaseDuration).
	lc, err := lease.NewBlobClient(e.staging.NewBlobClient(name), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.AcquireLease(e.ctx, 60, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); !errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want ErrBusy", err)
	}
	if j := e.job(job.ID); j.State != jobs.StateAwaitingPackage {
		t.Fatalf("state %s", j.State)
	}
	if _, err := lc.BreakLease(e.ctx, &lease.BlobBreakOptions{BreakPeriod: to.Ptr(int32(0))}); err != nil {
		t.Fatal(err)
	}
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag); err != nil {
		t.Fatal(err)
	}
	e.verifyStaged(job.ID, zipData)
	// The lease was released: the caller may overwrite the blob again.
	if _, err := e.staging.NewBlockBlobClient(name).UploadBuffer(e.ctx, []byte("x"), nil); err != nil {
		t.Errorf("overwrite after staging: %v", err)
	}
}

func TestExpiringContainersReprovisioned(t *testing.T) {
	t.Run("ContainersExpireAt within SASRenewBefore", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		job := e.apiJob()
		old := e.secret(job.ID)
		if _, err := e.store.Update(e.ctx, job.ID, func(j *jobs.Job) error {
			j.ContainersExpireAt = time.Now().Add(-time.Hour)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		e.stageAndCheckReprovisioned(job, old)
	})

	t.Run("SAS rejected during the upload", func(t *testing.T) {
		// The job's secret names its containers with a SAS that is not valid yet (st in the future, se
		// far away): nothing in the record or the URI says it is expiring, and Azurite answers 403.
		e := newEnv(t, envOptions{})
		job := e.apiJob()
		old := e.secret(job.ID)
		bad := *old
		bad.Key = slices.Clone(old.Key)
		bad.DataContainerURI = e.notYetValidSAS(old.DataContainerURI)
		bad.MetadataContainerURI = e.notYetValidSAS(old.MetadataContainerURI)
		if _, err := e.custody.PutJob(e.ctx, job.ID, job.SiteURL, bad); err != nil {
			t.Fatal(err)
		}
		e.stageAndCheckReprovisioned(job, &bad)
	})

	t.Run("uploader reports ErrSASExpired", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		job := e.apiJob()
		old := e.secret(job.ID)
		e.up.open = func(call, idx int) error {
			if call == 1 && idx == 1 {
				return &stage.SASError{Op: "put blob", Blob: "x", StatusCode: 403, Code: "AuthenticationFailed"}
			}
			return nil
		}
		e.stageAndCheckReprovisioned(job, old)
	})

	t.Run("job secret missing", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		job := e.apiJob()
		old := e.secret(job.ID)
		if err := e.custody.PurgeJob(e.ctx, job.ID); err != nil {
			t.Fatal(err)
		}
		e.stageAndCheckReprovisioned(job, old)
	})
}

// stageAndCheckReprovisioned stages a package for job and checks that it landed in new containers under
// a new key, and that nothing of it is in the old ones.
func (e *env) stageAndCheckReprovisioned(job *jobs.Job, old *vault.JobSecret) {
	e.t.Helper()
	zipData := e.buildPackage(nil)
	name := job.ID + ".zip"
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, e.put(name, zipData, nil)); err != nil {
		e.t.Fatal(err)
	}
	if e.prov.reprovisions.Load() != 1 {
		e.t.Errorf("reprovisioned %d times", e.prov.reprovisions.Load())
	}
	j := e.job(job.ID)
	if j.State != jobs.StateStaged {
		e.t.Fatalf("state %s %s", j.State, j.FailureReason)
	}
	if !j.ContainersExpireAt.After(time.Now().Add(24 * time.Hour)) {
		e.t.Errorf("ContainersExpireAt %s not renewed", j.ContainersExpireAt)
	}
	sec := e.verifyStaged(job.ID, zipData)
	if containerOf(sec.DataContainerURI) == containerOf(old.DataContainerURI) || containerOf(sec.MetadataContainerURI) == containerOf(old.MetadataContainerURI) {
		e.t.Error("the package was staged in the old containers")
	}
	if bytes.Equal(sec.Key, old.Key) {
		e.t.Error("the key was not renewed")
	}
	// The old containers hold nothing of the package (read with SharePoint's account key: the old SAS
	// may not be valid).
	for _, uri := range []string{old.DataContainerURI, old.MetadataContainerURI} {
		pager := e.w.spoBlob.ServiceClient().NewContainerClient(containerOf(uri)).NewListBlobsFlatPager(nil)
		for pager.More() {
			page, err := pager.NextPage(e.ctx)
			if err != nil {
				e.t.Fatal(err)
			}
			for _, it := range page.Segment.BlobItems {
				e.t.Errorf("old container %s holds %s", containerOf(uri), *it.Name)
			}
		}
	}
	e.importWithSPO(j, sec)
}

// notYetValidSAS re-signs a container URI of SharePoint's account with a SAS valid from tomorrow.
func (e *env) notYetValidSAS(uri string) string {
	e.t.Helper()
	cred, err := azblob.NewSharedKeyCredential(azurite.Account, azurite.Key)
	if err != nil {
		e.t.Fatal(err)
	}
	qp, err := sas.BlobSignatureValues{
		Protocol: sas.ProtocolHTTPS, StartTime: time.Now().Add(24 * time.Hour), ExpiryTime: time.Now().Add(60 * time.Hour),
		Permissions: (&sas.ContainerPermissions{Read: true, Write: true}).String(), ContainerName: containerOf(uri),
	}.SignWithSharedKey(cred)
	if err != nil {
		e.t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	u.RawQuery = qp.Encode()
	return u.String()
}

func TestJobCancelledWhileStaging(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	zipData := e.buildPackage(nil)
	name := job.ID + ".zip"
	e.up.fault = func(ctx context.Context, call int, _ stage.Destination, _ []stage.Item) (bool, error) {
		if _, err := e.store.Update(context.Background(), job.ID, func(j *jobs.Job) error {
			return j.Transition(jobs.StateCancelled, time.Now(), "cancelled by the caller")
		}); err != nil {
			return true, err
		}
		select { // the progress updates notice and stop the upload
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(30 * time.Second):
			return true, errors.New("upload not stopped")
		}
	}
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, e.put(name, zipData, nil)); err != nil {
		t.Fatal(err)
	}
	if j := e.job(job.ID); j.State != jobs.StateCancelled {
		t.Errorf("state %s", j.State)
	}
	if len(e.submitMessages()) != 0 {
		t.Error("a cancelled job was enqueued")
	}
}

func TestIgnoredBlobs(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	zipData := e.buildPackage(nil)

	// A zero-length placeholder of the API job's blob does not fail the job; the real upload stages it.
	name := job.ID + ".zip"
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, e.put(name, nil, nil)); err != nil {
		t.Fatal(err)
	}
	if j := e.job(job.ID); j.State != jobs.StateAwaitingPackage {
		t.Fatalf("after the placeholder: %s", j.State)
	}

	// A superseded version: the trigger of the first upload arrives after the second upload.
	etag1 := e.put(name, zipData, nil)
	etag2 := e.put(name, zipData, nil)
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag1); err != nil {
		t.Fatal(err)
	}
	if j := e.job(job.ID); j.State != jobs.StateAwaitingPackage || e.up.callCount() != 0 {
		t.Fatalf("the superseded version was processed: %s", j.State)
	}
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, name, etag2); err != nil {
		t.Fatal(err)
	}
	if j := e.job(job.ID); j.State != jobs.StateStaged || j.StagingETag != normETag(etag2) {
		t.Fatalf("state %s etag %s", j.State, j.StagingETag)
	}

	// Folder markers, directories and vanished blobs.
	for _, c := range []struct {
		name string
		md   map[string]string
	}{{"folder/", nil}, {"dir", map[string]string{"hdi_isfolder": "true"}}} {
		etag := e.put(c.name, nil, c.md)
		if err := e.in.ProcessBlob(e.ctx, e.stagingName, c.name, etag); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Get(e.ctx, DropJobID(e.stagingName, c.name, etag)); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("%s: a job was recorded: %v", c.name, err)
		}
	}
	if err := e.in.ProcessBlob(e.ctx, e.stagingName, "never-there.zip", `"0x1"`); err != nil {
		t.Errorf("vanished blob: %v", err)
	}
	// A blob of another container is a configuration error.
	if err := e.in.ProcessBlob(e.ctx, "other", "x.zip", `"0x1"`); err == nil {
		t.Error("a blob of another container was accepted")
	}
}

func TestSASExpiredClassification(t *testing.T) {
	e := newEnv(t, envOptions{})
	job := e.apiJob()
	sec := e.secret(job.ID)
	// A real 403 of SharePoint's storage for a SAS outside its validity.
	_, err := e.sasContainer(e.notYetValidSAS(sec.DataContainerURI)).NewBlockBlobClient("x").UploadBuffer(e.ctx, []byte("x"), nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 {
		t.Fatalf("want a 403, got %v", err)
	}
	if !e.in.sasExpired(err) || !e.in.sasExpired(fmt.Errorf("wrapped: %w", err)) {
		t.Errorf("403 %s not recognized", re.ErrorCode)
	}
	if e.in.sasExpired(&stagingError{err: err}) {
		t.Error("a 403 of the staging blob taken for an expired container SAS")
	}
	if e.in.sasExpired(errors.New("other")) {
		t.Error("any error taken for an expired SAS")
	}
	if !e.in.sasExpired(&stage.SASError{Code: "AuthorizationPermissionMismatch"}) {
		t.Error("stage.SASError not recognized")
	}
}

func TestSASExpiry(t *testing.T) {
	for _, c := range []struct {
		uri  string
		want string
	}{
		{"https://a.blob.core.windows.net/c?sv=2020-10-02&se=2030-01-02T03%3A04%3A05Z&sp=rw&sig=x", "2030-01-02T03:04:05Z"},
		{"https://a.blob.core.windows.net/c?se=2030-01-02&sig=x", "2030-01-02T00:00:00Z"},
		{"https://a.blob.core.windows.net/c?sig=x", ""},
		{"https://a.blob.core.windows.net/c?se=garbage", ""},
	} {
		got, ok := sasExpiry(c.uri)
		if (c.want == "") == ok || (ok && got.Format(time.RFC3339) != c.want) {
			t.Errorf("%s: %v %v, want %s", c.uri, got, ok, c.want)
		}
	}
}

func TestNewRequiresItsParts(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "Jobs") || !strings.Contains(err.Error(), "SubmitQueue") {
		t.Errorf("New(Options{}) = %v", err)
	}
}

// The adapter's interface (kept in a test: the domain does not import the adapter layer).
var _ functions.Intake = (*Intake)(nil)
