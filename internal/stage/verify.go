package stage

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/spomig/spomig/internal/crypt"
)

// ErrNotStaged reports (from Resnapshot) a base blob that is missing or is not a complete encrypted
// upload of the item: it must be uploaded again.
var ErrNotStaged = errors.New("blob is missing or incomplete")

// Repair is what brings a blob back to the invariant "its latest snapshot matches its IV metadata
// and decrypts".
type Repair int

const (
	// RepairNone: the blob is consistent.
	RepairNone Repair = iota
	// RepairSnapshot: the base blob is a complete upload of the item but its snapshot is missing,
	// unknown or older. Resnapshot fixes it without sending the data again (so does a re-upload).
	RepairSnapshot
	// RepairUpload: the blob is missing, incomplete or does not decrypt: upload it again.
	RepairUpload
)

func (r Repair) String() string {
	switch r {
	case RepairNone:
		return "none"
	case RepairSnapshot:
		return "snapshot"
	case RepairUpload:
		return "upload"
	}
	return fmt.Sprintf("Repair(%d)", int(r))
}

// VerifyOptions refine Verify.
type VerifyOptions struct {
	// Snapshot is the snapshot timestamp recorded from Result.Snapshot. The containers cannot be
	// listed, so without it Verify cannot see any snapshot and answers RepairSnapshot for a
	// complete base blob.
	Snapshot string
	// Deep downloads the blob (the snapshot, or the base blob when only a snapshot is missing) and
	// decrypts it: the PKCS#7 padding must be valid, the plaintext plainSize bytes long and the
	// ciphertext's MD5 equal to its Content-MD5. It costs a full download and the key.
	Deep bool
}

// Verdict is the outcome of Verify.
type Verdict struct {
	// OK reports that the blob keeps the invariant (Repair is RepairNone).
	OK bool
	// Repair is the cheapest fix when !OK.
	Repair Repair
	// Reason says what is wrong, for logs (no secrets).
	Reason string
}

func bad(r Repair, format string, args ...any) Verdict {
	return Verdict{Repair: r, Reason: fmt.Sprintf(format, args...)}
}

// Verify checks that blobName in the container of containerSASURL is a complete, snapshotted upload
// of a plaintext of plainSize bytes (negative: unknown): the base blob exists with an IV metadata
// (looked up case-insensitively) and crypt.EncryptedSize(plainSize) bytes; the recorded snapshot
// (opts.Snapshot) exists and carries the same IV as the base blob (otherwise the base blob was
// committed after it, and SharePoint would pair the base blob's IV with the older snapshot); with
// opts.Deep, the content decrypts. An error is returned only when the check itself fails (network,
// SAS, missing container); a missing blob is a Verdict. A server that refuses the container SAS on a
// ?snapshot= request after accepting it for the base blob (Azurite does, Azure/Azurite#1857) gets
// RepairSnapshot: a fresh snapshot is always safe.
func (u *Uploader) Verify(ctx context.Context, containerSASURL, blobName string, key []byte, plainSize int64, opts VerifyOptions) (Verdict, error) {
	if err := validateName(blobName); err != nil {
		return Verdict{}, err
	}
	if opts.Deep && len(key) != crypt.KeySize {
		return Verdict{}, fmt.Errorf("stage: verify %q: %w", blobName, crypt.ErrKeySize)
	}
	cc, err := u.containerClient(containerSASURL)
	if err != nil {
		return Verdict{}, err
	}
	bb := cc.NewBlockBlobClient(blobName)
	base, v, err := checkBase(ctx, bb, blobName, plainSize)
	if err != nil || !v.OK {
		return v, err
	}

	v, target, err := checkSnapshot(ctx, bb, blobName, opts.Snapshot, base.iv)
	if err != nil {
		return Verdict{}, err
	}
	if !opts.Deep {
		return v, nil
	}
	// Deep: the snapshot SharePoint will read, or the base blob a Resnapshot would capture.
	reason, err := decryptCheck(ctx, target, blobName, key, base.iv, plainSize, base.md5)
	if err != nil {
		return Verdict{}, err
	}
	if reason != "" {
		return bad(RepairUpload, "%s", reason), nil
	}
	return v, nil
}

// checkSnapshot checks the recorded snapshot against the base blob's IV. It returns the client of
// what a deep check reads: the snapshot when it is right, else the base blob.
func checkSnapshot(ctx context.Context, bb *blockblob.Client, name, snapshot string, baseIV []byte) (Verdict, *blockblob.Client, error) {
	if snapshot == "" {
		return bad(RepairSnapshot, "no snapshot recorded, and snapshots cannot be listed"), bb, nil
	}
	sbb, err := bb.WithSnapshot(snapshot)
	if err != nil {
		return bad(RepairSnapshot, "recorded snapshot %q is not a snapshot timestamp", snapshot), bb, nil
	}
	props, err := sbb.GetProperties(ctx, nil)
	if isBlobNotFound(err) {
		return bad(RepairSnapshot, "recorded snapshot %s does not exist", snapshot), bb, nil
	}
	if se := new(SASError); errors.As(storageErr("", name, err), &se) {
		// The same SAS just read the base blob, so it is valid; some servers (Azurite, issue 1857)
		// refuse a container SAS on ?snapshot= requests. A fresh snapshot is the safe answer.
		return bad(RepairSnapshot, "snapshot %s cannot be read through this SAS (%d %s)", snapshot, se.StatusCode, se.Code), bb, nil
	}
	if err != nil {
		return Verdict{}, nil, storageErr("get snapshot properties", name, err)
	}
	siv, ok := metadataIV(props.Metadata)
	if !ok {
		return bad(RepairSnapshot, "snapshot %s has no valid IV metadata", snapshot), bb, nil
	}
	if !bytes.Equal(siv, baseIV) {
		return bad(RepairSnapshot, "the base blob was committed after snapshot %s (their IVs differ)", snapshot), bb, nil
	}
	return Verdict{OK: true}, sbb, nil
}

// baseInfo is what checkBase learned of the base blob.
type baseInfo struct {
	iv   []byte
	size int64
	md5  []byte
	etag *azcore.ETag
}

// checkBase reads the base blob's properties and checks its IV and size.
func checkBase(ctx context.Context, bb *blockblob.Client, name string, plainSize int64) (baseInfo, Verdict, error) {
	props, err := bb.GetProperties(ctx, nil)
	if isBlobNotFound(err) {
		return baseInfo{}, bad(RepairUpload, "blob does not exist"), nil
	}
	if err != nil {
		return baseInfo{}, Verdict{}, storageErr("get properties", name, err)
	}
	iv, ok := metadataIV(props.Metadata)
	if !ok {
		return baseInfo{}, bad(RepairUpload, "blob has no valid IV metadata"), nil
	}
	var size int64
	if props.ContentLength != nil {
		size = *props.ContentLength
	}
	if want := cipherSizeOf(plainSize); want >= 0 && size != want {
		return baseInfo{}, bad(RepairUpload, "blob is %d bytes, want %d", size, want), nil
	}
	if want := cipherSizeOf(plainSize); want < 0 && (size == 0 || size%crypt.BlockSize != 0) {
		return baseInfo{}, bad(RepairUpload, "blob is %d bytes, not a positive multiple of 16", size), nil
	}
	return baseInfo{iv: iv, size: size, md5: props.ContentMD5, etag: props.ETag}, Verdict{OK: true}, nil
}

// decryptCheck downloads bb, checks its MD5 against wantMD5 (if any) and decrypts it. It returns a
// reason when the content is wrong, an error when the check could not run.
func decryptCheck(ctx context.Context, bb *blockblob.Client, name string, key, iv []byte, plainSize int64, wantMD5 []byte) (string, error) {
	resp, err := bb.DownloadStream(ctx, nil)
	if err != nil {
		return "", storageErr("download", name, err)
	}
	body := resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 3})
	defer body.Close()
	h := md5.New()
	dec, err := crypt.NewDecryptReader(io.TeeReader(body, h), key, iv)
	if err != nil {
		return "", fmt.Errorf("stage: verify %q: %w", name, err)
	}
	n, err := io.Copy(io.Discard, dec)
	switch {
	case errors.Is(err, crypt.ErrBadPadding) || errors.Is(err, crypt.ErrNotBlockMultiple):
		return fmt.Sprintf("content does not decrypt with its IV: %v", err), nil
	case err != nil:
		return "", storageErr("download", name, err)
	case plainSize >= 0 && n != plainSize:
		return fmt.Sprintf("content decrypts to %d bytes, want %d", n, plainSize), nil
	case len(wantMD5) > 0 && !bytes.Equal(h.Sum(nil), wantMD5):
		return "content MD5 differs from the blob's Content-MD5", nil
	}
	return "", nil
}

// Resnapshot snapshots the base blob of blobName after checking that it is a complete encrypted
// upload of plainSize bytes (IV metadata, length), conditionally on the version checked (If-Match),
// and returns its Result to persist. It repairs RepairSnapshot verdicts: a crash after the commit and
// before the snapshot. A base blob that is not complete gives ErrNotStaged: upload it again.
func (u *Uploader) Resnapshot(ctx context.Context, containerSASURL, blobName string, plainSize int64) (Result, error) {
	if err := validateName(blobName); err != nil {
		return Result{}, err
	}
	cc, err := u.containerClient(containerSASURL)
	if err != nil {
		return Result{}, err
	}
	bb := cc.NewBlockBlobClient(blobName)
	base, v, err := checkBase(ctx, bb, blobName, plainSize)
	if err != nil {
		return Result{}, err
	}
	if !v.OK {
		return Result{}, fmt.Errorf("stage: resnapshot %q: %w: %s", blobName, ErrNotStaged, v.Reason)
	}
	resp, err := bb.CreateSnapshot(ctx, &blob.CreateSnapshotOptions{AccessConditions: &blob.AccessConditions{
		ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: base.etag}}})
	if err != nil {
		return Result{}, storageErr("create snapshot", blobName, err)
	}
	if resp.Snapshot == nil || *resp.Snapshot == "" {
		return Result{}, fmt.Errorf("stage: create snapshot %q: no snapshot timestamp in the response", blobName)
	}
	return Result{IV: base.iv, Snapshot: *resp.Snapshot, CipherSize: base.size, ContentMD5: base.md5}, nil
}

// metadataIV finds the IV metadata whatever its case ("IV" as written, "Iv" from Get, "iv" from
// List) and decodes it.
func metadataIV(md map[string]*string) ([]byte, bool) {
	for k, v := range md {
		if strings.EqualFold(k, MetadataIV) && v != nil {
			iv, err := crypt.ParseIV(*v)
			return iv, err == nil
		}
	}
	return nil, false
}

// isBlobNotFound reports a 404 other than a missing container.
func isBlobNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound && re.ErrorCode != "ContainerNotFound"
}
