package provision

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
)

// NewJobID returns a new random job id: a version 4 GUID, lower case.
func NewJobID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatGUID(b)
}

// DropJobID derives the job id of a package dropped into the staging container from the blob's container,
// name and ETag: a retried trigger for the same blob (same ETag) gets the same id, so Create finds the job
// it already created; a new upload under the same name (a new ETag) is a new job. The id is a version 8
// (name-based, SHA-256) GUID.
func DropJobID(container, name, etag string) string {
	h := sha256.New()
	fmt.Fprintf(h, "spomig-drop\x00%s\x00%s\x00%s", container, name, etag)
	var b [16]byte
	copy(b[:], h.Sum(nil))
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return formatGUID(b)
}

// IdempotentJobID derives the job id of an API request that carries an Idempotency-Key: a retried POST
// (a flow's retry policy, a timed-out script) with the same key gets the same id, so Create returns the job
// it already created instead of provisioning a second one. A version 8 (name-based, SHA-256) GUID, in its
// own name space, apart from DropJobID's.
func IdempotentJobID(key string) string {
	h := sha256.New()
	fmt.Fprintf(h, "spomig-idempotency-key\x00%s", key)
	var b [16]byte
	copy(b[:], h.Sum(nil))
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return formatGUID(b)
}

func formatGUID(b [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
