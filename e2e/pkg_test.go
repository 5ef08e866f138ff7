package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spomig/spomig/internal/migpkg"
)

// genFiles returns n files under root with realistic names (nested folders, non-ASCII) and sizes from
// 0 to maxSize bytes; the content is migpkg.GeneratedContent of the path, so it differs per path.
func genFiles(root string, n int, seed uint64, maxSize int) []migpkg.BuildFile {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	folders := []string{"", "Finance/2024", "HR/Policies", "Projects/Zürich Office", "Projects/東京/設計", "Archive"}
	names := []string{"report", "Übersicht", "plan", "résumé", "notes", "データ", "ñandú"}
	exts := []string{".docx", ".xlsx", ".pdf", ".txt", ".csv"}
	out := make([]migpkg.BuildFile, 0, n)
	for i := 0; i < n; i++ {
		dir := folders[rng.IntN(len(folders))]
		p := fmt.Sprintf("%s %03d%s", names[rng.IntN(len(names))], i, exts[rng.IntN(len(exts))])
		if dir != "" {
			p = dir + "/" + p
		}
		if root != "" {
			p = root + "/" + p
		}
		var size int64
		switch {
		case i%9 == 4:
			size = 0
		default:
			size = int64(rng.IntN(maxSize + 1))
		}
		out = append(out, migpkg.BuildFile{Path: p, Size: size})
	}
	return out
}

// buildZip writes a package of files to dir/name.
func buildZip(dir, name string, o migpkg.BuilderOptions, files []migpkg.BuildFile) (string, error) {
	o.KeepPaths = true
	b := migpkg.NewBuilder(o)
	for _, f := range files {
		if err := b.AddFile(f); err != nil {
			return "", err
		}
	}
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	if err := b.Write(f); err != nil {
		f.Close()
		return "", err
	}
	return p, f.Close()
}

// rewriteZip copies a zip entry by entry through edit, which may rename an entry, change its data or
// drop it (keep false); extra entries are appended. Entries keep their method.
func rewriteZip(src, dst string, edit func(name string, data []byte) (newName string, newData []byte, keep bool), extra map[string][]byte) error {
	r, err := zip.OpenReader(src)
	if err != nil {
		return err
	}
	defer r.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	w := zip.NewWriter(out)
	for _, f := range r.File {
		rc, err := f.Open()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		name, keep := f.Name, true
		if edit != nil {
			name, data, keep = edit(f.Name, data)
		}
		if !keep {
			continue
		}
		hdr := &zip.FileHeader{Name: name, Method: f.Method, Modified: f.Modified}
		hdr.SetMode(0o644)
		ew, err := w.CreateHeader(hdr)
		if err != nil {
			return err
		}
		if _, err := ew.Write(data); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ew, err := w.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate})
		if err != nil {
			return err
		}
		if _, err := ew.Write(extra[n]); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return out.Close()
}

// verifyImported checks that every file of the package landed in the site's library with exactly the
// bytes of its zip entry.
func verifyImported(siteDir, zipPath string, files []migpkg.BuildFile) error {
	r, err := zip.OpenReader(zipPath)
	if err != nil {
		return err
	}
	defer r.Close()
	entries := map[string]*zip.File{}
	for _, f := range r.File {
		entries[f.Name] = f
	}
	var problems []string
	for _, f := range files {
		zf, ok := entries[f.Path]
		if !ok {
			return fmt.Errorf("package %s has no entry %q", filepath.Base(zipPath), f.Path)
		}
		want, err := hashZipEntry(zf)
		if err != nil {
			return err
		}
		got, err := hashFile(filepath.Join(siteDir, filepath.FromSlash(f.Path)))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f.Path, err))
			continue
		}
		if !bytes.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("%s: imported bytes differ from the package entry", f.Path))
		}
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("… %d more", len(problems)-5))
		}
		return fmt.Errorf("imported files of %s: %s", filepath.Base(zipPath), strings.Join(problems, "; "))
	}
	return nil
}

func hashZipEntry(f *zip.File) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func hashFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// importedFiles lists the files under a site's library, "/"-separated relative paths, leaving out the
// emulator's temporary files and older versions.
func importedFiles(siteDir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(siteDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == siteDir {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() {
			if d.Name() == "_versions" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(d.Name(), ".spoemu-") {
			return nil
		}
		rel, _ := filepath.Rel(siteDir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	sort.Strings(out)
	return out, err
}

// zeroReader is an endless stream of zero bytes (the content of a zip bomb).
type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func sumSizes(files []migpkg.BuildFile) (n int64) {
	for _, f := range files {
		n += f.Size
	}
	return n
}

// migpkgOptions builds packages for a job created through the API: its site, and the web id it answered
// (SharePoint checks every object's ParentWebId against the job's web).
func migpkgOptions(c created) migpkg.BuilderOptions {
	return migpkg.BuilderOptions{SiteURL: c.SiteURL, WebID: c.WebID}
}
