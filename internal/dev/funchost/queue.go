package funchost

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
)

// queueMessage is a dequeued message, its text decoded per messageEncoding.
type queueMessage struct {
	id           string
	raw          string // text as stored in the queue
	body         []byte // decoded (base64) or raw text bytes (none)
	dequeueCount int64
	inserted     time.Time
	expires      time.Time
	nextVisible  time.Time

	mu         sync.Mutex
	popReceipt string
}

func (m *queueMessage) receipt() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.popReceipt
}

func (m *queueMessage) setReceipt(r string) {
	m.mu.Lock()
	m.popReceipt = r
	m.mu.Unlock()
}

// queueListener is the storage extension's QueueListener + QueueProcessor: randomized exponential back-off
// polling, batches processed in parallel, a 10-minute visibility lease renewed at half-time, delete on success,
// visibilityTimeout on failure, and the poison queue after maxDequeueCount attempts.
type queueListener struct {
	h         *Host
	label     string // for logs: "Function 'X'" or "blob trigger queue"
	queueName string
	q         *azqueue.QueueClient
	poison    *azqueue.QueueClient // nil: no poison queue (the queue is itself "-poison", or the name is too long)
	encoding  string

	batchSize, newBatchThreshold, maxDequeue int
	visibility                               time.Duration // after a failure
	lease                                    time.Duration // while processing
	maxPoll                                  time.Duration
	wake                                     chan struct{}

	// poisonFor picks the poison queue for a message (blob trigger: the blob's account); nil uses poison.
	poisonFor func(m *queueMessage) *azqueue.QueueClient
	// handle processes a message and reports success.
	handle func(ctx context.Context, m *queueMessage) bool

	inflight sync.WaitGroup
	countMu  sync.Mutex
	count    int
	countCh  chan struct{}
}

const queueLease = 10 * time.Minute

// poisonQueueName is the host's CreatePoisonQueueReference: "<queue>-poison", unless the queue already is a poison
// queue or the name would be invalid.
func poisonQueueName(name string) (string, bool) {
	if strings.HasSuffix(name, "-poison") {
		return "", false
	}
	p := name + "-poison"
	return p, queueNameRE.MatchString(p)
}

func (h *Host) newAppQueueListener(ctx context.Context, fn *function) (*queueListener, error) {
	t := fn.cfg.Trigger
	sc, err := h.conns.get(t.Connection)
	if err != nil {
		return nil, err
	}
	qs, err := sc.queueService()
	if err != nil {
		return nil, err
	}
	qc := h.app.Host.Queues
	ql := &queueListener{
		h:                 h,
		label:             "Function '" + fn.cfg.Name + "'",
		queueName:         t.QueueName,
		q:                 qs.NewQueueClient(t.QueueName),
		encoding:          qc.MessageEncoding,
		batchSize:         qc.BatchSize,
		newBatchThreshold: qc.NewBatchThreshold,
		maxDequeue:        qc.MaxDequeueCount,
		visibility:        qc.VisibilityTimeout,
		lease:             queueLease,
		maxPoll:           qc.MaxPollingInterval,
	}
	if p, ok := poisonQueueName(t.QueueName); ok {
		ql.poison = qs.NewQueueClient(p)
	}
	ql.handle = func(ctx context.Context, m *queueMessage) bool {
		_, err := h.execute(ctx, h.queueInvocation(fn, m, t.QueueName))
		return err == nil
	}
	if err := createQueue(ctx, ql.q); err != nil {
		return nil, fmt.Errorf("create queue %s: %w", t.QueueName, err)
	}
	ql.wake = h.watch(h.queueWatch, t.QueueName)
	return ql, nil
}

func createQueue(ctx context.Context, q *azqueue.QueueClient) error {
	if _, err := q.Create(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		return err
	}
	return nil
}

// backoff is RandomizedExponentialBackoffStrategy with a 100 ms minimum.
type backoff struct {
	min, max, cur time.Duration
	exp           uint
}

func (b *backoff) next(succeeded bool) time.Duration {
	if succeeded {
		b.cur, b.exp = b.min, 1
		return b.cur
	}
	if b.cur == b.max {
		return b.cur
	}
	d := b.min
	if b.exp > 0 {
		d += time.Duration((0.8 + 0.4*rand.Float64()) * float64(uint64(1)<<(b.exp-1)) * float64(b.min))
	}
	if d < b.max {
		b.cur = d
		b.exp++
	} else {
		b.cur = b.max
	}
	return b.cur
}

func (ql *queueListener) run() {
	h := ql.h
	if ql.countCh == nil {
		ql.countCh = make(chan struct{}, 1)
	}
	bo := &backoff{min: 100 * time.Millisecond, max: ql.maxPoll}
	found := false
	var lastErr string
	for h.pollCtx.Err() == nil {
		resp, err := ql.q.DequeueMessages(h.pollCtx, &azqueue.DequeueMessagesOptions{
			NumberOfMessages:  to.Ptr(int32(ql.batchSize)),
			VisibilityTimeout: to.Ptr(int32(ql.lease / time.Second)),
		})
		var delay time.Duration
		switch {
		case err != nil:
			if h.pollCtx.Err() != nil {
				break
			}
			if queueerror.HasCode(err, queueerror.QueueNotFound) {
				_ = createQueue(h.pollCtx, ql.q)
			}
			if msg := err.Error(); msg != lastErr {
				h.log.Warn(fmt.Sprintf("%s: polling queue %s: %v", ql.label, ql.queueName, err))
				lastErr = msg
			}
			delay = bo.next(false)
		case len(resp.Messages) == 0:
			lastErr = ""
			delay = bo.next(found)
			found = false
		default:
			lastErr = ""
			found = true
			for _, dm := range resp.Messages {
				m := fromDequeued(dm)
				ql.add(1)
				go func() {
					defer ql.add(-1)
					ql.process(m)
				}()
			}
			ql.waitBelow(ql.newBatchThreshold)
			continue
		}
		if h.pollCtx.Err() != nil {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-h.pollCtx.Done():
		case <-ql.wake:
		case <-t.C:
		}
		t.Stop()
	}
	ql.inflight.Wait()
}

func (ql *queueListener) add(d int) {
	ql.countMu.Lock()
	ql.count += d
	ql.countMu.Unlock()
	if d > 0 {
		ql.inflight.Add(1)
		return
	}
	ql.inflight.Done()
	select {
	case ql.countCh <- struct{}{}:
	default:
	}
}

// waitBelow waits until at most n messages are being processed (WaitForNewBatchThreshold).
func (ql *queueListener) waitBelow(n int) {
	for {
		ql.countMu.Lock()
		c := ql.count
		ql.countMu.Unlock()
		if c <= n {
			return
		}
		select {
		case <-ql.countCh:
		case <-ql.h.pollCtx.Done():
			return
		}
	}
}

func fromDequeued(dm *azqueue.DequeuedMessage) *queueMessage {
	m := &queueMessage{}
	if dm.MessageID != nil {
		m.id = *dm.MessageID
	}
	if dm.PopReceipt != nil {
		m.popReceipt = *dm.PopReceipt
	}
	if dm.MessageText != nil {
		m.raw = *dm.MessageText
	}
	if dm.DequeueCount != nil {
		m.dequeueCount = *dm.DequeueCount
	}
	if dm.InsertionTime != nil {
		m.inserted = *dm.InsertionTime
	}
	if dm.ExpirationTime != nil {
		m.expires = *dm.ExpirationTime
	}
	if dm.TimeNextVisible != nil {
		m.nextVisible = *dm.TimeNextVisible
	}
	return m
}

// completionCtx is used to delete/release/poison a message even while the host stops (the host does not cancel
// message completion on a graceful shutdown).
func completionCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (ql *queueListener) process(m *queueMessage) {
	h := ql.h
	if ql.encoding == "base64" {
		b, ok := dotnetBase64(m.raw)
		if !ok {
			// The SDK's MessageDecodingFailed handler: straight to the poison queue, copied verbatim (through a
			// non-encoding client), never invoked.
			h.log.Warn(fmt.Sprintf("%s: message %s on queue %s is not valid base64 (messageEncoding is base64); moving it to the poison queue", ql.label, m.id, ql.queueName))
			ql.movePoison(m, m.raw)
			return
		}
		m.body = b
	} else {
		m.body = []byte(m.raw)
	}
	if m.dequeueCount > int64(ql.maxDequeue) {
		ql.movePoison(m, encodeMessage(m.body, ql.encoding))
		return
	}
	stopRenew := ql.renew(m)
	ok := ql.handle(h.execCtx, m)
	stopRenew()
	ctx, cancel := completionCtx()
	defer cancel()
	switch {
	case ok:
		if _, err := ql.q.DeleteMessage(ctx, m.id, m.receipt(), nil); err != nil && !queueerror.HasCode(err, queueerror.MessageNotFound, queueerror.PopReceiptMismatch) {
			h.log.Warn(fmt.Sprintf("%s: delete message %s: %v", ql.label, m.id, err))
		}
	case ql.poisonQueue(m) == nil:
		// No poison queue: leave the message invisible, to avoid a fast infinite loop.
	case m.dequeueCount >= int64(ql.maxDequeue):
		ql.movePoison(m, encodeMessage(m.body, ql.encoding))
	default:
		_, err := ql.q.UpdateMessage(ctx, m.id, m.receipt(), m.raw,
			&azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(ql.visibility / time.Second))})
		if err != nil && !queueerror.HasCode(err, queueerror.MessageNotFound, queueerror.PopReceiptMismatch) {
			h.log.Warn(fmt.Sprintf("%s: release message %s: %v", ql.label, m.id, err))
		}
	}
}

func (ql *queueListener) poisonQueue(m *queueMessage) *azqueue.QueueClient {
	if ql.poisonFor != nil {
		if p := ql.poisonFor(m); p != nil {
			return p
		}
	}
	return ql.poison
}

// movePoison copies the message text to the poison queue (created if missing) and deletes the original.
func (ql *queueListener) movePoison(m *queueMessage, text string) {
	h := ql.h
	p := ql.poisonQueue(m)
	if p == nil {
		return
	}
	ctx, cancel := completionCtx()
	defer cancel()
	pname := queueNameOf(p)
	h.log.Warn(fmt.Sprintf("Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.", ql.maxDequeue, pname))
	if err := enqueueCreate(ctx, p, text); err != nil {
		h.log.Error(fmt.Sprintf("%s: copy message %s to %s: %v", ql.label, m.id, pname, err))
		return
	}
	if _, err := ql.q.DeleteMessage(ctx, m.id, m.receipt(), nil); err != nil && !queueerror.HasCode(err, queueerror.MessageNotFound, queueerror.PopReceiptMismatch) {
		h.log.Warn(fmt.Sprintf("%s: delete poisoned message %s: %v", ql.label, m.id, err))
	}
	h.notifyQueue(pname)
}

func queueNameOf(q *azqueue.QueueClient) string {
	u := strings.TrimRight(strings.SplitN(q.URL(), "?", 2)[0], "/")
	return u[strings.LastIndexByte(u, '/')+1:]
}

// renew keeps the message invisible while it is processed (UpdateQueueMessageVisibilityCommand).
func (ql *queueListener) renew(m *queueMessage) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(ql.lease / 2)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := completionCtx()
				resp, err := ql.q.UpdateMessage(ctx, m.id, m.receipt(), m.raw,
					&azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(ql.lease / time.Second))})
				cancel()
				if err != nil {
					ql.h.log.Warn(fmt.Sprintf("%s: renew visibility of message %s: %v", ql.label, m.id, err))
					continue
				}
				if resp.PopReceipt != nil {
					m.setReceipt(*resp.PopReceipt)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// queueInvocation builds the envelope of a queue trigger (reference §3.4).
func (h *Host) queueInvocation(fn *function, m *queueMessage, queueName string) *invocation {
	t := fn.cfg.Trigger
	inv := h.newInvocation(fn, fmt.Sprintf("New queue message detected on '%s'.", queueName))
	if m.id != "" {
		inv.details = fmt.Sprintf("Trigger Details: MessageId: %s, DequeueCount: %d, InsertedOn: %s",
			m.id, m.dequeueCount, m.inserted.UTC().Format("2006-01-02T15:04:05.000+00:00"))
	}
	text := string(m.body)
	if t.binary() {
		inv.data = append(inv.data, field{name: t.Name, raw: encBytes(m.body)})
	} else {
		inv.data = append(inv.data, field{name: t.Name, raw: encString(text)})
	}
	maxTime := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	orMax := func(tm time.Time) time.Time {
		if tm.IsZero() {
			return maxTime
		}
		return tm
	}
	inserted := m.inserted
	if inserted.IsZero() {
		inserted = time.Now()
	}
	inv.bd.set("QueueTrigger", text)
	inv.meta.set("DequeueCount", encNumber(m.dequeueCount))
	inv.bd.set("DequeueCount", fmt.Sprint(m.dequeueCount))
	inv.meta.set("ExpirationTime", encTime(orMax(m.expires).UTC()))
	if m.id != "" {
		inv.meta.set("Id", encString(m.id))
		inv.bd.set("Id", m.id)
	}
	inv.meta.set("InsertionTime", encTime(inserted.UTC()))
	inv.meta.set("NextVisibleTime", encTime(orMax(m.nextVisible).UTC()))
	if r := m.receipt(); r != "" {
		inv.meta.set("PopReceipt", encString(r))
		inv.bd.set("PopReceipt", r)
	}
	if !t.binary() {
		spreadJSONObject(text, &inv.meta, inv.bd)
	}
	return inv
}
