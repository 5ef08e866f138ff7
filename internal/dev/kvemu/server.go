package kvemu

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/spomig/spomig/internal/dev/devtls"
)

// Server is a listening emulator (HTTPS with a leaf certificate of the development CA).
type Server struct {
	*Emulator

	url  string
	ca   *devtls.CA
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	err  error
	once sync.Once
}

// Start creates the emulator (New) and serves it over HTTPS on opts.Addr.
func Start(opts Options) (*Server, error) {
	opts.setDefaults()
	ca := opts.CA
	if ca == nil {
		dir := opts.TLSDir
		if dir == "" && opts.DataDir != "" {
			dir = filepath.Join(filepath.Dir(filepath.Clean(opts.DataDir)), "tls")
		}
		var err error
		if dir != "" {
			ca, err = devtls.LoadOrCreate(dir)
		} else {
			ca, err = devtls.New()
		}
		if err != nil {
			return nil, err
		}
	}
	cfg, err := ca.ServerTLS(opts.Hosts...)
	if err != nil {
		return nil, err
	}
	emu, err := New(opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		Emulator: emu,
		url:      "https://" + urlHost(ln.Addr().(*net.TCPAddr)),
		ca:       ca,
		ln:       ln,
		done:     make(chan struct{}),
		srv: &http.Server{
			Handler:           emu,
			TLSConfig:         cfg,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.New(io.Discard, "", 0), // TLS handshake noise from probes
		},
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(tls.NewListener(ln, cfg)); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// urlHost is host:port for the URL; an unspecified listen address is reached through loopback.
func urlHost(a *net.TCPAddr) string {
	ip := a.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

// URL is the vault URL, e.g. https://127.0.0.1:49152.
func (s *Server) URL() string { return s.url }

// CA is the development CA the server certificate chains to.
func (s *Server) CA() *devtls.CA { return s.ca }

// HTTPClient trusts the development CA (use it as azcore.ClientOptions.Transport).
func (s *Server) HTTPClient() *http.Client { return s.ca.HTTPClient() }

// Close stops the server, waiting up to 5 s for requests in flight. The state was saved after every change.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
		<-s.done
	})
	return s.err
}
