// Package azurite starts and stops Azurite, the Azure Storage emulator (Blob, Queue, Table), as a child
// process on free loopback ports, for tests and for the local stack.
//
// Azurite is installed from npm by `npm ci` at the repository root (package.json pins it); this package
// finds node_modules/.bin/azurite by walking up from the working directory. It is started with
// --skipApiVersionCheck (azblob v1.8.x sends an x-ms-version newer than Azurite knows), --loose,
// --disableTelemetry and a throw-away --location, and stopped by PID.
package azurite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The well-known development account of Azurite (its README and EMULATOR_ACCOUNT_KEY_STR).
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Options configures Start. The zero value starts Azurite on three free loopback ports with a temporary data folder.
type Options struct {
	// Dir is the data folder (--location). Empty: a new temporary folder, removed by Stop.
	Dir string
	// BlobPort, QueuePort, TablePort: 0 picks a free port.
	BlobPort, QueuePort, TablePort int
	// Bin is the azurite executable. Empty: node_modules/.bin/azurite found from the working directory upward,
	// then $AZURITE_BIN.
	Bin string
	// Log receives Azurite's stdout and stderr. Nil: discarded (the last 64 KiB is kept for error messages).
	Log io.Writer
	// StartTimeout bounds the wait for the three ports to answer. Default 30s.
	StartTimeout time.Duration
	// CertFile and KeyFile (PEM) serve HTTPS instead of HTTP (--cert/--key), e.g. with a leaf of the dev CA
	// (devtls.CA.WriteServerCert). The URLs then start with https://.
	CertFile, KeyFile string
}

// Server is a running Azurite.
type Server struct {
	BlobURL, QueueURL, TableURL    string // e.g. http://127.0.0.1:10000/devstoreaccount1
	BlobPort, QueuePort, TablePort int
	Dir                            string

	cmd     *exec.Cmd
	tmpDir  bool
	tail    *tailBuffer
	done    chan struct{}
	waitErr error
	stop    sync.Once
}

// ConnectionString is the explicit Azurite connection string the Go SDK understands
// (it does not understand UseDevelopmentStorage=true).
func (s *Server) ConnectionString() string {
	scheme := "http"
	if strings.HasPrefix(s.BlobURL, "https:") {
		scheme = "https"
	}
	return fmt.Sprintf("DefaultEndpointsProtocol=%s;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;QueueEndpoint=%s;TableEndpoint=%s;",
		scheme, Account, Key, s.BlobURL, s.QueueURL, s.TableURL)
}

// PID is the process id of the Azurite process.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// FindBin locates node_modules/.bin/azurite from dir upward, then $AZURITE_BIN.
func FindBin(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "node_modules", ".bin", "azurite")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	if p := os.Getenv("AZURITE_BIN"); p != "" {
		return p, nil
	}
	return "", errors.New("azurite not found: run `npm ci` at the repository root (node_modules/.bin/azurite) or set AZURITE_BIN")
}

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start launches Azurite and waits until the blob, queue and table ports accept connections. When it
// picked the ports itself and Azurite could not bind them (another process took a port between the pick
// and Azurite's bind), it tries again with new ports, up to three times.
func Start(ctx context.Context, opts Options) (*Server, error) {
	picked := opts.BlobPort == 0 || opts.QueuePort == 0 || opts.TablePort == 0
	var err error
	for attempt := 1; ; attempt++ {
		var s *Server
		s, err = start(ctx, opts)
		if err == nil || !picked || attempt == 3 || !errors.Is(err, errExited) {
			return s, err
		}
	}
}

var errExited = errors.New("azurite exited before listening")

func start(ctx context.Context, opts Options) (*Server, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	bin := opts.Bin
	if bin == "" {
		wd, _ := os.Getwd()
		var err error
		if bin, err = FindBin(wd); err != nil {
			return nil, err
		}
	}
	s := &Server{Dir: opts.Dir, tail: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	if s.Dir == "" {
		d, err := os.MkdirTemp("", "azurite-")
		if err != nil {
			return nil, err
		}
		s.Dir, s.tmpDir = d, true
	}
	ports := []*int{&opts.BlobPort, &opts.QueuePort, &opts.TablePort}
	for _, p := range ports {
		if *p == 0 {
			fp, err := FreePort()
			if err != nil {
				return nil, err
			}
			*p = fp
		}
	}
	s.BlobPort, s.QueuePort, s.TablePort = opts.BlobPort, opts.QueuePort, opts.TablePort
	scheme := "http"
	if opts.CertFile != "" {
		scheme = "https"
	}
	s.BlobURL = fmt.Sprintf("%s://127.0.0.1:%d/%s", scheme, s.BlobPort, Account)
	s.QueueURL = fmt.Sprintf("%s://127.0.0.1:%d/%s", scheme, s.QueuePort, Account)
	s.TableURL = fmt.Sprintf("%s://127.0.0.1:%d/%s", scheme, s.TablePort, Account)

	args := []string{
		"--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
		"--location", s.Dir,
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(s.BlobPort),
		"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(s.QueuePort),
		"--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(s.TablePort),
	}
	if opts.CertFile != "" {
		args = append(args, "--cert", opts.CertFile, "--key", opts.KeyFile)
	}
	cmd := exec.Command(bin, args...)
	var out io.Writer = s.tail
	if opts.Log != nil {
		out = io.MultiWriter(s.tail, opts.Log)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group, so that Stop ends node and anything it spawned, and a Ctrl-C of a test run does too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		s.cleanup()
		return nil, fmt.Errorf("start azurite: %w", err)
	}
	s.cmd = cmd
	go func() { s.waitErr = cmd.Wait(); close(s.done) }()

	deadline := time.Now().Add(opts.StartTimeout)
	for _, port := range []int{s.BlobPort, s.QueuePort, s.TablePort} {
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-s.done:
				s.cleanup()
				return nil, fmt.Errorf("%w (%v): %s", errExited, s.waitErr, s.tail.String())
			case <-ctx.Done():
				s.Stop()
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				s.Stop()
				return nil, fmt.Errorf("azurite did not listen on port %d within %s: %s", port, opts.StartTimeout, s.tail.String())
			}
		}
	}
	return s, nil
}

// Stop ends Azurite by PID (SIGTERM to its process group, SIGKILL after 5 s) and removes a temporary data folder.
func (s *Server) Stop() error {
	s.stop.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.done
			}
		}
		s.cleanup()
	})
	return nil
}

// Logs returns the last 64 KiB Azurite printed.
func (s *Server) Logs() string { return s.tail.String() }

func (s *Server) cleanup() {
	if s.tmpDir {
		_ = os.RemoveAll(s.Dir)
	}
}

type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
