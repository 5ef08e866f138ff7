package funchost

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultHostVersion is the version the host reports in X-Azure-Functions-HostVersion and User-Agent
// (a 4.x runtime version; the real host sends its own build number).
const DefaultHostVersion = "4.1037.0.0"

// Options configures a Host. Only AppDir is required; see setDefaults for the defaults.
type Options struct {
	// AppDir is the function app root: host.json, local.settings.json and one folder per function.
	AppDir string
	// Settings override app settings (local.settings.json Values and the process environment) and are also
	// passed to the handler's environment.
	Settings map[string]string
	// HTTPAddr is the public listener. Default: 127.0.0.1:<local.settings.json Host.LocalHttpPort or 7071>.
	// "127.0.0.1:0" picks a free port (see URL).
	HTTPAddr string
	// Logger receives the host's log (invocations, handler output). Default: slog.Default().
	Logger *slog.Logger
	// HandlerCommand replaces the executable and arguments from host.json (argv[0] is looked up like
	// defaultExecutablePath: relative to the working directory if the file exists there, else on PATH).
	HandlerCommand []string
	// KeysFile is the keys file. Default: <AppDir>/.funchost/keys.json.
	KeysFile string
	// PollInterval is the blob container scan interval. Default 1s.
	PollInterval time.Duration
	// StartTimeout bounds the wait for the handler to answer GET / (the host's InitializationTimeout). Default 30s.
	StartTimeout time.Duration
	// MaxBlobSize caps the blob a blob trigger sends to the handler; a larger blob fails the invocation (and is
	// eventually poisoned). The real host has no cap: it holds the whole blob in memory. Binary blobs are streamed
	// (no host memory); text blobs of a JSON object up to 4 MiB are read whole to spread their properties into
	// Metadata. Default 100 MiB (a user reported invocations above ~100 MB being killed in Azure).
	MaxBlobSize int64
	// ShutdownTimeout bounds how long Stop waits for running invocations before cancelling them. Default 10s.
	ShutdownTimeout time.Duration
	// HostVersion is reported to the handler. Default DefaultHostVersion.
	HostVersion string
}

func (o *Options) setDefaults(ls *localSettings) {
	if o.HTTPAddr == "" {
		port := 7071
		if ls != nil && ls.Host.LocalHTTPPort > 0 {
			port = ls.Host.LocalHTTPPort
		}
		o.HTTPAddr = "127.0.0.1:" + strconv.Itoa(port)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.KeysFile == "" {
		o.KeysFile = filepath.Join(o.AppDir, ".funchost", "keys.json")
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.MaxBlobSize <= 0 {
		o.MaxBlobSize = 100 << 20
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.HostVersion == "" {
		o.HostVersion = DefaultHostVersion
	}
}

// function is a loaded function with what its trigger needs.
type function struct {
	cfg    *functionConfig
	id     string // Host.Functions.<Name>: the host's function id (receipts, poison messages, timer status)
	route  *routeTemplate
	prec   []int
	blob   *blobPattern
	timer  *timerListener
	queue  *queueListener
	runMu  sync.Mutex // timer: one invocation at a time
	errMsg string
}

// Host is a local Azure Functions host for a custom handler app.
type Host struct {
	opts        Options
	log         *slog.Logger
	app         *appConfig
	keys        *keyStore
	keysCreated bool
	hostID      string
	conns       *connCache
	worker      *worker
	client      *http.Client
	fwdClient   *http.Client
	functions   []*function

	ln  net.Listener
	srv *http.Server

	pollCtx    context.Context // cancelled first on Stop: no new work
	pollCancel context.CancelFunc
	execCtx    context.Context // cancelled after the shutdown grace: running invocations
	execCancel context.CancelFunc
	bg         sync.WaitGroup
	inflight   tracker

	notifyMu   sync.Mutex
	queueWatch map[string][]chan struct{}
	blobWatch  map[string][]chan struct{}
	blobShared *queueListener
	blobSem    chan struct{}

	mu      sync.Mutex
	started bool
	stopped bool
}

// New reads the app folder and prepares a host; Start runs it.
func New(opts Options) (*Host, error) {
	if opts.AppDir == "" {
		return nil, errors.New("funchost: Options.AppDir is required")
	}
	app, err := loadApp(opts.AppDir, os.Environ(), opts.Settings)
	if err != nil {
		return nil, err
	}
	opts.AppDir = app.Dir
	opts.setDefaults(app.Local)
	h := &Host{
		opts:       opts,
		log:        opts.Logger,
		app:        app,
		conns:      newConnCache(app.Settings),
		queueWatch: map[string][]chan struct{}{},
		blobWatch:  map[string][]chan struct{}{},
	}
	h.hostID = hostID(app)
	transport := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	var timeout time.Duration
	if app.Host.FunctionTimeout > 0 {
		timeout = app.Host.FunctionTimeout + time.Minute
	}
	h.client = &http.Client{Transport: transport, Timeout: timeout}
	h.fwdClient = &http.Client{Transport: transport, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if h.keys, h.keysCreated, err = loadKeys(opts.KeysFile, app.Settings); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(app.Errors))
	for n := range app.Errors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h.log.Error(fmt.Sprintf("The function '%s' failed to load: %v", n, app.Errors[n]))
	}
	for _, fc := range app.Functions {
		fn := &function{cfg: fc, id: "Host.Functions." + fc.Name}
		if err := h.prepare(fn); err != nil {
			h.log.Error(fmt.Sprintf("The function '%s' failed to load: %v", fc.Name, err))
			continue
		}
		h.functions = append(h.functions, fn)
	}
	return h, nil
}

var hostIDInvalid = regexp.MustCompile(`[^a-z0-9-]+`)

// hostID is AzureFunctionsWebHost__hostid, else (like the local host) the machine name plus a stable hash of the
// app path, lower case, at most 32 characters.
func hostID(app *appConfig) string {
	for _, k := range []string{"AzureFunctionsWebHost__hostid", "AzureFunctionsWebHost:hostid"} {
		if v, ok := app.Settings.get(k); ok && strings.TrimSpace(v) != "" {
			return strings.ToLower(strings.TrimSpace(v))
		}
	}
	name, _ := os.Hostname()
	name = strings.Trim(hostIDInvalid.ReplaceAllString(strings.ToLower(name), ""), "-")
	f := fnv.New32a()
	_, _ = io.WriteString(f, app.Dir)
	suffix := strconv.FormatUint(uint64(f.Sum32()), 10)
	if len(name) > 31-len(suffix) {
		name = strings.TrimRight(name[:31-len(suffix)], "-")
	}
	if name == "" {
		name = "funchost"
	}
	return name + "-" + suffix
}

// prepare validates what the function's trigger needs (route, blob pattern, schedule).
func (h *Host) prepare(fn *function) error {
	t := fn.cfg.Trigger
	switch {
	case t.is("httpTrigger"):
		route := t.Route
		if route == "" {
			route = fn.cfg.Name
		}
		rt, err := parseRouteTemplate(route)
		if err != nil {
			return err
		}
		fn.route, fn.prec = rt, rt.precedence()
	case t.is("blobTrigger"):
		bp, err := parseBlobPattern(t.Path)
		if err != nil {
			return err
		}
		fn.blob = bp
	case t.is("timerTrigger"):
		tl, err := newTimerListener(h, fn)
		if err != nil {
			return err
		}
		fn.timer = tl
	case t.is("queueTrigger"):
	default:
		return fmt.Errorf("trigger type %q is not supported by funchost", t.Type)
	}
	for _, b := range fn.cfg.Bindings {
		if b == t || b.is("http") || (b.out() && (b.is("queue") || b.is("blob"))) {
			continue
		}
		h.log.Warn(fmt.Sprintf("Function '%s': binding %s of type %q is not supported by funchost and is ignored", fn.cfg.Name, b.Name, b.Type))
	}
	return nil
}

func (h *Host) function(name string) *function {
	for _, f := range h.functions {
		if strings.EqualFold(f.cfg.Name, name) {
			return f
		}
	}
	return nil
}

func (h *Host) functionByID(id string) *function {
	for _, f := range h.functions {
		if f.id == id {
			return f
		}
	}
	return nil
}

// Start starts the handler (waiting until it answers), the HTTP listener and the triggers. ctx bounds the
// start-up only; the host runs until Stop.
func (h *Host) Start(ctx context.Context) (err error) {
	h.mu.Lock()
	if h.started {
		h.mu.Unlock()
		return errors.New("funchost: already started")
	}
	h.started = true
	h.mu.Unlock()

	needsStorage := false
	for _, f := range h.functions {
		if !f.cfg.Disabled && !f.cfg.Trigger.is("httpTrigger") {
			needsStorage = true
		}
	}
	if needsStorage {
		if _, err := h.conns.get("AzureWebJobsStorage"); err != nil {
			return fmt.Errorf("AzureWebJobsStorage is required for non-HTTP triggers: %w", err)
		}
	}

	argv := h.opts.HandlerCommand
	if len(argv) == 0 {
		hc := h.app.Host
		argv = append([]string{hc.Executable}, hc.Arguments...)
		if hc.WorkerPath != "" {
			argv = append(argv, hc.WorkerPath)
			argv = append(argv, hc.WorkerArguments...)
		}
	} else {
		argv = append([]string{}, argv...)
	}
	argv[0] = resolveExecutable(argv[0], h.app.Host.WorkingDir)
	h.worker = &worker{
		log:          h.log,
		argv:         argv,
		dir:          h.app.Host.WorkingDir,
		env:          h.app.Settings.environ(),
		appRoot:      h.app.Dir,
		startTimeout: h.opts.StartTimeout,
	}
	h.pollCtx, h.pollCancel = context.WithCancel(context.Background())
	h.execCtx, h.execCancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			h.pollCancel()
			h.execCancel()
		}
	}()
	if err := h.worker.start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", h.opts.HTTPAddr)
	if err != nil {
		h.worker.stop()
		return fmt.Errorf("listen %s: %w", h.opts.HTTPAddr, err)
	}
	h.ln = ln
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("HTTP listener: " + err.Error())
		}
	}()
	if err := h.startTriggers(ctx); err != nil {
		h.shutdown()
		return err
	}
	h.printFunctions()
	h.log.Info(fmt.Sprintf("Host started (host id %s)", h.hostID))
	return nil
}

func (h *Host) printFunctions() {
	var b strings.Builder
	b.WriteString("Functions:\n")
	for _, f := range h.functions {
		t := f.cfg.Trigger
		state := ""
		if f.cfg.Disabled {
			state = " (disabled)"
		}
		if t.is("httpTrigger") {
			methods := "[" + strings.ToUpper(strings.Join(t.Methods, ",")) + "]"
			if len(t.Methods) == 0 {
				methods = "[ALL]"
			}
			path := f.route.text
			if h.app.Host.RoutePrefix != "" {
				path = h.app.Host.RoutePrefix + "/" + path
			}
			fmt.Fprintf(&b, "\n\t%s: %s %s/%s%s\n", f.cfg.Name, methods, h.URL(), path, state)
			continue
		}
		fmt.Fprintf(&b, "\n\t%s: %s%s\n", f.cfg.Name, t.Type, state)
	}
	h.log.Info(b.String())
}

func (h *Host) startTriggers(ctx context.Context) error {
	var blobFns []*function
	for _, f := range h.functions {
		if f.cfg.Disabled {
			continue
		}
		t := f.cfg.Trigger
		switch {
		case t.is("queueTrigger"):
			ql, err := h.newAppQueueListener(ctx, f)
			if err != nil {
				return fmt.Errorf("function %s: %w", f.cfg.Name, err)
			}
			f.queue = ql
			h.runBG(ql.run)
		case t.is("blobTrigger"):
			blobFns = append(blobFns, f)
		case t.is("timerTrigger"):
			if err := f.timer.start(ctx); err != nil {
				return fmt.Errorf("function %s: %w", f.cfg.Name, err)
			}
			h.runBG(f.timer.run)
		}
	}
	if len(blobFns) > 0 {
		if err := h.startBlobTriggers(ctx, blobFns); err != nil {
			return err
		}
	}
	return nil
}

func (h *Host) runBG(f func()) {
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		f()
	}()
}

// Stop stops the triggers, waits up to ShutdownTimeout for running invocations, stops the HTTP listener and ends
// the handler process (SIGTERM to its process group, SIGKILL after 5 s).
func (h *Host) Stop() error {
	h.mu.Lock()
	if !h.started || h.stopped {
		h.mu.Unlock()
		return nil
	}
	h.stopped = true
	h.mu.Unlock()
	h.log.Info("Stopping host")
	h.shutdown()
	h.log.Info("Host stopped")
	return nil
}

func (h *Host) shutdown() {
	if h.pollCancel == nil {
		return
	}
	h.pollCancel()
	select {
	case <-h.inflight.idle():
	case <-time.After(h.opts.ShutdownTimeout):
		h.log.Warn("Cancelling invocations still running after the shutdown timeout")
	}
	h.execCancel()
	if h.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = h.srv.Shutdown(sctx)
		cancel()
	}
	if h.worker != nil {
		h.worker.stop()
	}
	h.bg.Wait()
}

// tracker counts running invocations; unlike sync.WaitGroup it may be incremented while someone waits.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}
}

func (t *tracker) Add(d int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 && d > 0 {
		t.zero = make(chan struct{})
	}
	t.n += d
	if t.n == 0 && t.zero != nil {
		close(t.zero)
	}
}

func (t *tracker) Done() { t.Add(-1) }

// idle returns a channel that is closed when nothing runs.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return t.zero
}

// URL is the base URL of the HTTP listener, e.g. http://127.0.0.1:7071.
func (h *Host) URL() string {
	if h.ln == nil {
		return "http://" + h.opts.HTTPAddr
	}
	return "http://" + h.ln.Addr().String()
}

// FunctionKey is the default host key: it authorizes every authLevel "function" function.
func (h *Host) FunctionKey() string { return h.keys.keys.HostKeys["default"] }

// MasterKey authorizes everything, including /admin.
func (h *Host) MasterKey() string { return h.keys.keys.MasterKey }

// KeysFile is the path of the keys file and whether this run created it.
func (h *Host) KeysFile() (path string, created bool) { return h.keys.path, h.keysCreated }

// HostID is the host id used for receipts, timer status and the blob trigger queue.
func (h *Host) HostID() string { return h.hostID }

// HandlerPID is the process id of the running handler (0 when none).
func (h *Host) HandlerPID() int {
	if h.worker == nil {
		return 0
	}
	return h.worker.pid()
}

func (h *Host) watch(m map[string][]chan struct{}, key string) chan struct{} {
	ch := make(chan struct{}, 1)
	h.notifyMu.Lock()
	m[key] = append(m[key], ch)
	h.notifyMu.Unlock()
	return ch
}

func (h *Host) notify(m map[string][]chan struct{}, key string) {
	h.notifyMu.Lock()
	defer h.notifyMu.Unlock()
	for _, ch := range m[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// notifyQueue wakes the listeners of a queue the host just wrote to (the host's SharedQueueWatcher).
func (h *Host) notifyQueue(name string) { h.notify(h.queueWatch, strings.ToLower(name)) }

// notifyBlobContainer wakes the scanners of a container the host just wrote to (the host's blob written watcher).
func (h *Host) notifyBlobContainer(name string) { h.notify(h.blobWatch, strings.ToLower(name)) }
