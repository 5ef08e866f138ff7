// Command handler is spomig's Azure Functions custom handler: one HTTP server that serves the four
// functions of the app (ProvisionHttp, EncryptBlobTrigger, SubmitQueueTrigger, MonitorTimer) to the
// Functions host on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spomig/spomig/functions"
	"github.com/spomig/spomig/internal/app"
	"github.com/spomig/spomig/internal/config"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "handler:", err)
		os.Exit(1)
	}
}

// Server timeouts. Invocations may run up to host.json's functionTimeout (30 min); the host's own client
// waits functionTimeout + 1 min.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 5 * time.Minute
	writeTimeout      = 35 * time.Minute
	idleTimeout       = 2 * time.Minute
	shutdownBudget    = 10 * time.Second
)

// run reads the port, and serves until SIGINT/SIGTERM. Nothing but the port is read before serving:
// the services (and their settings) are built on the first invocation, so GET / answers at once.
func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	log := newLogger(os.Getenv("SPOMIG_LOG_LEVEL"))
	slog.SetDefault(log)

	port, err := config.Port(os.Getenv)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	router := functions.NewRouter(functions.Options{
		Services: app.NewLazy(os.Getenv, log),
		Logger:   log,
		Version:  app.Version,
	})
	srv := &http.Server{
		Handler:           router,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// In-flight invocations keep their context through a graceful shutdown; it is cancelled only after.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv.BaseContext = func(net.Listener) context.Context { return baseCtx }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("handler listening", "addr", ln.Addr().String(), "version", app.Version)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(functions.NewLogHandler(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: l})))
}
