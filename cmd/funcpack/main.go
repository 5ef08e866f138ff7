// Command funcpack writes the Functions app folder as a zip ready for zip deploy (`make package`).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/spomig/spomig/internal/funcpack"
)

func main() {
	app := flag.String("app", ".", "the Functions app folder (host.json, function folders, handler)")
	out := flag.String("out", "dist/spomig.zip", "the zip to write")
	flag.Parse()
	if err := run(*app, *out); err != nil {
		fmt.Fprintln(os.Stderr, "funcpack:", err)
		os.Exit(1)
	}
}

func run(app, out string) error {
	if st, err := os.Stat(app + "/handler"); err != nil || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s/handler is missing or not executable: run `make build` first", app)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	names, err := funcpack.Write(f, app)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for _, n := range names {
		fmt.Println("  ", n)
	}
	return nil
}
