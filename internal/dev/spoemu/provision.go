package spoemu

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
	qsas "github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/sas"
)

// provisioned is what the emulator remembers of a container it provisioned. The key itself is
// forgotten, as SharePoint does: only its SHA-256 is kept, to check that CreateMigrationJobEncrypted
// brings back the same key.
type provisioned struct {
	site    string // site key
	keyHash [sha256.Size]byte
	created time.Time
}

// internalErr is the answer to a failure of the emulator's own storage calls.
func internalErr(what string, err error) *spError {
	return &spError{http.StatusInternalServerError, "-2146232832, Microsoft.SharePoint.SPException",
		fmt.Sprintf("%s failed: %s", what, redactErr(err))}
}

// provisionContainers answers ProvisionMigrationContainers: two new containers, container SAS with
// Read and Write only (no List), and a new 32-byte AES-256 key.
func (c *call) provisionContainers() (answer, *spError) {
	e := c.e
	ctx := c.r.Context()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return answer{}, internalErr("key generation", err)
	}
	rec := &provisioned{site: c.s.key, keyHash: sha256.Sum256(key), created: time.Now().UTC()}
	var uris [2]string
	for i := range uris {
		name := containerName(c.s.key, rec.created)
		if _, err := e.blob.CreateContainer(ctx, name, nil); err != nil {
			return answer{}, internalErr("container creation", err)
		}
		e.mu.Lock()
		e.containers[name] = rec
		e.mu.Unlock()
		u, err := e.containerSAS(name, rec.created)
		if err != nil {
			return answer{}, internalErr("SAS signing", err)
		}
		uris[i] = u
	}
	e.log.Info("provisioned containers", "site", c.s.key)
	return answer{method: "ProvisionMigrationContainers", typeName: "SP.ProvisionedMigrationContainersInfo", complex: true,
		props: obj{
			{"DataContainerUri", uris[0]},
			{"EncryptionKey", base64.StdEncoding.EncodeToString(key)},
			{"MetadataContainerUri", uris[1]},
		}}, nil
}

// containerName follows the observed shape 0-<n>-<yyyymmdd>-<32 hex>.
func containerName(siteKey string, now time.Time) string {
	h := fnv.New32a()
	h.Write([]byte(siteKey))
	var r [16]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("0-%d-%s-%s", 1000+h.Sum32()%9000, now.Format("20060102"), hex.EncodeToString(r[:]))
}

// protocol is spr: https only when the storage account is served over https (as SPO's are since July
// 2024); Azurite over plain http cannot honour spr=https.
func (e *Emulator) https() bool { return e.acct.blobURL.Scheme == "https" }

// containerSAS signs a container SAS with Read and Write only.
func (e *Emulator) containerSAS(name string, now time.Time) (string, error) {
	proto := sas.ProtocolHTTPSandHTTP
	if e.https() {
		proto = sas.ProtocolHTTPS
	}
	qp, err := sas.BlobSignatureValues{
		Protocol:      proto,
		StartTime:     now.Add(-e.opts.SASStartSkew).Truncate(time.Second),
		ExpiryTime:    now.Add(e.opts.SASValidity).Truncate(time.Second),
		Permissions:   (&sas.ContainerPermissions{Read: true, Write: true}).String(),
		ContainerName: name,
	}.SignWithSharedKey(e.blobCred)
	if err != nil {
		return "", err
	}
	return e.acct.blobURL.String() + "/" + name + "?" + qp.Encode(), nil
}

// provisionQueue answers ProvisionMigrationQueue: the site's one queue (created on first use) and a
// fresh SAS with Read, Add and Process (sp=rap: dequeue, peek, delete; the emulator writes the job
// events through it), no Update.
func (c *call) provisionQueue() (answer, *spError) {
	e := c.e
	qc := e.queue.NewQueueClient(c.s.queueName)
	if _, err := qc.Create(c.r.Context(), nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		return answer{}, internalErr("queue creation", err)
	}
	proto := qsas.ProtocolHTTPSandHTTP
	if e.acct.queueURL.Scheme == "https" {
		proto = qsas.ProtocolHTTPS
	}
	now := time.Now().UTC()
	qp, err := qsas.QueueSignatureValues{
		Protocol:    proto,
		StartTime:   now.Add(-e.opts.SASStartSkew).Truncate(time.Second),
		ExpiryTime:  now.Add(e.opts.QueueSASValidity).Truncate(time.Second),
		Permissions: (&qsas.QueuePermissions{Read: true, Add: true, Process: true}).String(),
		QueueName:   c.s.queueName,
	}.SignWithSharedKey(e.queueCred)
	if err != nil {
		return answer{}, internalErr("SAS signing", err)
	}
	return answer{method: "ProvisionMigrationQueue", typeName: "SP.ProvisionedMigrationQueueInfo", complex: true,
		props: obj{{"JobQueueUri", e.acct.queueURL.String() + "/" + c.s.queueName + "?" + qp.Encode()}}}, nil
}
