package azurite

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/spomig/spomig/internal/dev/devtls"
)

func TestMain(m *testing.M) { os.Exit(RunMain(m)) }

func TestStartServesBlobQueueTableAndStopsByPID(t *testing.T) {
	s := New(t, Options{})
	ctx := context.Background()
	bc, err := azblob.NewClientFromConnectionString(s.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := UniqueName("c")
	if _, err := bc.CreateContainer(ctx, c, nil); err != nil {
		t.Fatalf("create container: %v", err)
	}
	if _, err := bc.UploadBuffer(ctx, c, "x.txt", []byte("hello"), nil); err != nil {
		t.Fatalf("upload: %v", err)
	}
	qc, err := azqueue.NewServiceClientFromConnectionString(s.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qc.CreateQueue(ctx, UniqueName("q"), nil); err != nil {
		t.Fatalf("create queue: %v", err)
	}
	tc, err := aztables.NewServiceClientFromConnectionString(s.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.CreateTable(ctx, "t"+strings.ReplaceAll(UniqueName("x"), "-", ""), nil); err != nil {
		t.Fatalf("create table: %v", err)
	}
	pid := s.PID()
	s.Stop()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("azurite pid %d still alive after Stop", pid)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Fatalf("temporary data folder %s not removed", s.Dir)
	}
}

func TestSharedIsReused(t *testing.T) {
	a, b := Shared(t), Shared(t)
	if a != b {
		t.Fatal("Shared started two servers")
	}
}

func TestStartHTTPSWithDevCA(t *testing.T) {
	ca, err := devtls.New()
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.WriteServerCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := New(t, Options{CertFile: cert, KeyFile: key})
	if !strings.HasPrefix(s.BlobURL, "https://127.0.0.1:") {
		t.Fatalf("BlobURL %q is not https", s.BlobURL)
	}
	bc, err := azblob.NewClientFromConnectionString(s.ConnectionString(), &azblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: ca.HTTPClient()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.CreateContainer(context.Background(), UniqueName("tls"), nil); err != nil {
		t.Fatalf("create container over https: %v", err)
	}
}
