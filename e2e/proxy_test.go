package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spomig/spomig/internal/dev/devtls"
)

// spoProxy stands between the handler and the SPO emulator (the handler's SPOMIG_TENANT_HOST), so that
// a test can hold SharePoint's answer to one call after SharePoint acted on it: the window where the
// caller cannot know what happened. It serves HTTPS with a leaf of the stack's dev CA.
type spoProxy struct {
	ln     net.Listener
	srv    *http.Server
	client *http.Client
	target atomic.Pointer[url.URL]

	mu      sync.Mutex
	holdFn  string        // function name (e.g. CreateMigrationJobEncrypted) whose answer is held
	held    chan struct{} // closed when an answer is being held
	release chan struct{} // closed to let it go
}

func startSPOProxy(ca *devtls.CA) (*spoProxy, error) {
	cfg, err := ca.ServerTLS()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &spoProxy{ln: ln, client: ca.HTTPClient()}
	p.client.Timeout = 2 * time.Minute
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(tls.NewListener(ln, cfg))
	return p, nil
}

// Host is host:port of the proxy.
func (p *spoProxy) Host() string { return p.ln.Addr().String() }

// SiteURL is a site of the emulator reached through the proxy.
func (p *spoProxy) SiteURL(name string) string { return "https://" + p.Host() + "/sites/" + name }

func (p *spoProxy) setTarget(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	p.target.Store(u)
	return nil
}

// hold arms the proxy: the next call of function is forwarded, and its answer held until the returned
// release is called (or the caller goes away). held is closed once SharePoint has answered.
func (p *spoProxy) hold(function string) (held <-chan struct{}, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdFn, p.held, p.release = function, make(chan struct{}), make(chan struct{})
	rel := p.release
	var once sync.Once
	return p.held, func() { once.Do(func() { close(rel) }) }
}

func (p *spoProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := p.target.Load()
	if t == nil {
		http.Error(w, "proxy target not set", http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, t.Scheme+"://"+t.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range r.Header {
		out.Header[k] = v
	}
	var held, release chan struct{}
	p.mu.Lock()
	if p.holdFn != "" && strings.Contains(r.URL.Path, "/"+p.holdFn) {
		held, release = p.held, p.release
		p.holdFn = ""
		out = out.WithContext(context.WithoutCancel(r.Context())) // SharePoint acts even if the caller goes away
	}
	p.mu.Unlock()
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if held != nil {
		close(held)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func (p *spoProxy) Close() error { return p.srv.Close() }
