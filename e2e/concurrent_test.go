package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spomig/spomig/internal/api"
	"github.com/spomig/spomig/internal/dev/spoemu"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/migpkg"
)

// TestManyJobsManySites: twenty migrations (4 sites × 5) created, uploaded and followed at once all
// complete, with no cross-talk:
//   - keys: every job has its own Key Vault secret, with its own key and its own containers;
//   - events: each record's counters equal those of its own SPO job (every job has a different
//     number of files and bytes, so another job's events would show);
//   - SPO jobs: exactly one per migration, on the migration's own site;
//   - logs: each job's decrypted import log names its own SPO job id and no other;
//   - files: each site's library holds exactly the files of its five packages, byte for byte.
func TestManyJobsManySites(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{SPO: spoemu.Options{MaxJobs: 4}})
	work := t.TempDir()
	sites := []string{"north", "south", "east", "west"}
	const perSite = 5

	type mig struct {
		site  string
		c     created
		zip   string
		files []migpkg.BuildFile
		job   api.Job
	}
	var migs []*mig
	for si, site := range sites {
		for k := 0; k < perSite; k++ {
			n := 3 + si*perSite + k // 3..22 files: every job differs
			migs = append(migs, &mig{site: site,
				files: genFiles(fmt.Sprintf("%s-job%d", site, k), n, uint64(100+si*perSite+k), 48<<10)})
		}
	}
	fns := make([]func() error, len(migs))
	for i, m := range migs {
		fns[i] = func() error {
			c, err := e.create(e.s.SiteURL(m.site), fmt.Sprintf("e2e %s #%d", m.site, i))
			if err != nil {
				return err
			}
			m.c = c
			if m.zip, err = buildZip(work, fmt.Sprintf("pkg-%02d.zip", i), migpkgOptions(c), m.files); err != nil {
				return err
			}
			if err := e.upload(c.UploadURL, m.zip); err != nil {
				return err
			}
			m.job, err = e.waitJobErr(c.ID, "end", 3*jobTimeout, ended)
			return err
		}
	}
	if err := parallel(fns...); err != nil {
		t.Fatal(err)
	}

	spoAll := e.spoJobs("")
	if len(spoAll) != len(migs) {
		t.Errorf("SharePoint has %d jobs, want %d", len(spoAll), len(migs))
	}
	byID := map[string]spoemu.JobInfo{}
	for _, sj := range spoAll {
		byID[strings.ToLower(sj.ID)] = sj
	}
	custody := e.custody()
	keys := map[string]string{}
	containers := map[string]string{}
	guidRE := regexp.MustCompile(`(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	ids := map[string]bool{}
	for _, m := range migs {
		ids[strings.ToLower(m.c.ID)] = true
	}
	var mu sync.Mutex
	checks := make([]func() error, len(migs))
	for i, m := range migs {
		j := m.job
		if j.State != jobs.StateCompleted {
			t.Errorf("job %d (%s) ended %s: %s", i, m.site, j.State, j.FailureReason)
			continue
		}
		sj, ok := byID[strings.ToLower(j.SPOJobID)]
		switch {
		case !ok:
			t.Errorf("job %d: SPO job %s unknown to SharePoint", i, j.SPOJobID)
			continue
		case sj.Site != "/sites/"+m.site:
			t.Errorf("job %d for %s was submitted to %s", i, m.site, sj.Site)
		case sj.Counters.FilesCreated != j.Counters.Files.Done || sj.Counters.BytesProcessed != j.Counters.Bytes.Done ||
			sj.Counters.TotalExpectedSPObjects != j.Counters.Objects.Total:
			t.Errorf("job %d: record counters %+v, its SPO job's %+v", i, j.Counters, sj.Counters)
		case j.Counters.Files.Done != int64(len(m.files)) || j.Counters.Bytes.Done != sumSizes(m.files):
			t.Errorf("job %d: counters %+v, package %d files %d bytes", i, j.Counters, len(m.files), sumSizes(m.files))
		}
		delete(byID, strings.ToLower(j.SPOJobID)) // a second record naming the same SPO job fails above

		sec, err := custody.GetJob(context.Background(), j.ID)
		if err != nil {
			t.Errorf("job %d: secret: %v", i, err)
			continue
		}
		k := string(sec.Key)
		if other, dup := keys[k]; dup {
			t.Errorf("jobs %s and %s share an AES key", other, j.ID)
		}
		keys[k] = j.ID
		for _, u := range []string{sec.DataContainerURI, sec.MetadataContainerURI} {
			base, _, _ := strings.Cut(u, "?")
			if other, dup := containers[base]; dup {
				t.Errorf("jobs %s and %s share the container %s", other, j.ID, base)
			}
			containers[base] = j.ID
		}
		clear(sec.Key)

		checks[i] = func() error {
			files, err := e.logs(j.ID)
			if err != nil {
				return err
			}
			for _, f := range files {
				if !strings.HasSuffix(f.Name, ".log") {
					continue
				}
				text, err := e.logText(j.ID, f.Name)
				if err != nil {
					return err
				}
				if !strings.Contains(strings.ToLower(text), strings.ToLower(j.SPOJobID)) {
					return fmt.Errorf("job %s: log %s does not name its SPO job %s", j.ID, f.Name, j.SPOJobID)
				}
				for _, g := range guidRE.FindAllString(text, -1) {
					g = strings.ToLower(g)
					mu.Lock()
					foreign := g != strings.ToLower(j.SPOJobID) && (ids[g] || isSPOJob(spoAll, g))
					mu.Unlock()
					if foreign {
						return fmt.Errorf("job %s: log %s names another job (%s)", j.ID, f.Name, g)
					}
				}
			}
			return nil
		}
	}
	var cs []func() error
	for _, c := range checks {
		if c != nil {
			cs = append(cs, c)
		}
	}
	if err := parallel(cs...); err != nil {
		t.Error(err)
	}

	// Each site's library: exactly its own five packages.
	for _, site := range sites {
		var want []string
		for _, m := range migs {
			if m.site != site {
				continue
			}
			if err := verifyImported(e.siteDir(site), m.zip, m.files); err != nil {
				t.Error(err)
			}
			for _, f := range m.files {
				want = append(want, f.Path)
			}
		}
		got, err := importedFiles(e.siteDir(site))
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("site %s holds %d files, its packages %d (first foreign: %q)", site, len(got), len(want), firstMissing(got, want))
		}
	}
}

func isSPOJob(all []spoemu.JobInfo, id string) bool {
	for _, j := range all {
		if strings.EqualFold(j.ID, id) {
			return true
		}
	}
	return false
}

// firstMissing returns the first element of a that b lacks.
func firstMissing(a, b []string) string {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return x
		}
	}
	return ""
}
