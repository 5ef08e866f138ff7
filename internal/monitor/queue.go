package monitor

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/crypt"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/vault"
)

// batchSize is the most messages one Get Messages returns (the service's limit).
const batchSize = 32

// errUnknownJob: a report-queue message of a job we do not know (another app may share the queue).
var errUnknownJob = errors.New("message of an unknown job")

// drainQueues reads the report queue of every site of the given jobs: the site's queue secret, and the
// queue a job secret names when its site has none (spomig's provisioning puts the site's queue in the
// job secret, so they are normally the same queue). A queue is drained once per run; no new batch is
// started once the fraction until of the budget has elapsed.
func (r *run) drainQueues(ctx context.Context, list []*jobs.Job, until float64) {
	type queue struct{ uri, site string }
	var queues []queue
	add := func(uri, site string) {
		if k := queueKey(uri); k != "" && !r.drained[k] {
			r.drained[k] = true
			queues = append(queues, queue{uri, site})
		}
	}
	bySite := map[string][]*jobs.Job{}
	var sites []string
	for _, j := range list {
		s := vault.NormalizeSite(j.SiteURL)
		if _, ok := bySite[s]; !ok {
			sites = append(sites, s)
		}
		bySite[s] = append(bySite[s], j)
	}
	for _, site := range sites {
		if r.sitesRead[site] {
			continue
		}
		r.sitesRead[site] = true
		uri, err := r.m.opts.Vault.GetQueue(ctx, bySite[site][0].SiteURL)
		switch {
		case err == nil:
			add(uri, site)
			continue
		case !errors.Is(err, vault.ErrNotFound):
			r.log.WarnContext(ctx, "cannot read the site's queue secret", "site", site, "err", err.Error())
		}
		for _, j := range bySite[site] {
			if s, err := r.secret(ctx, j.ID); err == nil && s.QueueURI != "" {
				add(s.QueueURI, site)
			}
		}
	}
	for _, q := range queues {
		if !r.before(until) {
			return
		}
		r.drainQueue(ctx, q.uri, q.site, until)
	}
}

// queueKey identifies a queue whatever its SAS: scheme, host and path.
func queueKey(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Host == "" {
		return ""
	}
	return strings.ToLower(u.Scheme + "://" + u.Host + strings.TrimRight(u.Path, "/"))
}

func (r *run) drainQueue(ctx context.Context, uri, site string, until float64) {
	q, err := azqueue.NewQueueClientWithNoCredential(uri, &azqueue.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: r.m.opts.SASTransport}})
	if err != nil {
		r.log.WarnContext(ctx, "unusable report queue URI", "site", site, "err", errText(err))
		return
	}
	n, vt := int32(batchSize), int32(r.m.opts.VisibilityTimeout.Seconds())
	for r.before(until) {
		resp, err := q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: &vt})
		if err != nil {
			r.log.WarnContext(ctx, "cannot read the report queue", "site", site, "err", errText(err))
			return
		}
		if len(resp.Messages) == 0 {
			return
		}
		r.handleBatch(ctx, q, site, resp.Messages)
	}
}

// queued is a message whose event belongs to one of our jobs.
type queued struct {
	id, receipt string
	ev          crypt.Event
}

// handleBatch opens the messages of one batch, applies the events of each job in one record update
// (in event time order) and deletes the messages once that update committed. Messages of jobs we do
// not know, and messages we cannot read, are left for their owner until UnknownMessageMaxAge.
func (r *run) handleBatch(ctx context.Context, q *azqueue.QueueClient, site string, msgs []*azqueue.DequeuedMessage) {
	byJob := map[string][]queued{}
	var order []string
	for _, m := range msgs {
		if m == nil || m.MessageID == nil || m.PopReceipt == nil {
			continue
		}
		jobID, ev, err := r.open(ctx, deref(m.MessageText))
		switch {
		case err == nil:
			if _, ok := byJob[jobID]; !ok {
				order = append(order, jobID)
			}
			byJob[jobID] = append(byJob[jobID], queued{*m.MessageID, *m.PopReceipt, ev})
		case errors.Is(err, errSecretGone):
			// Our job, cleaned up: nobody can read the message any more.
			r.deleteMessage(ctx, q, *m.MessageID, *m.PopReceipt)
		case errors.Is(err, errTransient):
			r.stats.left++ // try again next run
		default:
			var inserted time.Time
			if m.InsertionTime != nil {
				inserted = *m.InsertionTime
			}
			if !inserted.IsZero() && r.now().Sub(inserted) >= r.m.opts.UnknownMessageMaxAge {
				r.log.InfoContext(ctx, "deleting an old report-queue message of an unknown job", "site", site,
					"inserted", inserted, "why", err.Error())
				r.deleteMessage(ctx, q, *m.MessageID, *m.PopReceipt)
				continue
			}
			r.log.DebugContext(ctx, "report-queue message left for its owner", "site", site, "why", err.Error())
			r.stats.left++
		}
	}
	for _, jobID := range order {
		list := byJob[jobID]
		slices.SortStableFunc(list, func(a, b queued) int { return a.ev.Time.Compare(b.ev.Time) })
		evs := make([]crypt.Event, len(list))
		for i := range list {
			evs[i] = list[i].ev
		}
		if _, err := r.applyEvents(ctx, jobID, evs, nil); err != nil {
			r.log.WarnContext(ctx, "cannot apply report-queue events; messages left", "job_id", jobID, "err", err.Error())
			r.stats.left += len(list)
			continue
		}
		for _, m := range list {
			r.deleteMessage(ctx, q, m.id, m.receipt)
		}
	}
}

func (r *run) deleteMessage(ctx context.Context, q *azqueue.QueueClient, id, receipt string) {
	if _, err := q.DeleteMessage(ctx, id, receipt, nil); err != nil {
		if storageStatus(err) != 404 { // 404: gone already, or re-dequeued by an overlapping run
			r.log.WarnContext(ctx, "cannot delete a report-queue message", "err", errText(err))
		}
		return
	}
	r.stats.deleted++
}

var (
	// errSecretGone: the message is of one of our jobs whose secret was deleted.
	errSecretGone = errors.New("the job's secret is gone")
	// errTransient: the key could not be read now (Key Vault unavailable).
	errTransient = errors.New("transient failure")
)

// open reads a report-queue message: the SPO job id it names is looked up among our jobs, the
// event decrypted with that job's key. It returns our job id.
func (r *run) open(ctx context.Context, text string) (string, crypt.Event, error) {
	var jobID string
	var keyErr error
	ev, err := crypt.OpenMessage(text, func(spoJobID string) ([]byte, error) {
		id, err := r.jobBySPO(ctx, spoJobID)
		if err != nil {
			keyErr = err
			return nil, err
		}
		jobID = id
		s, err := r.secret(ctx, id)
		switch {
		case errors.Is(err, vault.ErrNotFound):
			keyErr = errSecretGone
			return nil, keyErr
		case err != nil:
			keyErr = fmt.Errorf("%w: %v", errTransient, err)
			return nil, keyErr
		}
		return s.Key, nil
	})
	if keyErr != nil {
		return "", crypt.Event{}, keyErr
	}
	if err != nil {
		return "", crypt.Event{}, err
	}
	if jobID == "" { // an unencrypted event: the key was never asked for
		if jobID, err = r.jobBySPO(ctx, ev.JobID); err != nil {
			return "", crypt.Event{}, err
		}
	}
	return jobID, ev, nil
}

// jobBySPO maps an SPO job id to our job id, remembering the answer for the run.
func (r *run) jobBySPO(ctx context.Context, spoJobID string) (string, error) {
	k := strings.ToLower(strings.Trim(strings.TrimSpace(spoJobID), "{}"))
	if id, ok := r.bySPO[k]; ok {
		if id == "" {
			return "", errUnknownJob
		}
		return id, nil
	}
	j, err := r.m.opts.Jobs.GetBySPOJobID(ctx, k)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		r.bySPO[k] = ""
		return "", errUnknownJob
	case err != nil:
		return "", fmt.Errorf("%w: %v", errTransient, err)
	}
	r.bySPO[k] = j.ID
	return j.ID, nil
}

// progressAdvance moves the stored progress token, in the same update as the page's events.
type progressAdvance struct{ from, to string }

// applyEvents applies events to a job in one update (see applyEvent); with adv it also stores the
// next progress token, unless another run moved it meanwhile.
func (r *run) applyEvents(ctx context.Context, jobID string, evs []crypt.Event, adv *progressAdvance) (*jobs.Job, error) {
	applied := 0
	j, err := r.update(ctx, jobID, func(j *jobs.Job) error {
		applied = 0
		now := r.now()
		for _, ev := range evs {
			if applyEvent(j, ev, now) {
				applied++
			}
		}
		if adv != nil && j.ProgressToken == adv.from {
			j.ProgressToken = adv.to
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.stats.events += applied
	return j, nil
}
