package funchost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// worker runs the custom handler process like HttpWorkerProcess/HttpWorkerChannel: a free loopback port in
// FUNCTIONS_CUSTOMHANDLER_PORT, readiness by GET / every 25 ms until any HTTP answer, stdout/stderr captured line by
// line, and a restart when the process exits.
type worker struct {
	log          *slog.Logger
	argv         []string // executable + arguments
	dir          string
	env          []string // settings, without the FUNCTIONS_* port/id variables
	appRoot      string
	startTimeout time.Duration

	mu          sync.Mutex
	cmd         *exec.Cmd
	baseURL     string        // http://127.0.0.1:<port>, empty while not ready
	pendingPort int           // port of the process being started
	ready       chan struct{} // closed when baseURL is set for the current process
	exited      chan struct{} // closed when the current process has exited
	stopped     bool

	stopCh chan struct{}
	done   chan struct{}
}

// resolveExecutable applies the host's rule: the executable is made absolute only if the file exists under the
// working directory; otherwise it is looked up on PATH.
func resolveExecutable(exe, workDir string) string {
	if filepath.IsAbs(exe) {
		return exe
	}
	if p := filepath.Join(workDir, exe); fileExists(p) {
		return p
	}
	return exe
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches the first process and waits until it answers. On failure nothing is left running.
func (w *worker) start(ctx context.Context) error {
	w.stopCh = make(chan struct{})
	w.done = make(chan struct{})
	w.ready = make(chan struct{})
	exited, err := w.spawn()
	if err != nil {
		close(w.done)
		return err
	}
	if err := w.waitUp(ctx, exited); err != nil {
		w.kill()
		<-exited
		close(w.done)
		return err
	}
	go w.supervise(exited)
	return nil
}

// spawn starts one process on a fresh port; the returned channel closes when it exits.
func (w *worker) spawn() (chan struct{}, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	workerID := newGUID()
	cmd := exec.Command(w.argv[0], w.argv[1:]...)
	cmd.Dir = w.dir
	cmd.Env = append(append([]string{}, w.env...),
		"FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port),
		"FUNCTIONS_HTTPWORKER_PORT="+strconv.Itoa(port),
		"FUNCTIONS_CUSTOMHANDLER_WORKER_ID="+workerID,
		"FUNCTIONS_HTTPWORKER_ID="+workerID,
		"FUNCTIONS_APP_ROOT_PATH="+w.appRoot,
	)
	// Own process group, so that stopping ends the handler and anything it started; Pdeathsig ends it if the
	// host dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// Output is logged line by line; WaitDelay keeps a grandchild that holds the pipes open from hiding the exit.
	cmd.Stdout = &lineLogger{log: w.log, prefix: "[handler] ", level: slog.LevelInfo}
	cmd.Stderr = &lineLogger{log: w.log, prefix: "[handler:err] ", level: slog.LevelError}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start custom handler %q: %w", w.argv[0], err)
	}
	w.log.Info(fmt.Sprintf("Started custom handler process (pid %d) on port %d: %s", cmd.Process.Pid, port, w.argv[0]))
	exited := make(chan struct{})
	w.mu.Lock()
	w.cmd = cmd
	w.exited = exited
	w.pendingPort = port
	w.mu.Unlock()
	go func() {
		err := cmd.Wait()
		cmd.Stdout.(*lineLogger).flush()
		cmd.Stderr.(*lineLogger).flush()
		w.mu.Lock()
		if w.cmd == cmd && w.baseURL != "" {
			// It was ready: callers must now wait for the next process.
			w.baseURL = ""
			w.ready = make(chan struct{})
		}
		stopping := w.stopped
		w.mu.Unlock()
		if stopping {
			w.log.Info(fmt.Sprintf("Custom handler process (pid %d) stopped: %v", cmd.Process.Pid, exitText(err)))
		} else {
			w.log.Error(fmt.Sprintf("Custom handler process (pid %d) exited: %v", cmd.Process.Pid, exitText(err)))
		}
		close(exited)
	}()
	return exited, nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// lineLogger logs what a process writes, one record per line (lines longer than 64 KiB are split).
type lineLogger struct {
	log    *slog.Logger
	prefix string
	level  slog.Level
	mu     sync.Mutex
	buf    []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > 64<<10 {
				l.emit(l.buf)
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) emit(line []byte) {
	l.log.Log(context.Background(), l.level, l.prefix+string(bytes.TrimRight(line, "\r")))
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

// waitUp polls GET / every 25 ms until any HTTP response (even 404), as IsWorkerReady does.
func (w *worker) waitUp(ctx context.Context, exited chan struct{}) error {
	w.mu.Lock()
	port := w.pendingPort
	w.mu.Unlock()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(w.startTimeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			w.mu.Lock()
			w.baseURL = base
			close(w.ready)
			w.mu.Unlock()
			w.log.Info("Custom handler is ready at " + base)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("custom handler %q did not answer GET %s/ within %s (it must listen on FUNCTIONS_CUSTOMHANDLER_PORT=%d)",
				w.argv[0], base, w.startTimeout, port)
		}
		select {
		case <-exited:
			return fmt.Errorf("custom handler %q exited before answering on port %d", w.argv[0], port)
		case <-ctx.Done():
			return ctx.Err()
		case <-w.stopCh:
			return errors.New("host stopping")
		case <-tick.C:
		}
	}
}

// supervise restarts the process whenever it exits, with a growing pause when it keeps dying quickly.
func (w *worker) supervise(exited chan struct{}) {
	defer close(w.done)
	backoff := time.Duration(0)
	for {
		started := time.Now()
		select {
		case <-w.stopCh:
			return
		case <-exited:
		}
		if time.Since(started) > 30*time.Second {
			backoff = 0
		}
		select {
		case <-w.stopCh:
			return
		case <-time.After(backoff):
		}
		if backoff == 0 {
			backoff = 500 * time.Millisecond
		} else if backoff < 10*time.Second {
			backoff *= 2
		}
		w.log.Warn("Restarting the custom handler process")
		var err error
		exited, err = w.spawn()
		if err != nil {
			w.log.Error("Restart of the custom handler failed: " + err.Error())
			exited = make(chan struct{})
			close(exited)
			continue
		}
		if err := w.waitUp(context.Background(), exited); err != nil {
			w.log.Error(err.Error())
			w.kill()
		}
	}
}

// endpoint waits until a handler process is ready and returns its base URL.
func (w *worker) endpoint(ctx context.Context) (string, error) {
	for {
		w.mu.Lock()
		base, ready, stopped := w.baseURL, w.ready, w.stopped
		w.mu.Unlock()
		if stopped {
			return "", errors.New("host is stopping")
		}
		if base != "" {
			return base, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for the custom handler: %w", ctx.Err())
		case <-w.stopCh:
			return "", errors.New("host is stopping")
		}
	}
}

// kill sends SIGTERM to the current process group, and SIGKILL after 5 s.
func (w *worker) kill() {
	w.mu.Lock()
	cmd, exited := w.cmd, w.exited
	w.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// stop ends the handler process (by PID, its own process group) and the supervisor.
func (w *worker) stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.mu.Unlock()
	close(w.stopCh)
	w.kill()
	<-w.done
}

// pid returns the current process id (0 when none).
func (w *worker) pid() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil || w.cmd.Process == nil {
		return 0
	}
	return w.cmd.Process.Pid
}
