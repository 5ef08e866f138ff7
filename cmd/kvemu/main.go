// Command kvemu runs the local Key Vault (secrets) emulator of internal/dev/kvemu over HTTPS.
//
//	kvemu [-addr 127.0.0.1:0] [-data DIR] [-tls-dir DIR] [-tenant ID] [-vault-name NAME] [-strict]
//	      [-allow ID[:perm,perm...]]... [-delete-latency D] [-purge-latency D]
//	      [-ready-file FILE] [-pid-file FILE] [-log-level info]
//
// It prints the vault URL and the CA bundle to trust, e.g.
//
//	kvemu: vault URL https://127.0.0.1:44321
//	kvemu: CA bundle /tmp/spomig-dev/tls/ca-bundle.pem (SSL_CERT_FILE=/tmp/spomig-dev/tls/ca-bundle.pem)
//
// and, once it accepts connections, writes -ready-file (JSON: url, caBundle, caCert, dataDir, pid; written
// atomically, so its presence means ready) and -pid-file. SIGTERM or SIGINT stops it cleanly (requests in
// flight finish, the state is already on disk) and removes both files.
//
// Defaults: -data $TMPDIR/spomig-dev/kvemu; -tls-dir is the "tls" folder beside -data (the dev CA shared
// with the other emulators, see internal/dev/devtls).
//
// Clients: vault URL = the printed URL; trust = SSL_CERT_FILE=<CA bundle> (or an *http.Client from the
// CA); azsecrets.ClientOptions.DisableChallengeResourceVerification = true (the host is not
// *.vault.azure.net). Any bearer token is accepted unless -strict.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spomig/spomig/internal/dev/devtls"
	"github.com/spomig/spomig/internal/dev/kvemu"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kvemu:", err)
		os.Exit(1)
	}
}

// allowFlag collects -allow ID[:perm,perm...].
type allowFlag []kvemu.AccessPolicy

func (a *allowFlag) String() string { return fmt.Sprint(*a) }

func (a *allowFlag) Set(v string) error {
	id, perms, _ := strings.Cut(v, ":")
	if id == "" {
		return errors.New("want ID[:perm,perm...]")
	}
	p := kvemu.AccessPolicy{Identity: id}
	if perms != "" {
		p.Permissions = strings.Split(perms, ",")
	}
	*a = append(*a, p)
	return nil
}

// Ready is the content of the ready file.
type Ready struct {
	URL      string `json:"url"`
	CABundle string `json:"caBundle"`
	CACert   string `json:"caCert"`
	DataDir  string `json:"dataDir"`
	PID      int    `json:"pid"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kvemu", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		allow     allowFlag
		addr      = fs.String("addr", "127.0.0.1:0", "listen address (port 0: a free port)")
		data      = fs.String("data", filepath.Join(os.TempDir(), "spomig-dev", "kvemu"), "data folder (state survives restarts)")
		tlsDir    = fs.String("tls-dir", "", "dev CA folder (default: the \"tls\" folder beside -data)")
		tenant    = fs.String("tenant", kvemu.DefaultTenantID, "tenant named in the authentication challenge")
		vaultName = fs.String("vault-name", "kvemu", "vault name used in error messages")
		strict    = fs.Bool("strict", false, "require JWT bearer tokens for https://vault.azure.net (signatures are not checked)")
		delLat    = fs.Duration("delete-latency", 0, "emulate the asynchronous delete (409 ObjectIsBeingDeleted meanwhile)")
		purgeLat  = fs.Duration("purge-latency", 0, "emulate the asynchronous purge")
		readyFile = fs.String("ready-file", "", "write this JSON file once serving")
		pidFile   = fs.String("pid-file", "", "write the process id to this file")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
	)
	fs.Var(&allow, "allow", "access policy entry ID[:perm,perm...] (oid or appid; perms get,list,set,delete,recover,purge; repeatable; none: everyone may do everything)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	dataDir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	dir := *tlsDir
	if dir == "" {
		dir = filepath.Join(filepath.Dir(dataDir), "tls")
	}
	ca, err := devtls.LoadOrCreate(dir)
	if err != nil {
		return fmt.Errorf("dev CA: %w", err)
	}
	srv, err := kvemu.Start(kvemu.Options{
		DataDir: dataDir, TenantID: *tenant, VaultName: *vaultName, Strict: *strict, AccessPolicies: allow,
		DeleteLatency: *delLat, PurgeLatency: *purgeLat, Logger: logger, Addr: *addr, CA: ca,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	fmt.Fprintf(stdout, "kvemu: vault URL %s\n", srv.URL())
	fmt.Fprintf(stdout, "kvemu: CA bundle %s (SSL_CERT_FILE=%s)\n", ca.BundlePath(), ca.BundlePath())
	if *pidFile != "" {
		if err := writeAtomic(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
			return err
		}
		defer os.Remove(*pidFile)
	}
	if *readyFile != "" {
		b, _ := json.MarshalIndent(Ready{URL: srv.URL(), CABundle: ca.BundlePath(), CACert: filepath.Join(ca.Dir(), devtls.CACertFile),
			DataDir: dataDir, PID: os.Getpid()}, "", "  ")
		if err := writeAtomic(*readyFile, append(b, '\n')); err != nil {
			return err
		}
		defer os.Remove(*readyFile)
	}
	logger.Info("kvemu ready", "url", srv.URL(), "data", dataDir)
	<-ctx.Done()
	logger.Info("kvemu stopping")
	return srv.Close()
}

func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".kvemu-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}
