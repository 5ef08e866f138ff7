package spoemu

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/spomig/spomig/internal/dev/azurite"
	"github.com/spomig/spomig/internal/dev/devtls"
)

// StartTest starts an Emulator for a test and closes it when the test ends. Unless
// opts.StorageConnectionString is set it also starts a dedicated Azurite over HTTPS (a leaf of the dev
// CA, so that SAS carry spr=https as SharePoint's do) and stops it at the end; unless opts.CA is set it
// creates an in-memory dev CA (reach the emulator with e.HTTPClient()). Emulator logs at Warn and above
// go to stderr unless opts.Logger is set.
func StartTest(tb testing.TB, opts Options) *Emulator {
	tb.Helper()
	if opts.CA == nil {
		ca, err := devtls.New()
		if err != nil {
			tb.Fatalf("spoemu: dev CA: %v", err)
		}
		opts.CA = ca
	}
	if opts.StorageConnectionString == "" {
		cert, key, err := opts.CA.WriteServerCert(tb.TempDir())
		if err != nil {
			tb.Fatalf("spoemu: azurite certificate: %v", err)
		}
		srv := azurite.New(tb, azurite.Options{CertFile: cert, KeyFile: key})
		opts.StorageConnectionString = srv.ConnectionString()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	e, err := Start(context.Background(), opts)
	if err != nil {
		tb.Fatalf("spoemu: start: %v", err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}
