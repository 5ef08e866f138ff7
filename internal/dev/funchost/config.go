package funchost

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// settings are the app settings as the host sees them: local.settings.json "Values", overridden by the real
// environment (as Core Tools does: a variable already in the environment wins), overridden by Options.Settings.
// Lookups are case-insensitive when no exact match exists, like .NET configuration.
type settings map[string]string

func (s settings) get(name string) (string, bool) {
	if v, ok := s[name]; ok {
		return v, true
	}
	for k, v := range s {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// environ renders the settings as a process environment, sorted for stable output.
func (s settings) environ() []string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, k+"="+s[k])
	}
	return env
}

// localSettings is the part of local.settings.json the host uses.
type localSettings struct {
	IsEncrypted bool              `json:"IsEncrypted"`
	Values      map[string]string `json:"Values"`
	Host        struct {
		LocalHTTPPort int    `json:"LocalHttpPort"`
		CORS          string `json:"CORS"`
	} `json:"Host"`
}

func readLocalSettings(appDir string) (*localSettings, error) {
	ls := &localSettings{}
	b, err := os.ReadFile(filepath.Join(appDir, "local.settings.json"))
	if errors.Is(err, os.ErrNotExist) {
		return ls, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(stripBOM(b), ls); err != nil {
		return nil, fmt.Errorf("local.settings.json: %w", err)
	}
	if ls.IsEncrypted {
		return nil, errors.New("local.settings.json: IsEncrypted is true; funchost reads plain values only")
	}
	return ls, nil
}

func buildSettings(ls *localSettings, environ []string, override map[string]string) settings {
	s := settings{}
	for k, v := range ls.Values {
		s[k] = v
	}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			s[k] = v
		}
	}
	for k, v := range override {
		s[k] = v
	}
	return s
}

var percentRef = regexp.MustCompile(`%([^%\s]+)%`)

// resolveWhole resolves %AppSetting% references like the host's name resolver (ResolveWholeString): every
// reference must resolve.
func (s settings) resolveWhole(v string) (string, error) {
	var missing []string
	out := percentRef.ReplaceAllStringFunc(v, func(m string) string {
		name := m[1 : len(m)-1]
		if val, ok := s.get(name); ok {
			return val
		}
		missing = append(missing, name)
		return m
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q does not resolve to a value: missing app setting %s", v, strings.Join(missing, ", "))
	}
	return out, nil
}

// expandEnv works like .NET Environment.ExpandEnvironmentVariables: %NAME% is replaced when NAME is set and left
// alone otherwise.
func (s settings) expandEnv(v string) string {
	return percentRef.ReplaceAllStringFunc(v, func(m string) string {
		if val, ok := s.get(m[1 : len(m)-1]); ok {
			return val
		}
		return m
	})
}

// hostConfig is what the host uses from host.json.
type hostConfig struct {
	Version string

	// customHandler (or the legacy httpWorker section)
	Executable      string // defaultExecutablePath after %VAR% expansion
	WorkerPath      string // defaultWorkerPath (for interpreters)
	WorkingDir      string // absolute
	Arguments       []string
	WorkerArguments []string
	Legacy          bool // httpWorker section: forwarding is always on for http-only functions
	Forwarding      bool // enableForwardingHttpRequest
	Proxying        bool // enableProxyingHttpRequest (served like forwarding)

	RoutePrefix string

	Queues queuesConfig
	Blobs  blobsConfig

	// FunctionTimeout bounds one invocation; 0 means unbounded ("-1").
	FunctionTimeout time.Duration
}

type queuesConfig struct {
	BatchSize          int
	NewBatchThreshold  int
	MaxDequeueCount    int
	VisibilityTimeout  time.Duration
	MaxPollingInterval time.Duration
	MessageEncoding    string // "base64" or "none"
}

type blobsConfig struct {
	MaxDegreeOfParallelism int
	PoisonBlobThreshold    int
}

// jsonObj is a decoded JSON object whose keys are looked up case-insensitively (host.json is read through .NET
// configuration, which ignores key case).
type jsonObj map[string]any

func (o jsonObj) lookup(path ...string) (any, bool) {
	var cur any = map[string]any(o)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		v, found := m[p]
		if !found {
			for k, vv := range m {
				if strings.EqualFold(k, p) {
					v, found = vv, true
					break
				}
			}
		}
		if !found {
			return nil, false
		}
		cur = v
	}
	return cur, true
}

func (o jsonObj) str(path ...string) (string, bool) {
	v, ok := o.lookup(path...)
	if !ok || v == nil {
		return "", false
	}
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		return t.String(), true
	case bool:
		return strconv.FormatBool(t), true
	}
	return "", false
}

func (o jsonObj) boolean(def bool, path ...string) (bool, error) {
	v, ok := o.lookup(path...)
	if !ok || v == nil {
		return def, nil
	}
	switch t := v.(type) {
	case bool:
		return t, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(t))
		if err != nil {
			return def, fmt.Errorf("%s: %q is not a boolean", strings.Join(path, "."), t)
		}
		return b, nil
	}
	return def, fmt.Errorf("%s: not a boolean", strings.Join(path, "."))
}

func (o jsonObj) integer(def int, path ...string) (int, error) {
	v, ok := o.lookup(path...)
	if !ok || v == nil {
		return def, nil
	}
	var s string
	switch t := v.(type) {
	case json.Number:
		s = t.String()
	case string:
		s = strings.TrimSpace(t)
	default:
		return def, fmt.Errorf("%s: not a number", strings.Join(path, "."))
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return def, fmt.Errorf("%s: %q is not an integer", strings.Join(path, "."), s)
	}
	return n, nil
}

// duration reads a .NET TimeSpan string ("00:00:02"); a bare JSON number is taken as milliseconds (the v1 queue
// settings used milliseconds).
func (o jsonObj) duration(def time.Duration, path ...string) (time.Duration, error) {
	v, ok := o.lookup(path...)
	if !ok || v == nil {
		return def, nil
	}
	switch t := v.(type) {
	case json.Number:
		ms, err := t.Float64()
		if err != nil {
			return def, err
		}
		return time.Duration(ms * float64(time.Millisecond)), nil
	case string:
		d, err := parseTimeSpan(t)
		if err != nil {
			return def, fmt.Errorf("%s: %w", strings.Join(path, "."), err)
		}
		return d, nil
	}
	return def, fmt.Errorf("%s: not a timespan", strings.Join(path, "."))
}

func (o jsonObj) strings(path ...string) ([]string, error) {
	v, ok := o.lookup(path...)
	if !ok || v == nil {
		return nil, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: not an array", strings.Join(path, "."))
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		switch t := e.(type) {
		case string:
			out = append(out, t)
		case json.Number:
			out = append(out, t.String())
		default:
			return nil, fmt.Errorf("%s: array of strings expected", strings.Join(path, "."))
		}
	}
	return out, nil
}

func decodeJSONObject(b []byte) (jsonObj, error) {
	dec := json.NewDecoder(bytes.NewReader(stripBOM(b)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return jsonObj(m), nil
}

// applyHostOverrides applies AzureFunctionsJobHost__path__to__setting app settings to host.json, as the host
// does ("Override host.json values"). Values are set as strings, which every reader here accepts.
func applyHostOverrides(o jsonObj, s settings) {
	const prefix = "azurefunctionsjobhost__"
	keys := make([]string, 0)
	for k := range s {
		if len(k) > len(prefix) && strings.EqualFold(k[:len(prefix)], prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		path := strings.Split(k[len(prefix):], "__")
		cur := map[string]any(o)
		for i, p := range path {
			key := p
			for existing := range cur {
				if strings.EqualFold(existing, p) {
					key = existing
					break
				}
			}
			if i == len(path)-1 {
				cur[key] = s[k]
				break
			}
			next, ok := cur[key].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[key] = next
			}
			cur = next
		}
	}
}

// parseHostJSON reads host.json and applies the defaults documented in the reference (§1).
func parseHostJSON(b []byte, appDir string, s settings) (*hostConfig, error) {
	o, err := decodeJSONObject(b)
	if err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	applyHostOverrides(o, s)
	hc := &hostConfig{}
	hc.Version, _ = o.str("version")
	if hc.Version != "2.0" {
		return nil, fmt.Errorf("host.json: version must be \"2.0\" (got %q)", hc.Version)
	}

	section := "customHandler"
	if _, ok := o.lookup(section); !ok {
		if _, ok := o.lookup("httpWorker"); ok {
			section, hc.Legacy = "httpWorker", true
		} else {
			return nil, errors.New("host.json: no customHandler section")
		}
	}
	exe, _ := o.str(section, "description", "defaultExecutablePath")
	if strings.TrimSpace(exe) == "" {
		return nil, fmt.Errorf("host.json: %s.description.defaultExecutablePath is required", section)
	}
	hc.Executable = s.expandEnv(exe)
	if wp, ok := o.str(section, "description", "defaultWorkerPath"); ok {
		hc.WorkerPath = s.expandEnv(wp)
	}
	wd, _ := o.str(section, "description", "workingDirectory")
	wd = s.expandEnv(wd)
	switch {
	case wd == "":
		hc.WorkingDir = appDir
	case filepath.IsAbs(wd):
		hc.WorkingDir = wd
	default:
		hc.WorkingDir = filepath.Join(appDir, wd)
	}
	if hc.Arguments, err = o.strings(section, "description", "arguments"); err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	for i, a := range hc.Arguments {
		hc.Arguments[i] = s.expandEnv(a)
	}
	if hc.WorkerArguments, err = o.strings(section, "description", "workerArguments"); err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	for i, a := range hc.WorkerArguments {
		hc.WorkerArguments[i] = s.expandEnv(a)
	}
	var errs []error
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var e error
	hc.Forwarding, e = o.boolean(false, section, "enableForwardingHttpRequest")
	collect(e)
	hc.Proxying, e = o.boolean(false, section, "enableProxyingHttpRequest")
	collect(e)

	hc.RoutePrefix = "api"
	if p, ok := o.str("extensions", "http", "routePrefix"); ok {
		hc.RoutePrefix = strings.Trim(p, "/")
	}

	q := &hc.Queues
	q.BatchSize, e = o.integer(16, "extensions", "queues", "batchSize")
	collect(e)
	if q.BatchSize < 1 || q.BatchSize > 32 {
		collect(fmt.Errorf("extensions.queues.batchSize must be 1..32 (got %d)", q.BatchSize))
	}
	// The host's default is N*batchSize/2 with N the vCPU count.
	q.NewBatchThreshold, e = o.integer(runtime.NumCPU()*q.BatchSize/2, "extensions", "queues", "newBatchThreshold")
	collect(e)
	q.MaxDequeueCount, e = o.integer(5, "extensions", "queues", "maxDequeueCount")
	collect(e)
	if q.MaxDequeueCount < 1 {
		collect(fmt.Errorf("extensions.queues.maxDequeueCount must be at least 1 (got %d)", q.MaxDequeueCount))
	}
	q.VisibilityTimeout, e = o.duration(0, "extensions", "queues", "visibilityTimeout")
	collect(e)
	// 1 minute in Azure, 2 s when running locally (Core Tools); this is a local host.
	q.MaxPollingInterval, e = o.duration(2*time.Second, "extensions", "queues", "maxPollingInterval")
	collect(e)
	if q.MaxPollingInterval < 100*time.Millisecond {
		q.MaxPollingInterval = 100 * time.Millisecond
	}
	enc, _ := o.str("extensions", "queues", "messageEncoding")
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "base64":
		q.MessageEncoding = "base64"
	case "none":
		q.MessageEncoding = "none"
	default:
		collect(fmt.Errorf("extensions.queues.messageEncoding must be base64 or none (got %q)", enc))
	}

	b2 := &hc.Blobs
	b2.MaxDegreeOfParallelism, e = o.integer(8*runtime.NumCPU(), "extensions", "blobs", "maxDegreeOfParallelism")
	collect(e)
	if b2.MaxDegreeOfParallelism < 1 {
		b2.MaxDegreeOfParallelism = 1
	}
	b2.PoisonBlobThreshold, e = o.integer(5, "extensions", "blobs", "poisonBlobThreshold")
	collect(e)
	if b2.PoisonBlobThreshold < 1 {
		b2.PoisonBlobThreshold = 1
	}

	// Non-Consumption default is 30 minutes; "-1" means unbounded.
	hc.FunctionTimeout = 30 * time.Minute
	if ft, ok := o.str("functionTimeout"); ok {
		ft = strings.TrimSpace(ft)
		if ft == "-1" {
			hc.FunctionTimeout = 0
		} else if d, err := parseTimeSpan(ft); err != nil || d <= 0 {
			collect(fmt.Errorf("functionTimeout: %q is not a positive timespan or -1", ft))
		} else {
			hc.FunctionTimeout = d
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("host.json: %w", errors.Join(errs...))
	}
	return hc, nil
}

// parseTimeSpan parses the invariant .NET TimeSpan formats: "d", "[-][d.]hh:mm[:ss[.fffffff]]".
func parseTimeSpan(s string) (time.Duration, error) {
	orig := s
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a timespan", orig)
	neg := false
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	if s == "" {
		return 0, bad
	}
	num := func(p string, max int64) (int64, bool) {
		if p == "" || len(p) > 10 {
			return 0, false
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || (max >= 0 && n > max) {
			return 0, false
		}
		return n, true
	}
	const maxDays = 10675199 // TimeSpan.MaxValue days
	var d time.Duration
	if !strings.Contains(s, ":") {
		days, ok := num(s, maxDays)
		if !ok || days > int64(time.Duration(1<<63-1)/(24*time.Hour)) {
			return 0, bad
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		parts := strings.Split(s, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return 0, bad
		}
		var days int64
		hourPart := parts[0]
		if dd, hh, ok := strings.Cut(parts[0], "."); ok {
			var ok2 bool
			if days, ok2 = num(dd, 106751); !ok2 {
				return 0, bad
			}
			hourPart = hh
		}
		h, ok := num(hourPart, 23)
		if !ok {
			return 0, bad
		}
		m, ok := num(parts[1], 59)
		if !ok {
			return 0, bad
		}
		var sec, frac int64
		if len(parts) == 3 {
			sp, fp, hasFrac := strings.Cut(parts[2], ".")
			if sec, ok = num(sp, 59); !ok {
				return 0, bad
			}
			if hasFrac {
				if len(fp) == 0 || len(fp) > 7 {
					return 0, bad
				}
				f, ok := num(fp, -1)
				if !ok {
					return 0, bad
				}
				for i := len(fp); i < 7; i++ {
					f *= 10
				}
				frac = f * 100 // ticks (100 ns) to ns
			}
		}
		d = time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
			time.Duration(sec)*time.Second + time.Duration(frac)
	}
	if neg {
		d = -d
	}
	return d, nil
}

func stripBOM(b []byte) []byte {
	return bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
}

// bindingConfig is one entry of function.json "bindings".
type bindingConfig struct {
	Type      string
	Direction string
	Name      string
	DataType  string // "binary", "string", "stream" or ""

	// httpTrigger
	AuthLevel string
	Methods   []string
	Route     string

	// blob, blobTrigger, queue, queueTrigger
	Path       string // resolved %settings%, still holding {placeholders}
	Connection string
	QueueName  string // resolved, lower-cased
	Source     string

	// timerTrigger
	Schedule     string // resolved
	RunOnStartup bool
	UseMonitor   *bool
}

func (b *bindingConfig) is(typ string) bool { return strings.EqualFold(b.Type, typ) }
func (b *bindingConfig) in() bool           { return strings.EqualFold(b.Direction, "in") }
func (b *bindingConfig) out() bool          { return strings.EqualFold(b.Direction, "out") }
func (b *bindingConfig) binary() bool       { return strings.EqualFold(b.DataType, "binary") }

// functionConfig is one <dir>/function.json. The folder name is the function name.
type functionConfig struct {
	Name     string
	Dir      string
	Disabled bool
	Bindings []*bindingConfig
	Trigger  *bindingConfig
}

func (f *functionConfig) outputs() []*bindingConfig {
	var out []*bindingConfig
	for _, b := range f.Bindings {
		if b.out() {
			out = append(out, b)
		}
	}
	return out
}

// httpInAndOut reports whether the function consists of exactly one httpTrigger input and one http output
// (FunctionMetadataExtensions.IsHttpInAndOutFunction): only those are forwarded.
func (f *functionConfig) httpInAndOut() bool {
	var ins, outs []*bindingConfig
	for _, b := range f.Bindings {
		if b.in() {
			ins = append(ins, b)
		} else if b.out() {
			outs = append(outs, b)
		}
	}
	return len(ins) == 1 && ins[0].is("httpTrigger") && len(outs) == 1 && outs[0].is("http")
}

var functionNameRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9_\-]{0,127}$`)
var bindingNameRE = regexp.MustCompile(`(?i)^([a-z][a-z0-9]*|\$return)$`)
var queueNameRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

// parseFunctionJSON reads one function.json. s resolves %AppSetting% references in queueName, path and schedule.
func parseFunctionJSON(name string, b []byte, s settings) (*functionConfig, error) {
	if !functionNameRE.MatchString(name) {
		return nil, fmt.Errorf("%q is not a valid function name", name)
	}
	o, err := decodeJSONObject(b)
	if err != nil {
		return nil, fmt.Errorf("function.json: %w", err)
	}
	fc := &functionConfig{Name: name}
	if fc.Disabled, err = o.boolean(false, "disabled"); err != nil {
		// Old hosts also accepted the name of a setting here.
		if sname, ok := o.str("disabled"); ok {
			v, _ := s.get(sname)
			fc.Disabled, _ = strconv.ParseBool(v)
		}
	}
	raw, ok := o.lookup("bindings")
	arr, isArr := raw.([]any)
	if !ok || !isArr {
		return nil, errors.New("function.json: bindings array required")
	}
	seen := map[string]bool{}
	for i, e := range arr {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("function.json: binding %d is not an object", i)
		}
		bo := jsonObj(m)
		bc := &bindingConfig{}
		bc.Type, _ = bo.str("type")
		bc.Direction, _ = bo.str("direction")
		bc.Name, _ = bo.str("name")
		bc.DataType, _ = bo.str("dataType")
		if bc.Type == "" || bc.Name == "" {
			return nil, fmt.Errorf("function.json: binding %d needs type and name", i)
		}
		if !bindingNameRE.MatchString(bc.Name) {
			return nil, fmt.Errorf("function.json: the binding name %s is invalid", bc.Name)
		}
		if seen[strings.ToLower(bc.Name)] {
			return nil, fmt.Errorf("function.json: duplicate binding name %s", bc.Name)
		}
		seen[strings.ToLower(bc.Name)] = true
		if strings.HasSuffix(strings.ToLower(bc.Type), "trigger") {
			if bc.Direction == "" {
				bc.Direction = "in"
			}
			if fc.Trigger != nil {
				return nil, errors.New("function.json: more than one trigger")
			}
			fc.Trigger = bc
		}
		if !bc.in() && !bc.out() && !strings.EqualFold(bc.Direction, "inout") {
			return nil, fmt.Errorf("function.json: binding %s: direction must be in or out", bc.Name)
		}
		if bc.Name == "$return" && !bc.out() {
			return nil, errors.New("function.json: $return bindings must specify a direction of 'out'")
		}
		bc.AuthLevel, _ = bo.str("authLevel")
		if bc.Methods, err = bo.strings("methods"); err != nil {
			return nil, fmt.Errorf("function.json: %w", err)
		}
		bc.Route, _ = bo.str("route")
		bc.Connection, _ = bo.str("connection")
		bc.Source, _ = bo.str("source")
		if p, ok := bo.str("path"); ok {
			if bc.Path, err = s.resolveWhole(p); err != nil {
				return nil, fmt.Errorf("binding %s path: %w", bc.Name, err)
			}
		}
		if q, ok := bo.str("queueName"); ok {
			if q, err = s.resolveWhole(q); err != nil {
				return nil, fmt.Errorf("binding %s queueName: %w", bc.Name, err)
			}
			bc.QueueName = strings.ToLower(strings.TrimSpace(q))
		}
		if sc, ok := bo.str("schedule"); ok {
			if bc.Schedule, err = s.resolveWhole(sc); err != nil {
				return nil, fmt.Errorf("binding %s schedule: %w", bc.Name, err)
			}
		}
		if bc.RunOnStartup, err = bo.boolean(false, "runOnStartup"); err != nil {
			return nil, fmt.Errorf("function.json: %w", err)
		}
		if _, ok := bo.lookup("useMonitor"); ok {
			um, err := bo.boolean(true, "useMonitor")
			if err != nil {
				return nil, fmt.Errorf("function.json: %w", err)
			}
			bc.UseMonitor = &um
		}
		if err := validateBinding(bc); err != nil {
			return nil, fmt.Errorf("function.json: binding %s: %w", bc.Name, err)
		}
		fc.Bindings = append(fc.Bindings, bc)
	}
	if fc.Trigger == nil {
		return nil, errors.New("function.json: no trigger binding")
	}
	return fc, nil
}

func validateBinding(b *bindingConfig) error {
	switch {
	case b.is("queueTrigger"), b.is("queue"):
		if !queueNameRE.MatchString(b.QueueName) {
			return fmt.Errorf("invalid queue name %q", b.QueueName)
		}
	case b.is("blobTrigger"), b.is("blob"):
		c, _, _ := strings.Cut(b.Path, "/")
		if b.Path == "" || c == "" {
			return errors.New("path must be container/blob pattern")
		}
		if b.is("blobTrigger") && strings.ContainsAny(c, "{}") {
			return errors.New("the container name of a blob trigger path can't contain a binding expression")
		}
	case b.is("timerTrigger"):
		if strings.TrimSpace(b.Schedule) == "" {
			return errors.New("schedule is required")
		}
	case b.is("httpTrigger"):
		switch strings.ToLower(b.AuthLevel) {
		case "", "anonymous", "function", "admin", "system", "user":
		default:
			return fmt.Errorf("invalid authLevel %q", b.AuthLevel)
		}
	}
	return nil
}

// appConfig is everything read from the app folder.
type appConfig struct {
	Dir       string
	Host      *hostConfig
	Local     *localSettings
	Settings  settings
	Functions []*functionConfig
	// Errors holds the functions that failed to load (the host logs them and runs the others).
	Errors map[string]error
}

func loadApp(appDir string, environ []string, override map[string]string) (*appConfig, error) {
	abs, err := filepath.Abs(appDir)
	if err != nil {
		return nil, err
	}
	ls, err := readLocalSettings(abs)
	if err != nil {
		return nil, err
	}
	s := buildSettings(ls, environ, override)
	hb, err := os.ReadFile(filepath.Join(abs, "host.json"))
	if err != nil {
		return nil, fmt.Errorf("read host.json: %w", err)
	}
	hc, err := parseHostJSON(hb, abs, s)
	if err != nil {
		return nil, err
	}
	app := &appConfig{Dir: abs, Host: hc, Local: ls, Settings: s, Errors: map[string]error{}}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		fb, err := os.ReadFile(filepath.Join(abs, e.Name(), "function.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			app.Errors[e.Name()] = err
			continue
		}
		fc, err := parseFunctionJSON(e.Name(), fb, s)
		if err != nil {
			app.Errors[e.Name()] = err
			continue
		}
		fc.Dir = filepath.Join(abs, e.Name())
		if v, ok := s.get("AzureWebJobs." + fc.Name + ".Disabled"); ok {
			if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
				fc.Disabled = b
			}
		}
		app.Functions = append(app.Functions, fc)
	}
	return app, nil
}

func (a *appConfig) function(name string) *functionConfig {
	for _, f := range a.Functions {
		if strings.EqualFold(f.Name, name) {
			return f
		}
	}
	return nil
}
