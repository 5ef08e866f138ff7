// Package jobs keeps the durable record of each migration job in Azure Table storage (table
// "migrationjobs") and enforces the job state machine.
//
// # States
//
//	AwaitingPackage → Encrypting → Staged → Submitted → Queued ⇄ Postponed → Running → Completed | CompletedWithErrors | Failed | Cancelled
//
// Job.Transition is the only way to change state; CanTransition is the rule. Before submission we
// drive each step (Encrypting may be skipped); from Submitted on, states follow SPO's events, which the
// monitor may see late or miss, so every forward skip is legal (JobStart before JobQueued, JobEnd
// straight after Submitted) while nothing moves backwards. Failed (with a reason) and Cancelled are
// reachable from every non-terminal state; terminal states are final; re-entering the current state
// is a no-op, so replayed triggers are harmless. Each transition is kept in Job.History.
//
// # Table layout
//
// All rows live in one partition, PartitionKey "job":
//
//	RowKey "job|<id>"              the record (the ETag that guards every change)
//	RowKey "state|<NN>|<id>"       state index: a full copy of the record; NN is the state's ordinal (00..10)
//	RowKey "spo|<spo job id>"      SPO index: {JobID}, SPO job id lower case
//
// Azure Tables has no secondary indexes. The two lookups besides the id are served by index rows
// rather than filtered queries, because a filter on a non-key property (State eq …, SPOJobID eq …) is a
// scan of the whole partition, finished and running jobs alike, every minute for the monitor and once
// per event for the SPO job id: the cost grows with the history of the tenant. With index rows,
// GetBySPOJobID is two point reads, and List by state is a range query on the row key that reads only
// the wanted rows, a page at a time, with the service's own continuation. The active states
// (Submitted, Queued, Postponed, Running) have adjacent ordinals, so the monitor's ListActive is a
// single range. The state index row is a full copy of the record so that a page needs no further reads.
//
// The index rows never disagree with the record: every write is one entity group transaction
// (SubmitTransaction) on the single partition — the record replaced If-Match its ETag, the old state
// row deleted and the new one written, the SPO row added (Add fails if another job holds that SPO job
// id) or moved. Either all rows change or none. That is why everything shares one partition: a
// transaction cannot span partitions. The price is the throughput of one partition (about 2,000 entity
// operations per second; an update touches 2 to 4 rows), far above what migration jobs need.
//
// # Concurrency
//
// Store.Update is a read-modify-write loop: it reads the record and its ETag, applies the caller's
// mutator and submits the transaction with If-Match; on 412 (another writer won) it re-reads and
// retries, with jittered exponential backoff, up to Options.MaxUpdateAttempts. No update is ever lost;
// two conflicting transitions cannot both win, because the loser re-runs its mutator on the winner's
// result (and a transition out of a terminal state is refused). Store.Create fails with ErrExists when
// the id is taken; CreateOrGet makes provisioning idempotent.
//
// # Limits
//
// History, SeenEvents and FirstErrors are JSON string properties, capped (MaxHistory, MaxSeenEvents,
// MaxFirstErrors, and MaxJSONPropertyBytes each, within the 64 KiB string property limit); free text
// is cut to its bound. A record at the caps is about 200 KB as the service counts it (strings in
// UTF-16), within the 1 MiB entity limit, and a transaction (two copies) within the 4 MiB batch limit. The entity has about 40 properties (limit 252).
//
// # Secrets
//
// A record holds names and references only — the Key Vault secret's name, never the key or a SAS.
// Writes refuse a signature (sig=) or account key in the identifying fields (ErrSecret) and redact
// them from free text (reasons, item messages and URLs). No property is named like a key, SAS or
// signature; a test guards this.
package jobs
