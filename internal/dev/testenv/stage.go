package testenv

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/migpkg"
	"github.com/spomig/spomig/internal/spo"
)

// PackageOptions configure StagePackage.
type PackageOptions struct {
	// SiteURL and WebID are the package's target (migpkg.BuilderOptions).
	SiteURL, WebID string
	// Files are the package's files (a file without Content gets the Builder's generated content).
	Files []migpkg.BuildFile
	// Skip, when set, leaves an item out: it is not uploaded.
	Skip func(migpkg.Item) bool
	// ClientOptions reach the containers (e.g. Storage.ClientOptions, for the dev CA).
	ClientOptions azcore.ClientOptions
}

// StagePackage builds a valid package with migpkg's Builder and uploads it into the containers of c as a
// client does: through the container SAS only, every item encrypted with c's key and a fresh IV (blob
// metadata "IV"), then snapshotted. It streams: the zip goes to a temporary file, the items through the
// encrypting reader.
func StagePackage(tb testing.TB, c spo.Containers, opts PackageOptions) {
	tb.Helper()
	ctx := tb.Context()
	b := migpkg.NewBuilder(migpkg.BuilderOptions{SiteURL: opts.SiteURL, WebID: opts.WebID})
	for _, f := range opts.Files {
		if err := b.AddFile(f); err != nil {
			tb.Fatal(err)
		}
	}
	zf, err := os.Create(filepath.Join(tb.TempDir(), "package.zip"))
	if err != nil {
		tb.Fatal(err)
	}
	defer zf.Close()
	if err := b.Write(zf); err != nil {
		tb.Fatal(err)
	}
	st, err := zf.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	pkg, err := migpkg.Open(zf, st.Size(), migpkg.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := pkg.Validate(ctx); err != nil {
		tb.Fatal(err)
	}
	items, err := pkg.Items()
	if err != nil {
		tb.Fatal(err)
	}
	clients := map[migpkg.Kind]*container.Client{}
	for kind, uri := range map[migpkg.Kind]string{migpkg.Data: c.DataContainerURI, migpkg.Metadata: c.MetadataContainerURI} {
		cc, err := container.NewClientWithNoCredential(uri, &container.ClientOptions{ClientOptions: opts.ClientOptions})
		if err != nil {
			tb.Fatal(err)
		}
		clients[kind] = cc
	}
	for _, it := range items {
		if opts.Skip != nil && opts.Skip(it) {
			continue
		}
		bb := clients[it.Container].NewBlockBlobClient(it.Name)
		rc, err := it.Open()
		if err != nil {
			tb.Fatal(err)
		}
		UploadEncrypted(tb, bb, rc, c.EncryptionKey)
		rc.Close()
		if _, err := bb.CreateSnapshot(ctx, nil); err != nil {
			tb.Fatalf("snapshot %s: %v", it.Name, err)
		}
	}
}

// UploadEncrypted encrypts plain with key and a fresh IV and uploads it to bb with the IV in its "IV"
// metadata, as SharePoint wants the blobs of an encrypted job.
func UploadEncrypted(tb testing.TB, bb *blockblob.Client, plain io.Reader, key []byte) {
	tb.Helper()
	iv, err := crypt.NewIV()
	if err != nil {
		tb.Fatal(err)
	}
	er, err := crypt.NewEncryptReader(plain, key, iv)
	if err != nil {
		tb.Fatal(err)
	}
	ivText := base64.StdEncoding.EncodeToString(iv)
	if _, err := bb.UploadStream(tb.Context(), er, &blockblob.UploadStreamOptions{
		Metadata: map[string]*string{"IV": &ivText}}); err != nil {
		u, _ := url.Parse(bb.URL())
		tb.Fatalf("upload %s: %v", u.Path, err)
	}
}

// ReadEncrypted downloads a blob through a container SAS URI and decrypts it with key and the IV of its
// metadata; found is false when there is no such blob.
func ReadEncrypted(tb testing.TB, containerURI, name string, key []byte, co azcore.ClientOptions) (plain []byte, found bool) {
	tb.Helper()
	cc, err := container.NewClientWithNoCredential(containerURI, &container.ClientOptions{ClientOptions: co})
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := cc.NewBlobClient(name).DownloadStream(tb.Context(), nil)
	if err != nil {
		if re := (*azcore.ResponseError)(nil); errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return nil, false
		}
		tb.Fatalf("download %s: %v", name, err)
	}
	defer resp.Body.Close()
	var ivText string
	for k, v := range resp.Metadata {
		if strings.EqualFold(k, "IV") && v != nil {
			ivText = *v
		}
	}
	iv, err := crypt.ParseIV(ivText)
	if err != nil {
		tb.Fatalf("%s: IV metadata: %v", name, err)
	}
	dr, err := crypt.NewDecryptReader(resp.Body, key, iv)
	if err != nil {
		tb.Fatal(err)
	}
	plain, err = io.ReadAll(dr)
	if err != nil {
		tb.Fatalf("%s does not decrypt with the job key: %v", name, err)
	}
	return plain, true
}

// DrainQueue dequeues and deletes every message of a queue through its SAS URI, as a client does, and
// answers their texts.
func DrainQueue(tb testing.TB, queueURI string, co azcore.ClientOptions) []string {
	tb.Helper()
	qc, err := azqueue.NewQueueClientWithNoCredential(queueURI, &azqueue.ClientOptions{ClientOptions: co})
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for {
		n := int32(32)
		resp, err := qc.DequeueMessages(tb.Context(), &azqueue.DequeueMessagesOptions{NumberOfMessages: &n})
		if err != nil {
			tb.Fatalf("dequeue: %v", err)
		}
		if len(resp.Messages) == 0 {
			return out
		}
		for _, m := range resp.Messages {
			out = append(out, *m.MessageText)
			if _, err := qc.DeleteMessage(tb.Context(), *m.MessageID, *m.PopReceipt, nil); err != nil {
				tb.Fatalf("delete message: %v", err)
			}
		}
	}
}
