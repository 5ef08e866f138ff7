package funcpack

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestWriteHonoursFuncignoreAndKeepsExecBit(t *testing.T) {
	dir := t.TempDir()
	files := map[string]os.FileMode{
		"handler": 0o755, "host.json": 0o644, "ProvisionHttp/function.json": 0o644,
		"handler.go": 0o644, "go.mod": 0o644, "internal/x/x.go": 0o644, "local.settings.json": 0o644,
		"node_modules/azurite/index.js": 0o644, ".funcignore": 0o644, "docs/a.md": 0o644,
	}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		content := "x"
		if name == ".funcignore" {
			content = "*.go\ngo.mod\ninternal/\nnode_modules/\nlocal.settings.json\n# comment\ndocs/\n"
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
	}
	var buf bytes.Buffer
	if _, err := Write(&buf, dir); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range zr.File {
		got = append(got, f.Name)
		if f.Name == "handler" && f.Mode().Perm()&0o111 == 0 {
			t.Fatalf("handler lost its executable bit: %v", f.Mode())
		}
	}
	sort.Strings(got)
	want := "ProvisionHttp/function.json,handler,host.json"
	if strings.Join(got, ",") != want {
		t.Fatalf("zip holds %v, want %s", got, want)
	}
}

func TestIgnoreNegation(t *testing.T) {
	ig, err := ParseIgnore(strings.NewReader("*.json\n!host.json\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !ig.Ignored("a.json", false) || ig.Ignored("host.json", false) {
		t.Fatal("negation not applied")
	}
}
