package funchost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// The blob trigger works as the storage extension's polling source (LogsAndContainerScan) does, minus the
// storage logs: each blobTrigger function scans its container; a new blob version (name + ETag) gets a receipt in
// azure-webjobs-hosts/blobreceipts/<hostId>/Host.Functions.<Name>/<ETag>/<container>/<blob> and a message
// {Type, FunctionId, BlobType, ContainerName, BlobName, ETag} on the host queue azure-webjobs-blobtrigger-<hostId>.
// That queue's listener invokes the function; a failure is retried by the queue's dequeue count, and after
// poisonBlobThreshold attempts the message moves to webjobs-blobtrigger-poison. A completed receipt is never
// processed again, so a restarted host does not re-run finished blobs; a new ETag is a new receipt.

const (
	hostsContainer      = "azure-webjobs-hosts"
	blobPoisonQueue     = "webjobs-blobtrigger-poison"
	maxSpreadBlobBytes  = 4 << 20
	receiptLeaseSeconds = 30
)

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// blobPattern is a blobTrigger path: "container/pattern" where {name} captures any text (also '/'), {{ and }}
// are literal braces. Like BindingTemplateSource it matches the whole "container/blob" path with greedy groups.
type blobPattern struct {
	path      string
	container string
	prefix    string // literal start of the blob part, used as listing prefix
	re        *regexp.Regexp
	names     []string
}

func parseBlobPattern(p string) (*blobPattern, error) {
	c, rest, ok := strings.Cut(p, "/")
	if !ok || c == "" {
		return nil, fmt.Errorf("blob path %q must be container/blob-pattern", p)
	}
	if rest == "" {
		rest = "{blobTriggerName}"
	}
	bp := &blobPattern{path: p, container: c}
	var re strings.Builder
	re.WriteString("^" + regexp.QuoteMeta(c+"/"))
	prefixDone := false
	seen := map[string]bool{}
	for i := 0; i < len(rest); i++ {
		ch := rest[i]
		switch {
		case ch == '{' && i+1 < len(rest) && rest[i+1] == '{':
			re.WriteString(`\{`)
			if !prefixDone {
				bp.prefix += "{"
			}
			i++
		case ch == '}' && i+1 < len(rest) && rest[i+1] == '}':
			re.WriteString(`\}`)
			if !prefixDone {
				bp.prefix += "}"
			}
			i++
		case ch == '{':
			end := strings.IndexByte(rest[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("blob path %q: unmatched '{'", p)
			}
			name := rest[i+1 : i+end]
			if !identRE.MatchString(name) {
				return nil, fmt.Errorf("blob path %q: %q is not a valid parameter (expressions are not allowed in a trigger path)", p, name)
			}
			if seen[strings.ToLower(name)] {
				return nil, fmt.Errorf("blob path %q: parameter %q appears twice", p, name)
			}
			seen[strings.ToLower(name)] = true
			bp.names = append(bp.names, name)
			re.WriteString("(.*)")
			prefixDone = true
			i += end
		case ch == '}':
			return nil, fmt.Errorf("blob path %q: unmatched '}'", p)
		default:
			re.WriteString(regexp.QuoteMeta(string(ch)))
			if !prefixDone {
				bp.prefix += string(ch)
			}
		}
	}
	re.WriteString("$")
	var err error
	if bp.re, err = regexp.Compile(re.String()); err != nil {
		return nil, err
	}
	return bp, nil
}

// match returns the pattern values for container/blobName, or false.
func (bp *blobPattern) match(containerName, blobName string) (map[string]string, bool) {
	m := bp.re.FindStringSubmatch(containerName + "/" + blobName)
	if m == nil {
		return nil, false
	}
	vals := make(map[string]string, len(bp.names))
	for i, n := range bp.names {
		vals[n] = m[i+1]
	}
	return vals, true
}

// blobTriggerMessage is the host's BlobTriggerMessage (also the poison message).
type blobTriggerMessage struct {
	Type          string `json:"Type"`
	FunctionID    string `json:"FunctionId"`
	BlobType      string `json:"BlobType"`
	ContainerName string `json:"ContainerName"`
	BlobName      string `json:"BlobName"`
	ETag          string `json:"ETag"`
}

// quoteETag gives the ETag as the HTTP header carries it ("0x8D..." with quotes), as the host records it.
func quoteETag(e string) string {
	if strings.HasPrefix(e, `"`) {
		return e
	}
	return `"` + e + `"`
}

type blobScanner struct {
	h     *Host
	fn    *function
	cc    *container.Client
	hosts *container.Client
	queue *azqueue.QueueClient // host blob trigger queue
	wake  chan struct{}
	done  map[string]bool // etag|blob name with a completed receipt
}

func (h *Host) hostBlobQueueName() string { return "azure-webjobs-blobtrigger-" + h.hostID }

func (h *Host) startBlobTriggers(ctx context.Context, fns []*function) error {
	hostConn, err := h.conns.get("AzureWebJobsStorage")
	if err != nil {
		return err
	}
	hbs, err := hostConn.blobService()
	if err != nil {
		return err
	}
	hqs, err := hostConn.queueService()
	if err != nil {
		return fmt.Errorf("blob triggers need a queue endpoint in AzureWebJobsStorage: %w", err)
	}
	hosts := hbs.NewContainerClient(hostsContainer)
	if _, err := hosts.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create %s: %w", hostsContainer, err)
	}
	bq := hqs.NewQueueClient(h.hostBlobQueueName())
	if err := createQueue(ctx, bq); err != nil {
		return fmt.Errorf("create %s: %w", h.hostBlobQueueName(), err)
	}
	dop := h.app.Host.Blobs.MaxDegreeOfParallelism
	h.blobSem = make(chan struct{}, dop)
	qc := h.app.Host.Queues
	ql := &queueListener{
		h:                 h,
		label:             "Blob trigger queue",
		queueName:         h.hostBlobQueueName(),
		q:                 bq,
		poison:            hqs.NewQueueClient(blobPoisonQueue),
		encoding:          qc.MessageEncoding,
		batchSize:         min(32, dop),
		newBatchThreshold: dop / 2,
		maxDequeue:        h.app.Host.Blobs.PoisonBlobThreshold,
		visibility:        qc.VisibilityTimeout,
		lease:             queueLease,
		maxPoll:           qc.MaxPollingInterval,
		wake:              h.watch(h.queueWatch, h.hostBlobQueueName()),
	}
	ql.handle = h.handleBlobMessage
	ql.poisonFor = func(m *queueMessage) *azqueue.QueueClient {
		var msg blobTriggerMessage
		if json.Unmarshal(m.body, &msg) != nil {
			return nil
		}
		fn := h.functionByID(msg.FunctionID)
		if fn == nil {
			return nil
		}
		sc, err := h.conns.get(fn.cfg.Trigger.Connection)
		if err != nil || sc.queue == nil {
			return nil
		}
		return sc.queue.NewQueueClient(blobPoisonQueue)
	}
	h.blobShared = ql
	for _, fn := range fns {
		t := fn.cfg.Trigger
		sc, err := h.conns.get(t.Connection)
		if err != nil {
			return fmt.Errorf("function %s: %w", fn.cfg.Name, err)
		}
		bs, err := sc.blobService()
		if err != nil {
			return fmt.Errorf("function %s: %w", fn.cfg.Name, err)
		}
		if strings.EqualFold(t.Source, "EventGrid") {
			h.log.Warn(fmt.Sprintf("Function '%s': source EventGrid cannot be reached locally; funchost scans container %s instead", fn.cfg.Name, fn.blob.container))
		}
		s := &blobScanner{h: h, fn: fn, cc: bs.NewContainerClient(fn.blob.container), hosts: hosts, queue: bq,
			wake: h.watch(h.blobWatch, fn.blob.container), done: map[string]bool{}}
		if _, err := s.cc.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return fmt.Errorf("function %s: create container %s: %w", fn.cfg.Name, fn.blob.container, err)
		}
		if err := s.loadReceipts(ctx); err != nil {
			return fmt.Errorf("function %s: read blob receipts: %w", fn.cfg.Name, err)
		}
		h.runBG(s.run)
	}
	h.runBG(ql.run)
	return nil
}

func (s *blobScanner) receiptPrefix() string {
	return "blobreceipts/" + s.h.hostID + "/" + s.fn.id + "/"
}

func (s *blobScanner) receiptName(etag, blobName string) string {
	return s.receiptPrefix() + etag + "/" + s.fn.blob.container + "/" + blobName
}

func doneKey(etag, blobName string) string { return etag + "|" + blobName }

func hasMetadataKey(md map[string]*string, key string) bool {
	for k := range md {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

// loadReceipts reads the completed receipts of this function once, so that scans do not ask per blob.
func (s *blobScanner) loadReceipts(ctx context.Context) error {
	prefix := s.receiptPrefix()
	pager := s.hosts.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix,
		Include: container.ListBlobsInclude{Metadata: true}})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || hasMetadataKey(it.Metadata, "Incomplete") {
				continue
			}
			etag, rest, ok := strings.Cut(strings.TrimPrefix(*it.Name, prefix), "/")
			if !ok {
				continue
			}
			c, name, ok := strings.Cut(rest, "/")
			if ok && c == s.fn.blob.container {
				s.done[doneKey(etag, name)] = true
			}
		}
	}
	return nil
}

func (s *blobScanner) run() {
	h := s.h
	var lastErr string
	for h.pollCtx.Err() == nil {
		if err := s.scan(h.pollCtx); err != nil && h.pollCtx.Err() == nil {
			if err.Error() != lastErr {
				h.log.Warn(fmt.Sprintf("Function '%s': scanning container %s: %v", s.fn.cfg.Name, s.fn.blob.container, err))
				lastErr = err.Error()
			}
		} else {
			lastErr = ""
		}
		t := time.NewTimer(h.opts.PollInterval)
		select {
		case <-h.pollCtx.Done():
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (s *blobScanner) scan(ctx context.Context) error {
	prefix := s.fn.blob.prefix
	opts := &container.ListBlobsFlatOptions{}
	if prefix != "" {
		opts.Prefix = &prefix
	}
	pager := s.cc.NewListBlobsFlatPager(opts)
	enqueued := false
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || it.Properties.ETag == nil {
				continue
			}
			if _, ok := s.fn.blob.match(s.fn.blob.container, *it.Name); !ok {
				continue
			}
			etag := quoteETag(string(*it.Properties.ETag))
			key := doneKey(etag, *it.Name)
			if s.done[key] {
				continue
			}
			blobType := "BlockBlob"
			if it.Properties.BlobType != nil {
				blobType = string(*it.Properties.BlobType)
			}
			ok, err := s.claim(ctx, *it.Name, etag, blobType)
			if err != nil {
				return err
			}
			if ok {
				s.done[key] = true
				enqueued = true
			}
		}
	}
	if enqueued {
		s.h.notifyQueue(s.h.hostBlobQueueName())
	}
	return nil
}

// claim runs the receipt protocol of BlobTriggerExecutor for one blob version: it returns true when the receipt is
// complete (already, or after this host enqueued the blob trigger message), false when another host owns it now.
func (s *blobScanner) claim(ctx context.Context, blobName, etag, blobType string) (bool, error) {
	rb := s.hosts.NewBlockBlobClient(s.receiptName(etag, blobName))
	props, err := rb.GetProperties(ctx, nil)
	switch {
	case err == nil:
		if !hasMetadataKey(props.Metadata, "Incomplete") {
			return true, nil
		}
	case bloberror.HasCode(err, bloberror.BlobNotFound) || isStatus(err, http.StatusNotFound):
		_, err = rb.UploadBuffer(ctx, nil, &blockblob.UploadBufferOptions{
			Metadata:         map[string]*string{"Incomplete": to.Ptr("Incomplete")},
			AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
		})
		if err != nil {
			if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.LeaseIDMissing) || isStatus(err, http.StatusConflict, http.StatusPreconditionFailed) {
				return false, nil
			}
			return false, err
		}
	default:
		return false, err
	}
	lc, err := lease.NewBlobClient(rb, nil)
	if err != nil {
		return false, err
	}
	if _, err := lc.AcquireLease(ctx, receiptLeaseSeconds, nil); err != nil {
		if bloberror.HasCode(err, bloberror.LeaseAlreadyPresent, bloberror.BlobNotFound) {
			return false, nil
		}
		return false, err
	}
	leaseID := lc.LeaseID()
	defer func() {
		rctx, cancel := completionCtx()
		_, _ = lc.ReleaseLease(rctx, nil)
		cancel()
	}()
	props, err = rb.GetProperties(ctx, nil)
	if err != nil {
		return false, err
	}
	if !hasMetadataKey(props.Metadata, "Incomplete") {
		return true, nil
	}
	msg, _ := json.Marshal(blobTriggerMessage{Type: "BlobTrigger", FunctionID: s.fn.id, BlobType: blobType,
		ContainerName: s.fn.blob.container, BlobName: blobName, ETag: etag})
	if err := enqueueCreate(ctx, s.queue, encodeMessage(msg, s.h.app.Host.Queues.MessageEncoding)); err != nil {
		return false, fmt.Errorf("enqueue blob trigger message: %w", err)
	}
	_, err = rb.SetMetadata(ctx, map[string]*string{}, &blob.SetMetadataOptions{
		AccessConditions: &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: leaseID}}})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound, bloberror.LeaseLost) {
		return false, err
	}
	return true, nil
}

func isStatus(err error, codes ...int) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, c := range codes {
		if re.StatusCode == c {
			return true
		}
	}
	return false
}

// handleBlobMessage is BlobQueueTriggerExecutor: messages for unknown functions, deleted blobs or changed ETags
// are completed without invoking.
func (h *Host) handleBlobMessage(ctx context.Context, m *queueMessage) bool {
	var msg blobTriggerMessage
	if err := json.Unmarshal(m.body, &msg); err != nil || msg.FunctionID == "" {
		h.log.Warn(fmt.Sprintf("Invalid blob trigger message %s: %.200s", m.id, m.body))
		return false
	}
	fn := h.functionByID(msg.FunctionID)
	if fn == nil || fn.cfg.Disabled {
		return true
	}
	cc, err := h.blobContainer(fn, msg.ContainerName)
	if err != nil {
		h.log.Error(err.Error())
		return false
	}
	info, err := lookupBlob(ctx, cc, msg.BlobName)
	if err != nil {
		h.log.Warn(fmt.Sprintf("Function '%s': read blob %s/%s: %v", fn.cfg.Name, msg.ContainerName, msg.BlobName, err))
		return false
	}
	if info == nil {
		return true
	}
	if info.etag != msg.ETag {
		h.notifyBlobContainer(msg.ContainerName)
		return true
	}
	select {
	case h.blobSem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-h.blobSem }()
	reason := fmt.Sprintf("New blob detected(LogsAndContainerScan): %s/%s", msg.ContainerName, msg.BlobName)
	return h.invokeBlob(ctx, fn, cc, info, reason) == nil
}

func (h *Host) blobContainer(fn *function, containerName string) (*container.Client, error) {
	sc, err := h.conns.get(fn.cfg.Trigger.Connection)
	if err != nil {
		return nil, err
	}
	bs, err := sc.blobService()
	if err != nil {
		return nil, err
	}
	return bs.NewContainerClient(containerName), nil
}

// blobInfo is what the trigger needs from one blob: its properties and its metadata with the keys' case kept
// (the SDK lower-cases listed metadata keys and canonicalizes header ones, so they are read from the listing XML).
type blobInfo struct {
	name       string
	url        string
	etag       string
	props      *container.BlobProperties
	metaKeys   []string
	metaValues map[string]string
}

// lookupBlob lists exactly one blob by name; nil when it does not exist.
func lookupBlob(ctx context.Context, cc *container.Client, name string) (*blobInfo, error) {
	pager := cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &name,
		Include: container.ListBlobsInclude{Metadata: true}, MaxResults: to.Ptr(int32(50))})
	for pager.More() {
		var raw *http.Response
		page, err := pager.NextPage(runtime.WithCaptureResponse(ctx, &raw))
		if err != nil {
			if bloberror.HasCode(err, bloberror.ContainerNotFound) {
				return nil, nil
			}
			return nil, err
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || *it.Name != name || it.Properties == nil || it.Properties.ETag == nil {
				continue
			}
			info := &blobInfo{name: name, url: blobURI(cc.URL(), name), etag: quoteETag(string(*it.Properties.ETag)),
				props: it.Properties, metaValues: map[string]string{}}
			keys, vals := listedMetadata(raw, name)
			if keys == nil {
				for k, v := range it.Metadata {
					if v != nil {
						keys = append(keys, k)
						vals[k] = *v
					}
				}
			}
			info.metaKeys, info.metaValues = keys, vals
			return info, nil
		}
		if len(page.Segment.BlobItems) > 0 && page.Segment.BlobItems[len(page.Segment.BlobItems)-1].Name != nil &&
			*page.Segment.BlobItems[len(page.Segment.BlobItems)-1].Name > name {
			break
		}
	}
	return nil, nil
}

// blobURI is the blob's Uri as the .NET SDK builds it: each path segment escaped with Uri.EscapeDataString, the
// slashes kept (the Go SDK escapes them as %2F). A SAS query is left out (secrets never go into payloads here;
// the real host would include it).
func blobURI(containerURL, name string) string {
	u, _, _ := strings.Cut(containerURL, "?")
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = urlEncode(s)
	}
	return strings.TrimRight(u, "/") + "/" + strings.Join(segs, "/")
}

// listedMetadata parses the captured List Blobs XML for the metadata of one blob, keeping key case and order.
func listedMetadata(resp *http.Response, name string) ([]string, map[string]string) {
	vals := map[string]string{}
	if resp == nil {
		return nil, vals
	}
	body, err := runtime.Payload(resp)
	if err != nil {
		return nil, vals
	}
	var doc struct {
		Blobs []struct {
			Name struct {
				Encoded bool   `xml:"Encoded,attr"`
				Text    string `xml:",chardata"`
			} `xml:"Name"`
			Metadata struct {
				Items []struct {
					XMLName xml.Name
					Value   string `xml:",chardata"`
				} `xml:",any"`
			} `xml:"Metadata"`
		} `xml:"Blobs>Blob"`
	}
	if xml.Unmarshal(body, &doc) != nil {
		return nil, vals
	}
	for _, b := range doc.Blobs {
		n := b.Name.Text
		if b.Name.Encoded {
			if d, err := url.QueryUnescape(n); err == nil {
				n = d
			}
		}
		if n != name {
			continue
		}
		keys := []string{}
		for _, it := range b.Metadata.Items {
			keys = append(keys, it.XMLName.Local)
			vals[it.XMLName.Local] = it.Value
		}
		return keys, vals
	}
	return nil, vals
}

// invokeBlob invokes a blob trigger function for one blob.
func (h *Host) invokeBlob(ctx context.Context, fn *function, cc *container.Client, info *blobInfo, reason string) error {
	inv, closeBody, err := h.blobInvocation(ctx, fn, cc, info, reason)
	if err != nil {
		h.log.Error(fmt.Sprintf("Function '%s' (blob %s): %v", fn.cfg.Name, info.name, err))
		return err
	}
	defer closeBody()
	_, err = h.execute(ctx, inv)
	return err
}

// blobInvocation builds the envelope of a blob trigger (reference §3.4): Data.<name> is the content (base64 for
// dataType binary, double-encoded text otherwise), Metadata has Uri, Properties, Metadata, the pattern values and
// sys. The content is streamed from storage into the request.
func (h *Host) blobInvocation(ctx context.Context, fn *function, cc *container.Client, info *blobInfo, reason string) (*invocation, func(), error) {
	t := fn.cfg.Trigger
	size := int64(0)
	if info.props.ContentLength != nil {
		size = *info.props.ContentLength
	}
	if size > h.opts.MaxBlobSize {
		return nil, nil, fmt.Errorf("blob is %d bytes, over funchost's MaxBlobSize of %d (the real host would hold it in memory and send it whole)", size, h.opts.MaxBlobSize)
	}
	values, ok := fn.blob.match(fn.blob.container, info.name)
	if !ok {
		return nil, nil, fmt.Errorf("blob %s/%s does not match the trigger path %s", fn.blob.container, info.name, fn.blob.path)
	}
	dl, err := cc.NewBlobClient(info.name).DownloadStream(ctx, &blob.DownloadStreamOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: to.Ptr(azcore.ETag(info.etag))}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("download: %w", err)
	}
	body := dl.Body
	inv := h.newInvocation(fn, reason)
	spread := ""
	if t.binary() || strings.EqualFold(t.DataType, "stream") {
		inv.data = append(inv.data, field{name: t.Name, stream: streamBase64(body)})
	} else {
		br := bufio.NewReaderSize(body, 64<<10)
		head, _ := br.Peek(64)
		head = bytes.TrimLeft(stripBOM(head), " \t\r\n")
		if len(head) > 0 && (head[0] == '{' || head[0] == '[') && size <= maxSpreadBlobBytes {
			all, err := io.ReadAll(br)
			if err != nil {
				body.Close()
				return nil, nil, fmt.Errorf("download: %w", err)
			}
			text := string(stripBOM(all))
			inv.data = append(inv.data, field{name: t.Name, raw: encString(text)})
			spread = text
		} else {
			inv.data = append(inv.data, field{name: t.Name, stream: streamDoubleEncoded(br)})
		}
	}
	inv.bd.set("BlobTrigger", fn.blob.container+"/"+info.name)
	inv.meta.set("Uri", encString(info.url))
	inv.bd.set("Uri", info.url)
	inv.meta.set("Properties", blobPropertiesJSON(info))
	inv.meta.set("Metadata", metadataJSON(info))
	for _, n := range fn.blob.names {
		inv.meta.set(n, encString(values[n]))
		inv.bd.set(n, values[n])
	}
	if spread != "" {
		spreadJSONObject(spread, &inv.meta, inv.bd) // applied last, as the host's TransformInput does
	}
	return inv, func() { body.Close() }, nil
}

func metadataJSON(info *blobInfo) json.RawMessage {
	var b strings.Builder
	b.WriteString("{")
	for i, k := range info.metaKeys {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(nsQuote(k) + ":" + nsQuote(info.metaValues[k]))
	}
	b.WriteString("}")
	return json.RawMessage(b.String())
}

// blobPropertiesJSON renders Metadata.Properties as JObject.FromObject(BlobProperties) would, as far as it can be
// derived (reference §13: not confirmed): PascalCase members, DateTimeOffset as ISO strings, enums as numbers
// (BlobType Block=0 Page=1 Append=2; LeaseState Available=0...; LeaseStatus Locked=0 Unlocked=1), byte[] as base64,
// and the Azure.ETag / AccessTier structs, which have no public properties, as {}. Only the common members are
// written.
func blobPropertiesJSON(info *blobInfo) json.RawMessage {
	p := info.props
	ts := func(t *time.Time) string {
		if t == nil {
			return nsQuote("0001-01-01T00:00:00+00:00")
		}
		return nsQuote(t.UTC().Format("2006-01-02T15:04:05.9999999-07:00"))
	}
	str := func(s *string) string {
		if s == nil {
			return "null"
		}
		return nsQuote(*s)
	}
	enum := func(v string, names ...string) string {
		for i, n := range names {
			if strings.EqualFold(v, n) {
				return fmt.Sprint(i)
			}
		}
		return "0"
	}
	blobType, leaseState, leaseStatus := "", "", ""
	if p.BlobType != nil {
		blobType = string(*p.BlobType)
	}
	if p.LeaseState != nil {
		leaseState = string(*p.LeaseState)
	}
	if p.LeaseStatus != nil {
		leaseStatus = string(*p.LeaseStatus)
	}
	if leaseStatus == "" {
		leaseStatus = "unlocked"
	}
	length := int64(0)
	if p.ContentLength != nil {
		length = *p.ContentLength
	}
	hash := "null"
	if len(p.ContentMD5) > 0 {
		hash = `"` + base64.StdEncoding.EncodeToString(p.ContentMD5) + `"`
	}
	encrypted := "false"
	if p.ServerEncrypted != nil && *p.ServerEncrypted {
		encrypted = "true"
	}
	inferred := "false"
	if p.AccessTierInferred != nil && *p.AccessTierInferred {
		inferred = "true"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{"LastModified":%s,"CreatedOn":%s,"Metadata":%s,"BlobType":%s,"LeaseState":%s,"LeaseStatus":%s,`,
		ts(p.LastModified), ts(p.CreationTime), metadataJSON(info),
		enum(blobType, "BlockBlob", "PageBlob", "AppendBlob"),
		enum(leaseState, "available", "leased", "expired", "breaking", "broken"),
		enum(leaseStatus, "locked", "unlocked"))
	fmt.Fprintf(&b, `"ContentLength":%d,"ContentType":%s,"ETag":{},"ContentHash":%s,"ContentEncoding":%s,"ContentDisposition":%s,`,
		length, str(p.ContentType), hash, str(p.ContentEncoding), str(p.ContentDisposition))
	fmt.Fprintf(&b, `"ContentLanguage":%s,"CacheControl":%s,"IsServerEncrypted":%s,"AccessTier":{},"AccessTierInferred":%s}`,
		str(p.ContentLanguage), str(p.CacheControl), encrypted, inferred)
	return json.RawMessage(b.String())
}

// invokeBlobByPath is the admin endpoint for a blob trigger: input is "container/blob". No receipt, no retry.
func (h *Host) invokeBlobByPath(ctx context.Context, fn *function, input string) error {
	c, name, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(input), "/"), "/")
	if !ok || c == "" || name == "" {
		return fmt.Errorf("input %q must be container/blob", input)
	}
	cc, err := h.blobContainer(fn, c)
	if err != nil {
		return err
	}
	info, err := lookupBlob(ctx, cc, name)
	if err != nil {
		return err
	}
	if info == nil {
		return fmt.Errorf("blob %s/%s not found", c, name)
	}
	if c != fn.blob.container {
		return fmt.Errorf("blob %s/%s is not in the trigger's container %s", c, name, fn.blob.container)
	}
	return h.invokeBlob(ctx, fn, cc, info, adminReason)
}
