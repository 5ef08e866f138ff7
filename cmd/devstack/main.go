// Command devstack runs spomig's local world (internal/dev/stack).
//
//	devstack demo   the main job end to end: start the stack on free ports, play a migration engineer
//	                (create a migration through the API, build and upload a realistic package, follow it to
//	                its end), print the report, stop everything; exit 0 on success
//	devstack dev    start the stack on the fixed ports of local.settings.json and leave it running until
//	                Ctrl-C, printing every endpoint, the function key and a curl example
//
// Both expect the handler binary in the app folder (`make build` does it) and Azurite installed
// (`npm ci`); `make demo` and `make dev` do both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spomig/spomig/internal/dev/demo"
	"github.com/spomig/spomig/internal/dev/stack"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: devstack demo|dev [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "demo":
		err = runDemo(ctx, os.Args[2:])
	case "dev":
		err = runDev(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want demo or dev)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func checkHandler(app string) error {
	st, err := os.Stat(filepath.Join(app, "handler"))
	if err != nil || st.Mode().Perm()&0o111 == 0 {
		return errors.New("the handler binary is missing: run `make build` (or `make demo`, which does it)")
	}
	return nil
}

func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	app := fs.String("app", ".", "the Functions app folder")
	dir := fs.String("dir", ".devstack/demo", "state folder (wiped at start, except the dev CA)")
	files := fs.Int("files", 320, "files in the demo package")
	verbose := fs.Bool("v", false, "print every part's log")
	site := fs.String("site", "hr", "the SPO emulator site to migrate into")
	fs.Parse(args)
	if err := checkHandler(*app); err != nil {
		return err
	}
	t0 := time.Now()
	var logw io.Writer = io.Discard
	var logFile *os.File
	if *verbose {
		logw = os.Stderr
	} else {
		_ = os.MkdirAll(*dir, 0o755)
		var err error
		if logFile, err = os.Create(filepath.Join(*dir, "stack.log")); err == nil {
			logw = logFile
			defer logFile.Close()
		}
	}
	fmt.Println("▶ starting the local stack: Azurite ×2, Key Vault emulator, SPO emulator, identity endpoint, local Functions host + handler")
	s, err := stack.Start(ctx, stack.Options{AppDir: *app, Dir: *dir, Fresh: true, Log: logw})
	if err != nil {
		return fmt.Errorf("start the stack: %w (logs: %s)", err, filepath.Join(*dir, "stack.log"))
	}
	defer func() {
		fmt.Println("▶ stopping the local stack")
		s.Stop()
	}()
	fmt.Printf("  up in %s: API %s, SPO %s, Key Vault %s\n", time.Since(t0).Round(time.Millisecond), s.APIBase(), s.SPO.URL(), s.KeyVault.URL())
	rep, err := demo.Run(ctx, demo.Options{
		APIBase: s.APIBase(), FunctionKey: s.Host.FunctionKey(),
		AdminBase: s.Host.URL(), MasterKey: s.Host.MasterKey(),
		SiteURL: s.SiteURL(*site), Label: "demo: file share → " + *site,
		WorkDir: *dir, Files: *files,
	})
	if err != nil {
		return fmt.Errorf("demo: %w (stack logs: %s)", err, filepath.Join(*dir, "stack.log"))
	}
	abs, _ := filepath.Abs(filepath.Join(*dir, "data", "sharepoint", "sites", *site))
	fmt.Printf("▶ done in %s: job %s %s — %d files, %.1f MiB\n", time.Since(t0).Round(100*time.Millisecond), rep.JobID, rep.State, rep.Files, float64(rep.Bytes)/(1<<20))
	fmt.Printf("  imported files (as the SPO emulator stored them): %s\n", abs)
	fmt.Printf("  decrypted import logs: %v (migration-reports/%s/ in the app's storage; via the API: /api/migrations/%s/logs)\n", rep.Logs, rep.JobID, rep.JobID)
	return nil
}

func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ExitOnError)
	app := fs.String("app", ".", "the Functions app folder")
	dir := fs.String("dir", ".devstack", "state folder (kept across runs)")
	noHost := fs.Bool("no-host", false, "start everything but the local Functions host: run `func start` yourself")
	fs.Parse(args)
	if !*noHost {
		if err := checkHandler(*app); err != nil {
			return err
		}
	}
	s, err := stack.Start(ctx, stack.Options{AppDir: *app, Dir: *dir, Fixed: true, NoHost: *noHost, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer s.Stop()
	host, key := "not started (-no-host): run `make build && func start` in the app folder", "<your function key>"
	if s.Host != nil {
		host = fmt.Sprintf("%s        function key: %s   master key: %s", s.Host.URL(), s.Host.FunctionKey(), s.Host.MasterKey())
		key = s.Host.FunctionKey()
	}
	fmt.Printf(`
spomig local stack is running (Ctrl-C stops it)

  Functions host (local)   %s
  API                      %s/migrations
  Azurite (app storage)    %s  %s  %s   (UseDevelopmentStorage=true)
  Azurite (SPO's storage)  %s  %s
  Key Vault emulator       %s
  SPO emulator             %s    sites: %s/sites/<name>
  identity endpoint        %s
  dev CA bundle            %s   (SSL_CERT_FILE)

Try:
  curl -s -X POST -H 'x-functions-key: %s' -H 'Content-Type: application/json' \
       -d '{"siteUrl":"%s"}' %s/migrations

local.settings.json points at these endpoints, so "func start" (Azure Functions Core Tools) runs the same
app against this stack: start it with -no-host, then "make build && func start".
`, host, s.APIBase(),
		s.AppStorage.BlobURL, s.AppStorage.QueueURL, s.AppStorage.TableURL,
		s.SPOStorage.BlobURL, s.SPOStorage.QueueURL, s.KeyVault.URL(), s.SPO.URL(), s.SPO.URL(),
		s.IdentityURL, s.CA.BundlePath(), key, s.SiteURL("hr"), s.APIBase())
	<-ctx.Done()
	return nil
}
