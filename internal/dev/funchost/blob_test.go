package funchost

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/spomig/spomig/internal/dev/azurite"
)

const blobFnJSON = `{
  "bindings": [
    { "type": "blobTrigger", "direction": "in", "name": "blob", "path": "%TESTAPP_UPLOADS%/{name}.zip", "dataType": "binary", "connection": "AzureWebJobsStorage" },
    { "type": "blob", "direction": "out", "name": "copy", "path": "%TESTAPP_OUT%/copy-{name}.bin" }
  ]
}`

const blobTextFnJSON = `{
  "bindings": [ { "type": "blobTrigger", "direction": "in", "name": "text", "path": "%TESTAPP_DOCS%/docs/{stem}.{ext}" } ]
}`

const blobFailFnJSON = `{
  "bindings": [ { "type": "blobTrigger", "direction": "in", "name": "b", "path": "%TESTAPP_FAILC%/{name}", "dataType": "binary" } ]
}`

var reportZip = []byte("PK\x03\x04\n\x00\x00\xff\x00\x01\x02")

func uploadZip(t *testing.T, containerName, name string, data []byte) {
	t.Helper()
	cc := blobService(t).NewContainerClient(containerName)
	_, err := cc.NewBlockBlobClient(name).UploadBuffer(context.Background(), data, &blockblob.UploadBufferOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/zip")},
		Metadata:    map[string]*string{"Owner": to.Ptr("alice"), "camelKey": to.Ptr("v2")},
	})
	must(t, err)
}

func TestBlobTrigger(t *testing.T) {
	t.Parallel()
	uploads, docs, failc, out := azurite.UniqueName("uploads"), azurite.UniqueName("docs"), azurite.UniqueName("failc"), azurite.UniqueName("bout")
	hostID := azurite.UniqueName("blobhost")
	app := newTestApp(t, false, map[string]string{
		"BlobFn": blobFnJSON, "BlobTextFn": blobTextFnJSON, "BlobFailFn": blobFailFnJSON,
	}, map[string]string{
		"TESTAPP_UPLOADS": uploads, "TESTAPP_DOCS": docs, "TESTAPP_FAILC": failc, "TESTAPP_OUT": out,
		"AzureFunctionsWebHost__hostid": hostID,
		"TESTHANDLER_REPLY_BlobFn":      `{"Outputs":{"copy":"aGVsbG8="},"Logs":["blob seen"]}`,
	})
	app.vars["version"] = DefaultHostVersion
	app.vars["uploads"] = uploads
	app.vars["docs"] = docs
	h := app.start(Options{})
	if h.HostID() != hostID {
		t.Fatalf("host id %q, want the AzureFunctionsWebHost__hostid setting %q", h.HostID(), hostID)
	}

	t.Run("binary blob request and output", func(t *testing.T) {
		uploadZip(t, uploads, "notes.txt", []byte("not a zip")) // does not match {name}.zip
		uploadZip(t, uploads, "report.zip", reportZip)
		recs := app.waitRecords("/BlobFn", 1, 15*time.Second)
		app.matchFixture("blob_request.json", requestView(t, recs[0]))
		waitFor(t, 10*time.Second, "the blob output", func() bool { return string(readBlob(t, out, "copy-report.bin")) == "hello" })
		receipts := listBlobs(t, hostsContainer, "blobreceipts/"+hostID+"/Host.Functions.BlobFn/")
		if len(receipts) != 1 || !strings.HasSuffix(receipts[0], `"/`+uploads+"/report.zip") || !strings.Contains(receipts[0], `/"0x`) {
			t.Errorf("receipts = %q, want one blobreceipts/<hostId>/Host.Functions.BlobFn/\"<etag>\"/%s/report.zip", receipts, uploads)
		}
	})

	t.Run("text blobs", func(t *testing.T) {
		uploadBlob(t, docs, "docs/data.json", []byte(`{"a":"b","n":1,"list":[1]}`), nil)
		recs := app.waitRecords("/BlobTextFn", 1, 15*time.Second)
		app.matchFixture("blob_text_request.json", envelopeBody(t, recs[0]))
		uploadBlob(t, docs, "docs/readme.md", []byte("\xef\xbb\xbfh\xc3\xa9llo \"w\"\n\t<end>"), nil)
		recs = app.waitRecords("/BlobTextFn", 2, 15*time.Second)
		app.matchFixture("blob_text_stream_request.json", envelopeBody(t, recs[1]))

		req, _ := http.NewRequest(http.MethodPost, h.URL()+"/admin/functions/BlobTextFn", strings.NewReader(`{"input":"`+docs+`/docs/readme.md"}`))
		req.Header.Set("x-functions-key", h.MasterKey())
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("admin: %d", resp.StatusCode)
		}
		recs = app.waitRecords("/BlobTextFn", 3, 10*time.Second)
		app.matchFixture("blob_text_stream_request.json", envelopeBody(t, recs[2]))
	})

	t.Run("poison blob", func(t *testing.T) {
		uploadBlob(t, failc, "bad.bin", []byte("cmd:fail"), nil)
		var msg blobTriggerMessage
		waitFor(t, 20*time.Second, "the poison message", func() bool {
			for _, text := range peekTexts(t, blobPoisonQueue) {
				var m blobTriggerMessage
				if json.Unmarshal([]byte(unb64(t, text)), &m) == nil && m.ContainerName == failc {
					msg = m
					return true
				}
			}
			return false
		})
		if msg.Type != "BlobTrigger" || msg.FunctionID != "Host.Functions.BlobFailFn" || msg.BlobType != "BlockBlob" ||
			msg.BlobName != "bad.bin" || !strings.HasPrefix(msg.ETag, `"0x`) {
			t.Errorf("poison message = %+v", msg)
		}
		if n := len(app.records("/BlobFailFn")); n != 2 {
			t.Errorf("BlobFailFn invoked %d times, want poisonBlobThreshold = 2", n)
		}
		if n := len(peekTexts(t, "azure-webjobs-blobtrigger-"+hostID)); n != 0 {
			t.Errorf("%d messages left in the host blob trigger queue", n)
		}
		if r := listBlobs(t, hostsContainer, "blobreceipts/"+hostID+"/Host.Functions.BlobFailFn/"); len(r) != 1 {
			t.Errorf("receipts for the poisoned blob = %q, want one (so it is not retried forever)", r)
		}
	})

	t.Run("receipts survive a restart", func(t *testing.T) {
		before := len(app.records("/BlobFn"))
		_ = h.Stop()
		h2 := app.start(Options{})
		_ = h2
		uploadZip(t, uploads, "second.zip", []byte("2nd"))
		recs := app.waitRecords("/BlobFn", before+1, 15*time.Second)
		time.Sleep(400 * time.Millisecond) // two more scans
		recs = app.records("/BlobFn")
		var names []string
		for _, r := range recs[before:] {
			names = append(names, envelopeBody(t, r)["Metadata"].(map[string]any)["name"].(string))
		}
		if !slices.Equal(names, []string{`"second"`}) {
			t.Fatalf("after the restart the handler saw %q, want only \"second\" (report.zip has a completed receipt)", names)
		}
		uploadZip(t, uploads, "report.zip", []byte("PK new version")) // new ETag: a new receipt
		recs = app.waitRecords("/BlobFn", before+2, 15*time.Second)
		if n := envelopeBody(t, recs[before+1])["Metadata"].(map[string]any)["name"]; n != `"report"` {
			t.Errorf("new version: handler saw %v", n)
		}
		if r := listBlobs(t, hostsContainer, "blobreceipts/"+hostID+"/Host.Functions.BlobFn/"); len(r) != 3 {
			t.Errorf("receipts = %q, want 3 (report.zip twice, second.zip)", r)
		}
	})
}

func TestBlobPattern(t *testing.T) {
	for _, tc := range []struct {
		path, blob string
		ok         bool
		vals       map[string]string
	}{
		{"uploads/{name}.zip", "a.zip", true, map[string]string{"name": "a"}},
		{"uploads/{name}.zip", "dir/a.b.zip", true, map[string]string{"name": "dir/a.b"}},
		{"uploads/{name}.zip", "a.txt", false, nil},
		{"uploads/{name}", "x/y", true, map[string]string{"name": "x/y"}},
		{"input/{blobname}.{blobextension}", "original-Blob1.txt", true, map[string]string{"blobname": "original-Blob1", "blobextension": "txt"}},
		{"input/{name}.{ext}", "a.b.c", true, map[string]string{"name": "a.b", "ext": "c"}},
		{"input/original-{name}", "original-x", true, map[string]string{"name": "x"}},
		{"input/original-{name}", "copy-x", false, nil},
		{"input/{{lit}}/{name}", "{lit}/n", true, map[string]string{"name": "n"}},
		{"input/{name}.zip", "A.ZIP", false, nil},
	} {
		bp, err := parseBlobPattern(tc.path)
		must(t, err)
		c, _, _ := strings.Cut(tc.path, "/")
		vals, ok := bp.match(c, tc.blob)
		if ok != tc.ok || (ok && !mapsEqual(vals, tc.vals)) {
			t.Errorf("%s on %q: %v %v, want %v %v", tc.path, tc.blob, vals, ok, tc.vals, tc.ok)
		}
	}
	for _, bad := range []string{"nocontainer", "/x", "c/{a", "c/{a}/{a}", "c/{rand-guid}", "c/x}"} {
		if _, err := parseBlobPattern(bad); err == nil {
			t.Errorf("parseBlobPattern(%q) accepted", bad)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
