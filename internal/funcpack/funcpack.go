// Package funcpack writes a Functions app folder as a zip ready for zip deploy (run-from-package):
// files listed in .funcignore are left out, and file modes are kept, so the handler stays executable
// on Linux (the zip records Unix modes).
package funcpack

import (
	"archive/zip"
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Ignore is a parsed .funcignore (gitignore-like: '#' comments, 'dir/' for folders, globs matched against
// the base name or the slash path, '!' to re-include).
type Ignore struct{ rules []rule }

type rule struct {
	pattern string
	dirOnly bool
	negate  bool
}

// ParseIgnore reads .funcignore text.
func ParseIgnore(r io.Reader) (*Ignore, error) {
	ig := &Ignore{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ru := rule{}
		if strings.HasPrefix(line, "!") {
			ru.negate, line = true, line[1:]
		}
		if strings.HasSuffix(line, "/") {
			ru.dirOnly, line = true, strings.TrimSuffix(line, "/")
		}
		ru.pattern = strings.TrimPrefix(line, "/")
		if _, err := path.Match(ru.pattern, ""); err != nil {
			return nil, fmt.Errorf("bad .funcignore pattern %q: %w", line, err)
		}
		ig.rules = append(ig.rules, ru)
	}
	return ig, sc.Err()
}

// Ignored reports whether the slash path rel (a folder when dir) is left out.
func (ig *Ignore) Ignored(rel string, dir bool) bool {
	out := false
	for _, ru := range ig.rules {
		if ru.dirOnly && !dir {
			continue
		}
		m, _ := path.Match(ru.pattern, rel)
		if !m {
			m, _ = path.Match(ru.pattern, path.Base(rel))
		}
		if m {
			out = !ru.negate
		}
	}
	return out
}

// Write zips appDir into w, honouring appDir/.funcignore. It returns the names written.
func Write(w io.Writer, appDir string) ([]string, error) {
	ig := &Ignore{}
	if f, err := os.Open(filepath.Join(appDir, ".funcignore")); err == nil {
		ig, err = ParseIgnore(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	zw := zip.NewWriter(w)
	var names []string
	err := filepath.WalkDir(appDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(appDir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ig.Ignored(rel, d.IsDir()) || strings.HasPrefix(path.Base(rel), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		hdr.Name, hdr.Method = rel, zip.Deflate
		hdr.SetMode(info.Mode()) // Unix mode bits: the handler keeps its executable bit
		fw, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(fw, f)
		f.Close()
		names = append(names, rel)
		return err
	})
	if err != nil {
		return nil, err
	}
	return names, zw.Close()
}
