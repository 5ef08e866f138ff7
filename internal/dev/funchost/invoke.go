package funchost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// invocation is one call of a function through the default (JSON envelope) path.
type invocation struct {
	fn      *function
	id      string
	reason  string // Executing '...' (Reason='<reason>', ...)
	details string // optional "Trigger Details: ..." line
	data    orderedFields
	meta    orderedFields
	bd      bindingData // binding data for output binding expressions (keeps BlobTrigger, QueueTrigger...)
	sysMeta json.RawMessage
	sysVals map[string]string
	httpRes *httpResponse // set for HTTP functions from their http output
}

func (h *Host) newInvocation(fn *function, reason string) *invocation {
	now := time.Now()
	inv := &invocation{fn: fn, id: newGUID(), reason: reason, bd: bindingData{}}
	inv.sysMeta = sysMetadata(fn.cfg.Name, now)
	var sys struct{ MethodName, UtcNow, RandGuid string }
	_ = json.Unmarshal(inv.sysMeta, &sys)
	inv.sysVals = map[string]string{"methodname": sys.MethodName, "utcnow": sys.UtcNow, "randguid": sys.RandGuid}
	return inv
}

// invocationResult is the handler's answer (reference §4.1). Member names match case-insensitively, Outputs keys
// case-sensitively.
type invocationResult struct {
	Outputs     map[string]json.RawMessage
	Logs        []string
	ReturnValue json.RawMessage
}

// maxResponseBytes bounds how much of a handler's answer is read (the answer is held in memory to be parsed).
const maxResponseBytes = 256 << 20

// parseInvocationResponse applies the host's rules to a default-path answer (reference §4.2): a non-2xx status,
// a non-JSON media type, or a body that is not a JSON object fail the invocation.
func parseInvocationResponse(status int, contentType string, body []byte) (*invocationResult, error) {
	if status < 200 || status > 299 {
		return nil, fmt.Errorf("response status code does not indicate success: %d (%s)", status, http.StatusText(status))
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if contentType == "" || err != nil {
		return nil, fmt.Errorf("no MediaTypeFormatter is available to read an object from content with media type '%s'", contentType)
	}
	if mt != "application/json" && mt != "text/json" {
		return nil, fmt.Errorf("no MediaTypeFormatter is available to read an object from content with media type '%s'", mt)
	}
	body = stripBOM(bytes.TrimSpace(body))
	if len(body) == 0 || string(body) == "null" {
		return nil, errors.New("the custom handler answered 2xx with an empty JSON body (the real host waits for a result that never comes)")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("invalid HttpResponseMessage: %w", err)
	}
	res := &invocationResult{}
	for k, v := range top {
		switch strings.ToLower(k) {
		case "outputs":
			if string(v) != "null" {
				if err := json.Unmarshal(v, &res.Outputs); err != nil {
					return nil, fmt.Errorf("invalid HttpResponseMessage: Outputs: %w", err)
				}
			}
		case "logs":
			if string(v) == "null" {
				continue
			}
			var raw []json.RawMessage
			if err := json.Unmarshal(v, &raw); err != nil {
				return nil, fmt.Errorf("invalid HttpResponseMessage: Logs: %w", err)
			}
			for _, r := range raw {
				var s string
				if json.Unmarshal(r, &s) != nil {
					s = string(r)
				}
				res.Logs = append(res.Logs, s)
			}
		case "returnvalue":
			if string(v) != "null" {
				res.ReturnValue = v
			}
		}
	}
	return res, nil
}

// execute runs one invocation: it POSTs the envelope to the handler, applies the answer and writes the outputs.
// It logs like the host: Executing..., the Logs lines, Executed... (Succeeded|Failed).
func (h *Host) execute(ctx context.Context, inv *invocation) (*invocationResult, error) {
	inv.meta.set("sys", inv.sysMeta)
	h.log.Info(fmt.Sprintf("Executing 'Functions.%s' (Reason='%s', Id=%s)", inv.fn.cfg.Name, inv.reason, inv.id))
	if inv.details != "" {
		h.log.Info(inv.details)
	}
	h.inflight.Add(1)
	defer h.inflight.Done()
	start := time.Now()
	res, err := h.call(ctx, inv)
	if err == nil {
		err = h.writeOutputs(ctx, inv, res)
	}
	ms := time.Since(start).Milliseconds()
	if err != nil {
		h.log.Error(fmt.Sprintf("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", inv.fn.cfg.Name, inv.id, ms), "error", err.Error())
		return nil, err
	}
	h.log.Info(fmt.Sprintf("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", inv.fn.cfg.Name, inv.id, ms))
	return res, nil
}

func (h *Host) call(ctx context.Context, inv *invocation) (*invocationResult, error) {
	if h.app.Host.FunctionTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.app.Host.FunctionTimeout)
		defer cancel()
	}
	base, err := h.worker.endpoint(ctx)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeEnvelope(pw, inv.data, inv.meta)) }()
	defer pr.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/"+inv.fn.cfg.Name, pr)
	if err != nil {
		return nil, err
	}
	req.ContentLength = -1 // sent chunked, like the host's ObjectContent
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	h.addHostHeaders(req.Header, inv.id)
	req.Header.Set("traceparent", newTraceparent())
	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded && h.app.Host.FunctionTimeout > 0 {
			return nil, fmt.Errorf("timeout value of %s exceeded by function 'Functions.%s' (Id: '%s')", h.app.Host.FunctionTimeout, inv.fn.cfg.Name, inv.id)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil, fmt.Errorf("response status code does not indicate success: %d (%s)", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read handler response: %w", err)
	}
	if len(body) > maxResponseBytes {
		return nil, fmt.Errorf("handler response larger than %d bytes", maxResponseBytes)
	}
	res, err := parseInvocationResponse(resp.StatusCode, resp.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, err
	}
	for _, l := range res.Logs {
		h.log.Info(l, "function", inv.fn.cfg.Name, "invocationId", inv.id)
	}
	return res, nil
}

// addHostHeaders adds the headers the host puts on every request to the handler (HttpWorkerConstants, AddHeaders).
func (h *Host) addHostHeaders(hd http.Header, invocationID string) {
	hd.Set("X-Azure-Functions-HostVersion", h.opts.HostVersion)
	hd.Set("X-Azure-Functions-InvocationId", invocationID)
	ua := "Azure-Functions-Host/" + h.opts.HostVersion
	if prev := hd.Get("User-Agent"); prev != "" {
		ua = prev + " " + ua // HttpHeaders.UserAgent.ParseAdd appends a product token
	}
	hd.Set("User-Agent", ua)
}

// outputValue returns the raw value the handler gave for an output binding: ReturnValue for "$return" (falling
// back to Outputs["$return"]), otherwise Outputs[name] (exact case).
func outputValue(b *bindingConfig, res *invocationResult) (json.RawMessage, bool) {
	if b.Name == "$return" && len(res.ReturnValue) > 0 {
		return res.ReturnValue, true
	}
	v, ok := res.Outputs[b.Name]
	if !ok || string(bytes.TrimSpace(v)) == "null" {
		return nil, false
	}
	return v, true
}

// writeOutputs writes the queue and blob outputs. A failure fails the invocation, as in the host.
func (h *Host) writeOutputs(ctx context.Context, inv *invocation, res *invocationResult) error {
	var errs []error
	for _, b := range inv.fn.cfg.outputs() {
		raw, ok := outputValue(b, res)
		if b.is("http") {
			if ok {
				hr, err := parseHTTPOutput(raw)
				if err != nil {
					errs = append(errs, fmt.Errorf("output %s: %w", b.Name, err))
				}
				inv.httpRes = hr
			}
			continue
		}
		if !ok {
			continue
		}
		v, err := convertOutput(raw, b.binary())
		if err != nil {
			errs = append(errs, fmt.Errorf("output %s: %w", b.Name, err))
			continue
		}
		switch {
		case b.is("queue"):
			msgs, err := v.queueMessages()
			if err == nil {
				err = h.enqueueOutput(ctx, b, msgs)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("output %s (queue %s): %w", b.Name, b.QueueName, err))
			}
		case b.is("blob"):
			if err := h.writeBlobOutput(ctx, inv, b, v.blobBytes()); err != nil {
				errs = append(errs, fmt.Errorf("output %s (blob %s): %w", b.Name, b.Path, err))
			}
		default:
			h.log.Warn(fmt.Sprintf("Function '%s': output binding type %q is not supported by funchost; value ignored", inv.fn.cfg.Name, b.Type))
		}
	}
	return errors.Join(errs...)
}
