package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
)

// TestInvalidPackages: a package of every invalid kind ends its job Failed, with a reason that names
// the problem (its code and, where there is one, the entry), and nothing reaches SharePoint: no SPO job
// for it, no blob in its SPO containers. The staged zip stays in migration-staging for the caller to
// inspect. The same holds for an invalid self-service drop, whose Failed record appears by itself.
func TestInvalidPackages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	work := t.TempDir()

	// A valid package to derive the broken ones from; one file has a distinctive size (FileSize case).
	files := append(genFiles("", 6, 7, 20<<10), migpkg.BuildFile{Path: "Docs/odd size.txt", Size: 4321})
	validZip := func(siteURL, webID string) string {
		p, err := buildZip(work, fmt.Sprintf("valid-%d.zip", time.Now().UnixNano()), migpkg.BuilderOptions{SiteURL: siteURL, WebID: webID}, files)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	rewrite := func(name, src string, edit func(string, []byte) (string, []byte, bool), extra map[string][]byte) string {
		dst := filepath.Join(work, name+".zip")
		if err := rewriteZip(src, dst, edit, extra); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	keepAll := func(n string, b []byte) (string, []byte, bool) { return n, b, true }

	cases := []struct {
		name string
		make func(siteURL, webID string) string
		want []string // in the failure reason
	}{
		{"not a zip", func(string, string) string {
			p := filepath.Join(work, "notzip.zip")
			b := make([]byte, 64<<10)
			rand.Read(b)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{migpkg.CodeZipMalformed}},
		{"zip slip", func(s, w string) string {
			return rewrite("zipslip", validZip(s, w), keepAll, map[string][]byte{"../../etc/cron.d/evil": []byte("* * * * * root id\n")})
		}, []string{migpkg.CodeZipDotDot, "../../etc/cron.d/evil"}},
		{"missing Manifest.xml", func(s, w string) string {
			return rewrite("nomanifest", validZip(s, w), func(n string, b []byte) (string, []byte, bool) {
				return n, b, n != migpkg.FileManifest
			}, nil)
		}, []string{migpkg.CodePackageMissingFile, migpkg.FileManifest}},
		{"malformed XML", func(s, w string) string {
			return rewrite("badxml", validZip(s, w), func(n string, b []byte) (string, []byte, bool) {
				if n == migpkg.FileManifest {
					b = b[:len(b)/2] // cut in the middle of an element
				}
				return n, b, true
			}, nil)
		}, []string{migpkg.CodeXMLMalformed, migpkg.FileManifest}},
		{"FileValue names a missing entry", func(s, w string) string {
			return rewrite("nocontent", validZip(s, w), func(n string, b []byte) (string, []byte, bool) {
				return n, b, n != "Docs/odd size.txt"
			}, nil)
		}, []string{migpkg.CodeManifestMissingContent, "Docs/odd size.txt"}},
		{"FileSize mismatch", func(s, w string) string {
			return rewrite("filesize", validZip(s, w), func(n string, b []byte) (string, []byte, bool) {
				if n == migpkg.FileManifest {
					if !bytes.Contains(b, []byte(`FileSize="4321"`)) {
						t.Fatal("the manifest has no FileSize=\"4321\"")
					}
					b = bytes.ReplaceAll(b, []byte(`FileSize="4321"`), []byte(`FileSize="4322"`))
				}
				return n, b, true
			}, nil)
		}, []string{migpkg.CodeManifestSizeMismatch}},
		{"zip bomb by ratio", func(s, w string) string {
			bomb := append(genFiles("", 3, 9, 4<<10), migpkg.BuildFile{Path: "zeros.bin", Size: 16 << 20, Content: io.LimitReader(zeroReader{}, 16<<20)})
			p, err := buildZip(work, "bomb.zip", migpkg.BuilderOptions{SiteURL: s, WebID: w, ContentMethod: zip.Deflate}, bomb)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{migpkg.CodeZipCompressionRatio, "zeros.bin"}},
	}

	type started struct {
		c   created
		zip string
	}
	starts := make([]started, len(cases))
	fns := make([]func() error, len(cases))
	for i, tc := range cases {
		c := e.mustCreate(e.s.SiteURL(fmt.Sprintf("invalid%d", i)), "e2e invalid: "+tc.name)
		starts[i] = started{c: c, zip: tc.make(c.SiteURL, c.WebID)}
		fns[i] = func() error { return e.upload(c.UploadURL, starts[i].zip) }
	}
	// And a drop that is not a zip, with a target.
	dropName := "drops/not a zip.zip"
	notZip := filepath.Join(work, "drop-notzip.zip")
	if err := os.WriteFile(notZip, []byte(strings.Repeat("this is not a zip\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	fns = append(fns, func() error {
		return e.drop(dropName, notZip, map[string]string{"siteurl": e.s.SiteURL("invalid-drop")})
	})
	if err := parallel(fns...); err != nil {
		t.Fatal(err)
	}

	custody := e.custody()
	spo := e.spoBlob()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := starts[i].c.ID
			j := e.waitEnded(id, jobs.StateFailed)
			t.Logf("failure reason: %s", j.FailureReason)
			for _, w := range tc.want {
				if !strings.Contains(j.FailureReason, w) {
					t.Errorf("failure reason %q does not name %q", j.FailureReason, w)
				}
			}
			if j.SPOJobID != "" {
				t.Errorf("an invalid package was submitted as SPO job %s", j.SPOJobID)
			}
			if !e.stagingExists(id + ".zip") {
				t.Errorf("the staged zip %s.zip is gone", id)
			}
			// Nothing uploaded: both SPO containers of the job are empty.
			sec, err := custody.GetJob(context.Background(), id)
			if err != nil {
				t.Fatalf("secret: %v", err)
			}
			clear(sec.Key)
			for _, u := range []string{sec.DataContainerURI, sec.MetadataContainerURI} {
				name := containerName(u)
				pager := spo.ServiceClient().NewContainerClient(name).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{})
				for pager.More() {
					page, err := pager.NextPage(context.Background())
					if err != nil {
						t.Fatalf("list %s: %v", name, err)
					}
					if n := len(page.Segment.BlobItems); n > 0 {
						t.Errorf("container %s holds %d blobs (first %q) of an invalid package", name, n, *page.Segment.BlobItems[0].Name)
					}
				}
			}
		})
	}
	t.Run("drop not a zip", func(t *testing.T) {
		var drop api.Job
		deadline := time.Now().Add(jobTimeout)
		for drop.ID == "" || !drop.Ended {
			all, err := e.list()
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range all {
				if j.Source == jobs.SourceDrop {
					drop = j
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ended drop record within %s (last %+v)", jobTimeout, drop)
			}
			time.Sleep(pollEvery)
		}
		t.Logf("drop %s: %s", drop.State, drop.FailureReason)
		if drop.State != jobs.StateFailed || !strings.Contains(drop.FailureReason, migpkg.CodeZipMalformed) {
			t.Errorf("drop ended %s: %q", drop.State, drop.FailureReason)
		}
		if !e.stagingExists(dropName) {
			t.Errorf("the dropped blob is gone")
		}
	})
	if n := len(e.spoJobs("")); n != 0 {
		t.Errorf("SharePoint saw %d jobs for invalid packages", n)
	}
}

// containerName is the container of a container URL (Azurite: /<account>/<container>).
func containerName(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base[strings.LastIndex(strings.TrimRight(base, "/"), "/")+1:]
}
