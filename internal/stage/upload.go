package stage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/spomig/spomig/internal/crypt"
)

// MetadataIV is the metadata key holding base64 of a blob's IV, as SharePoint reads it. It is
// written in exactly this case; read it back with a case-insensitive lookup (Get returns "Iv").
const MetadataIV = "IV"

// Uploader encrypts and uploads files into SPO containers. It is safe for concurrent use; at most
// Options.Concurrency files are in flight at a time, whichever method started them.
type Uploader struct {
	opts  Options
	files chan struct{} // file slots, Concurrency of them
	pool  sync.Pool     // *[]byte of opts.BlockSize

	// afterCommit, when set (tests), runs after a successful commit; an error stops the upload
	// before the snapshot, as a crash would.
	afterCommit func(blob string) error
}

// NewUploader returns an Uploader with opts (zero fields take their defaults, see Options).
func NewUploader(opts Options) *Uploader {
	opts.setDefaults()
	u := &Uploader{opts: opts, files: make(chan struct{}, opts.Concurrency)}
	bs := opts.BlockSize
	u.pool.New = func() any { b := make([]byte, bs); return &b }
	return u
}

// Options returns the options in effect, defaults filled in.
func (u *Uploader) Options() Options { return u.opts }

// Result describes one uploaded blob. The caller persists it (the containers cannot be listed):
// Snapshot is the only way back to the snapshot SharePoint will import.
type Result struct {
	// IV is the blob's fresh IV (also in its metadata "IV", base64).
	IV []byte
	// Snapshot is the timestamp of the snapshot taken after the commit (x-ms-snapshot, e.g.
	// "2026-12-04T19:33:35.4310000Z"); blockblob.Client.WithSnapshot takes it.
	Snapshot string
	// CipherSize is the blob's length: crypt.EncryptedSize of the plaintext length.
	CipherSize int64
	// ContentMD5 is the MD5 of the ciphertext, as set in x-ms-blob-content-md5.
	ContentMD5 []byte
}

// UploadOne encrypts src under key with a fresh IV and uploads it as blobName into the container of
// containerSASURL (a container URL carrying its SAS, as ProvisionMigrationContainers returns it),
// then snapshots it. plainSize is the plaintext length src must deliver; a negative plainSize means
// unknown (no size check, and a file of exactly BlockSize ciphertext bytes then takes a Put Block
// List instead of a Put Blob). blobName is a path such as "Shared Documents/a b/#1.docx"; it is
// URL-escaped here. UploadOne does not retry on its own (azcore retries each request); see
// UploadAll and shouldRetry. On error nothing was committed, unless the error came from the snapshot
// (see the package doc's crash cases).
func (u *Uploader) UploadOne(ctx context.Context, containerSASURL, blobName string, src io.Reader, plainSize int64, key []byte) (Result, error) {
	if err := validateName(blobName); err != nil {
		return Result{}, err
	}
	if src == nil {
		return Result{}, errors.New("stage: upload: nil source")
	}
	if len(key) != crypt.KeySize {
		return Result{}, fmt.Errorf("stage: upload %q: %w", blobName, crypt.ErrKeySize)
	}
	cc, err := u.containerClient(containerSASURL)
	if err != nil {
		return Result{}, err
	}
	tr := u.newTracker(1, cipherSizeOf(plainSize))
	res, err := u.upload(ctx, cc, blobName, src, plainSize, key, tr)
	if err == nil {
		tr.fileDone(blobName)
	}
	tr.finish(blobName)
	return res, err
}

// containerClient builds a credential-less container client from a container SAS URL. Errors never
// hold the URL.
func (u *Uploader) containerClient(containerSASURL string) (*container.Client, error) {
	p, err := url.Parse(containerSASURL)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || strings.Trim(p.Path, "/") == "" {
		return nil, errors.New("stage: container URL is not an http(s) URL of a container")
	}
	cc, err := container.NewClientWithNoCredential(containerSASURL, (*container.ClientOptions)(u.opts.ClientOptions))
	if err != nil {
		return nil, fmt.Errorf("stage: container client: %w", sanitize(err))
	}
	return cc, nil
}

// containerName is the last path segment of a container URL, for logs.
func containerName(cc *container.Client) string {
	p, err := url.Parse(cc.URL())
	if err != nil {
		return "?"
	}
	return path.Base(strings.TrimRight(p.Path, "/"))
}

// validateName rejects blob names the service refuses or silently changes.
func validateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("stage: %w: empty", ErrBlobName)
	case len(name) > 1024:
		return fmt.Errorf("stage: %w: longer than 1024 bytes", ErrBlobName)
	case !utf8.ValidString(name):
		return fmt.Errorf("stage: %w: not UTF-8", ErrBlobName)
	case strings.HasSuffix(name, ".") || strings.HasSuffix(name, "/"):
		return fmt.Errorf("stage: %w: %q ends with '.' or '/'", ErrBlobName, name)
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("stage: %w: %q holds a control character", ErrBlobName, name)
	}
	return nil
}

func cipherSizeOf(plainSize int64) int64 {
	if plainSize < 0 {
		return -1
	}
	return crypt.EncryptedSize(plainSize)
}

// acquireFile takes one of the Uploader's Concurrency file slots.
func (u *Uploader) acquireFile(ctx context.Context) error {
	select {
	case u.files <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (u *Uploader) releaseFile() { <-u.files }

// blockSizeFor returns the block size for a ciphertext of cipherSize bytes (-1: unknown) and
// whether it is the pooled Options.BlockSize.
func (u *Uploader) blockSizeFor(cipherSize int64) (int64, bool, error) {
	bs := u.opts.BlockSize
	if cipherSize <= bs*maxBlocks {
		return bs, true, nil
	}
	need := (cipherSize + maxBlocks - 1) / maxBlocks
	need = (need + MinBlockSize - 1) / MinBlockSize * MinBlockSize
	if need > maxStageBlockSize {
		return 0, false, fmt.Errorf("stage: %d bytes of ciphertext exceed %d blocks of %d MiB", cipherSize, maxBlocks, maxStageBlockSize>>20)
	}
	return need, false, nil
}

// sourceReader counts the plaintext read and marks the source's errors as *SourceError.
type sourceReader struct {
	r    io.Reader
	blob string
	n    int64
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(max(n, 0))
	if err != nil && err != io.EOF {
		err = &SourceError{Blob: s.blob, Err: err}
	}
	return n, err
}

// readFull reads into buf until it is full or the reader ends. eof reports io.EOF; any other error
// is returned (unlike io.ReadFull, a source's own io.ErrUnexpectedEOF stays an error).
func readFull(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// upload runs one attempt in a file slot.
func (u *Uploader) upload(ctx context.Context, cc *container.Client, name string, src io.Reader, plainSize int64, key []byte, tr *tracker) (Result, error) {
	if err := u.acquireFile(ctx); err != nil {
		return Result{}, fmt.Errorf("stage: upload %q: %w", name, err)
	}
	defer u.releaseFile()
	start := time.Now()
	res, blocks, err := u.encryptUpload(ctx, cc.NewBlockBlobClient(name), name, src, plainSize, key, tr)
	if err != nil {
		return Result{}, err
	}
	u.opts.Logger.LogAttrs(ctx, slog.LevelDebug, "stage: blob uploaded",
		slog.String("container", containerName(cc)), slog.String("blob", name),
		slog.Int64("plain_size", plainSize), slog.Int64("cipher_size", res.CipherSize),
		slog.Int("blocks", blocks), slog.Duration("elapsed", time.Since(start)))
	return res, nil
}

// block is one ciphertext block in flight, shared by the whole-blob hasher and its stager.
type block struct {
	idx   int
	id    string
	data  []byte
	buf   *[]byte
	refs  atomic.Int32 // the whole-blob hasher and the stager each release it once
	md5   []byte       // the block's MD5 (unless DisableBlockMD5)
	abort bool         // the read failed mid-block: release, do not stage
}

// filePipe is the state of one file's block upload.
type filePipe struct {
	u      *Uploader
	ctx    context.Context
	cancel context.CancelCauseFunc
	bb     *blockblob.Client
	name   string
	bs     int64
	pooled bool
	tr     *tracker

	free      chan *[]byte // buffers back from the hasher and the stagers
	allocated int          // buffers taken so far (reader goroutine only)
	limit     int
	wg        sync.WaitGroup
	staged    atomic.Int64

	mu       sync.Mutex
	srcErr   error // first error of the source (preferred)
	stageErr error // first error of the storage side
}

func (p *filePipe) getBuf() (*[]byte, error) {
	select {
	case b := <-p.free:
		return b, nil
	default:
	}
	if p.allocated < p.limit {
		p.allocated++
		if p.pooled {
			return p.u.pool.Get().(*[]byte), nil
		}
		b := make([]byte, p.bs)
		return &b, nil
	}
	select {
	case b := <-p.free:
		return b, nil
	case <-p.ctx.Done():
		return nil, context.Cause(p.ctx)
	}
}

func (p *filePipe) putBuf(b *[]byte) { p.free <- b } // never blocks: cap(free) == limit

func (p *filePipe) release(b *block) {
	if b.refs.Add(-1) == 0 {
		p.putBuf(b.buf)
	}
}

// drain returns every buffer to the pool once nothing uses them.
func (p *filePipe) drain() {
	for range p.allocated {
		b := <-p.free
		if p.pooled {
			p.u.pool.Put(b)
		}
	}
}

// failRead records an error of the read side (the source, the encryption, the size checks): it is
// the one returned, whatever the stagers report after it.
func (p *filePipe) failRead(err error) {
	var se *SourceError
	if !errors.As(err, &se) && !errors.Is(err, ErrSizeMismatch) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		err = &SourceError{Blob: p.name, Err: err}
	}
	p.mu.Lock()
	if p.srcErr == nil {
		p.srcErr = err
	}
	p.mu.Unlock()
	p.cancel(err)
}

// failStage records an error of the storage side, unless it is the echo of an earlier cancellation.
func (p *filePipe) failStage(err error) {
	p.mu.Lock()
	if p.stageErr == nil && !(p.ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		p.stageErr = err
	}
	p.mu.Unlock()
	p.cancel(err)
}

// firstErr returns the error of the file: the source's first, else the storage side's, else the
// caller's cancellation.
func (p *filePipe) firstErr(parent context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srcErr != nil {
		return p.srcErr
	}
	if p.stageErr != nil {
		return p.stageErr
	}
	if err := parent.Err(); err != nil {
		return fmt.Errorf("stage: upload %q: %w", p.name, err)
	}
	return nil
}

func newBlockIDPrefix() ([16]byte, error) {
	var b [16]byte
	_, err := rand.Read(b[:])
	return b, err
}

// blockID is base64 of the 16-byte upload prefix and the big-endian block number: 28 characters
// for every block of every upload.
func blockID(prefix [16]byte, n int) string {
	var raw [20]byte
	copy(raw[:], prefix[:])
	binary.BigEndian.PutUint32(raw[16:], uint32(n))
	return base64.StdEncoding.EncodeToString(raw[:])
}

// chunkSize is the unit in which a block's ciphertext is handed to the hashers while the rest of the
// block is still being encrypted.
const chunkSize = 256 << 10

// chunkMsg hands a hasher the next chunk of a block, or (data == nil) the end of the block.
type chunkMsg struct {
	b    *block
	data []byte
}

// encryptUpload encrypts src and uploads it: a Put Blob when the ciphertext fits one block, else
// Put Block ×n + Put Block List, then CreateSnapshot.
//
// Pipeline of a multi-block file (this goroutine is the encryptor):
//
//	encryptor ── chunks of 256 KiB ──▶ whole-blob MD5 hasher (in order)
//	          └─ chunks of 256 KiB ──▶ block MD5 hasher ── block + MD5 ──▶ stager goroutine (Put Block)
//
// The hashers trail the encryption inside the block being filled, so a block is ready to send as soon
// as its last chunk is encrypted, and encryption, both MD5s and the upload all run at once. A block's
// buffer goes back to the encryptor when both the whole-blob hasher and the stager are done with it.
// Block 0 is held back until it is known not to be the only one (a single Put Blob then).
func (u *Uploader) encryptUpload(parent context.Context, bb *blockblob.Client, name string, src io.Reader, plainSize int64, key []byte, tr *tracker) (res Result, blocks int, err error) {
	iv, err := crypt.NewIV()
	if err != nil {
		return Result{}, 0, fmt.Errorf("stage: upload %q: %w", name, err)
	}
	source := &sourceReader{r: src, blob: name}
	enc, err := crypt.NewEncryptReader(source, key, iv)
	if err != nil {
		return Result{}, 0, fmt.Errorf("stage: upload %q: %w", name, err)
	}
	cipherSize := cipherSizeOf(plainSize)
	bs, pooled, err := u.blockSizeFor(cipherSize)
	if err != nil {
		return Result{}, 0, err
	}
	prefix, err := newBlockIDPrefix()
	if err != nil {
		return Result{}, 0, fmt.Errorf("stage: upload %q: %w", name, err)
	}
	ivB64 := base64.StdEncoding.EncodeToString(iv)
	meta := map[string]*string{MetadataIV: &ivB64}

	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	p := &filePipe{u: u, ctx: ctx, cancel: cancel, bb: bb, name: name, bs: bs, pooled: pooled, tr: tr,
		limit: u.opts.BlockConcurrency, free: make(chan *[]byte, u.opts.BlockConcurrency)}
	defer func() {
		if staged := p.staged.Load(); staged != 0 && err != nil {
			tr.add(name, -staged) // progress counts what successful attempts staged
		}
	}()

	// The hashers, started with the second block.
	whole := md5.New()
	var hashers sync.WaitGroup
	var toWhole, toBlock chan chunkMsg
	startHashers := func() {
		backlog := (int(bs/chunkSize) + 2) * p.limit // every chunk of every buffer: sends never block
		toWhole = make(chan chunkMsg, backlog)
		hashers.Go(func() {
			for m := range toWhole {
				if m.data == nil {
					p.release(m.b)
					continue
				}
				hashChunked(whole, m.data)
			}
		})
		if u.opts.DisableBlockMD5 {
			return
		}
		toBlock = make(chan chunkMsg, backlog)
		hashers.Go(func() {
			h := md5.New()
			for m := range toBlock {
				if m.data != nil {
					hashChunked(h, m.data)
					continue
				}
				if m.b.abort {
					p.release(m.b)
				} else {
					m.b.md5 = h.Sum(nil)
					p.launch(m.b)
				}
				h.Reset()
			}
		})
	}
	send := func(b *block, data []byte) {
		toWhole <- chunkMsg{b, data}
		if toBlock != nil {
			toBlock <- chunkMsg{b, data}
		}
	}
	endBlock := func(b *block) {
		toWhole <- chunkMsg{b: b}
		switch {
		case toBlock != nil:
			toBlock <- chunkMsg{b: b}
		case b.abort:
			p.release(b)
		default:
			p.launch(b)
		}
	}

	var ids []string
	var total int64
	for idx := 0; ctx.Err() == nil; idx++ {
		buf, gerr := p.getBuf()
		if gerr != nil {
			break // cancelled: by a failure recorded already, or by the caller (firstErr reports it)
		}
		data := (*buf)[:bs]
		b := &block{idx: idx, buf: buf}
		b.refs.Store(2) // the whole-blob hasher and the stager
		stream := idx > 0
		n, eof := 0, false
		var rerr error
		for n < len(data) && !eof && rerr == nil {
			m, e, er := readFull(enc, data[n:min(n+chunkSize, len(data))])
			if m > 0 && stream {
				send(b, data[n:n+m])
			}
			n, eof, rerr = n+m, e, er
		}
		total += int64(n)
		if rerr == nil && !eof && cipherSize >= 0 && total >= cipherSize {
			// The declared length is reached: the source must end here.
			var probe [2 * crypt.BlockSize]byte
			m, perr := enc.Read(probe[:])
			switch {
			case m > 0 || total > cipherSize:
				rerr = fmt.Errorf("stage: upload %q: %w (declared %d bytes, the source is longer)", name, ErrSizeMismatch, plainSize)
			case perr == io.EOF:
				eof = true
			case perr != nil:
				rerr = perr
			}
		}
		if rerr == nil && eof && plainSize >= 0 && (source.n != plainSize || total != cipherSize) {
			rerr = fmt.Errorf("stage: upload %q: %w (declared %d bytes, read %d)", name, ErrSizeMismatch, plainSize, source.n)
		}
		if rerr == nil && idx >= maxBlocks {
			rerr = fmt.Errorf("stage: upload %q: %w: more than %d blocks of %d bytes", name, ErrSizeMismatch, maxBlocks, bs)
		}
		if rerr != nil || (n == 0 && eof) {
			if stream && n > 0 { // the hashers hold chunks of it
				b.abort = true
				endBlock(b)
			} else {
				p.putBuf(buf)
			}
			if rerr != nil {
				p.failRead(rerr)
			}
			break // n == 0 && eof: the previous block ended the stream exactly (unknown size)
		}
		if idx == 0 && eof {
			// The whole ciphertext fits one block: a single Put Blob.
			res, err = u.putBlob(ctx, bb, name, data[:n], meta, iv)
			p.putBuf(buf)
			p.drain()
			if err != nil {
				return Result{}, 1, err
			}
			p.staged.Add(int64(n))
			tr.add(name, int64(n))
			res, err = u.snapshot(parent, bb, name, res)
			return res, 1, err
		}
		if idx == 0 {
			startHashers()
			send(b, data[:n])
		}
		b.id = blockID(prefix, idx)
		b.data = data[:n]
		ids = append(ids, b.id)
		endBlock(b)
		if eof {
			break
		}
	}
	if toWhole != nil {
		close(toWhole)
	}
	if toBlock != nil {
		close(toBlock)
	}
	hashers.Wait()
	p.wg.Wait()
	p.drain()
	if err = p.firstErr(parent); err != nil {
		return Result{}, len(ids), err
	}

	sum := whole.Sum(nil)
	_, cerr := bb.CommitBlockList(parent, ids, &blockblob.CommitBlockListOptions{
		Metadata:    meta,
		HTTPHeaders: &blob.HTTPHeaders{BlobContentMD5: sum},
	})
	if cerr != nil {
		err = storageErr("put block list", name, cerr)
		return Result{}, len(ids), err
	}
	res, err = u.snapshot(parent, bb, name, Result{IV: iv, CipherSize: total, ContentMD5: sum})
	return res, len(ids), err
}

// launch starts the stager of a block.
func (p *filePipe) launch(b *block) {
	p.wg.Add(1)
	go p.stage(b)
}

// stage uploads one block with its transactional MD5 (computed by the block hasher).
func (p *filePipe) stage(b *block) {
	defer p.wg.Done()
	defer p.release(b)
	if p.ctx.Err() != nil {
		return
	}
	var opts blockblob.StageBlockOptions
	if b.md5 != nil {
		opts.TransactionalValidation = blob.TransferValidationTypeMD5(b.md5)
	}
	_, err := p.bb.StageBlock(p.ctx, b.id, streaming.NopCloser(bytes.NewReader(b.data)), &opts)
	if err != nil {
		p.failStage(storageErr(fmt.Sprintf("put block %d", b.idx), p.name, err))
		return
	}
	p.staged.Add(int64(len(b.data)))
	p.tr.add(p.name, int64(len(b.data)))
}

// hashChunked writes b to h in 256 KiB pieces: the assembly of crypto/md5 cannot be preempted, so
// one 4 MiB Write would hold off a garbage collection's stop-the-world for milliseconds.
func hashChunked(h hash.Hash, b []byte) {
	for len(b) > 0 {
		n := min(len(b), 256<<10)
		h.Write(b[:n])
		b = b[n:]
	}
}

// putBlob uploads a one-block ciphertext with one Put Blob.
func (u *Uploader) putBlob(ctx context.Context, bb *blockblob.Client, name string, data []byte, meta map[string]*string, iv []byte) (Result, error) {
	sum := md5.Sum(data)
	_, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
		Metadata:                meta,
		HTTPHeaders:             &blob.HTTPHeaders{BlobContentMD5: sum[:]},
		TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
	})
	if err != nil {
		return Result{}, storageErr("put blob", name, err)
	}
	return Result{IV: iv, CipherSize: int64(len(data)), ContentMD5: sum[:]}, nil
}

// snapshot snapshots a just-committed blob. It runs even if ctx was cancelled after the commit,
// bounded by SnapshotTimeout, so that a cancellation rarely leaves a commit without its snapshot.
func (u *Uploader) snapshot(ctx context.Context, bb *blockblob.Client, name string, res Result) (Result, error) {
	if u.afterCommit != nil {
		if err := u.afterCommit(name); err != nil {
			return Result{}, fmt.Errorf("stage: snapshot %q: %w", name, err)
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), u.opts.SnapshotTimeout)
	defer cancel()
	resp, err := bb.CreateSnapshot(sctx, nil)
	if err != nil {
		return Result{}, storageErr("create snapshot", name, err)
	}
	if resp.Snapshot == nil || *resp.Snapshot == "" {
		return Result{}, fmt.Errorf("stage: create snapshot %q: no snapshot timestamp in the response", name)
	}
	res.Snapshot = *resp.Snapshot
	return res, nil
}
