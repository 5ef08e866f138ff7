// Command funchost runs a custom-handler function app locally the way the Azure Functions host does: it starts the
// handler executable from host.json, serves the HTTP functions, and drives the blob, queue and timer triggers
// against the storage account in AzureWebJobsStorage (Azurite with UseDevelopmentStorage=true). With Core Tools,
// use `func start` instead.
//
//	funchost [-app DIR] [-addr 127.0.0.1:7071 | -port 7071] [-keys FILE] [-set NAME=VALUE]... [-- handler args...]
//
// See internal/dev/funchost for what is reproduced and what is not, and for the keys file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spomig/spomig/internal/dev/funchost"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "funchost:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("funchost", flag.ContinueOnError)
	appDir := fs.String("app", ".", "function app root (host.json, local.settings.json, <function>/function.json)")
	addr := fs.String("addr", "", "HTTP listen address (default 127.0.0.1:<local.settings.json Host.LocalHttpPort or 7071>)")
	port := fs.Int("port", 0, "HTTP port on 127.0.0.1 (shortcut for -addr)")
	keys := fs.String("keys", "", "keys file (default <app>/.funchost/keys.json)")
	poll := fs.Duration("poll", time.Second, "blob container scan interval")
	startTimeout := fs.Duration("start-timeout", 30*time.Second, "how long the handler has to answer GET /")
	maxBlob := fs.Int64("max-blob-size", 100<<20, "largest blob a blob trigger sends to the handler (bytes)")
	verbose := fs.Bool("verbose", false, "debug logging")
	settings := map[string]string{}
	fs.Func("set", "app setting NAME=VALUE, overriding local.settings.json and the environment (repeatable)", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return errors.New("want NAME=VALUE")
		}
		settings[k] = val
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: funchost [flags] [-- handler command...]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *port != 0 {
		if *addr != "" {
			return errors.New("use -addr or -port, not both")
		}
		*addr = "127.0.0.1:" + strconv.Itoa(*port)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(funchost.NewConsoleHandler(os.Stdout, level))
	h, err := funchost.New(funchost.Options{
		AppDir:         *appDir,
		Settings:       settings,
		HTTPAddr:       *addr,
		Logger:         logger,
		HandlerCommand: fs.Args(),
		KeysFile:       *keys,
		PollInterval:   *poll,
		StartTimeout:   *startTimeout,
		MaxBlobSize:    *maxBlob,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := h.Start(ctx); err != nil {
		return err
	}
	path, created := h.KeysFile()
	state := "existing"
	if created {
		state = "created"
	}
	// Local development keys, printed on purpose so that they can be pasted into requests.
	fmt.Printf("\nKeys (%s file %s):\n  function key (x-functions-key header or ?code=): %s\n  master key   (admin level, /admin/*):          %s\n\n",
		state, path, h.FunctionKey(), h.MasterKey())
	fmt.Printf("Host listening on %s (Ctrl-C to stop)\n", h.URL())
	<-ctx.Done()
	stop() // a second signal now kills the process
	return h.Stop()
}
