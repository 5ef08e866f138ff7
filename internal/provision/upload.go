package provision

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/spomig/spomig/internal/storageconn"
)

// clockSkew is how far a SAS start time is set back, so that a server whose clock is behind ours accepts it.
const clockSkew = 5 * time.Minute

// uploadPermissions are the staging upload SAS permissions: create and write, nothing else (no read,
// add, list, delete or tag), so the URL cannot be used to read or enumerate packages.
var uploadPermissions = (&sas.BlobPermissions{Create: true, Write: true}).String()

// signer mints blob SAS URLs.
type signer interface {
	sign(ctx context.Context, container, blob string, start, expiry time.Time) (string, error)
}

// newSigner picks the signing method of a storage connection: the account key when there is one, a user
// delegation key for identity-based connections, none for SAS connection strings.
func newSigner(conn *storageconn.Conn, opts *azblob.ClientOptions, delegationKeyLifetime time.Duration) (signer, error) {
	if conn == nil {
		return nil, nil
	}
	switch {
	case conn.AccountKey != "":
		cred, err := azblob.NewSharedKeyCredential(conn.AccountName, conn.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("connection %s: account key is not valid base64", conn.Name)
		}
		return &sharedKeySigner{blobURL: conn.BlobURL, cred: cred}, nil
	case conn.Credential != nil:
		c, err := conn.BlobClient(opts)
		if err != nil {
			return nil, err
		}
		return &delegationSigner{blobURL: conn.BlobURL, svc: c.ServiceClient(), lifetime: delegationKeyLifetime}, nil
	default:
		return nil, nil
	}
}

func protocolFor(blobURL string) sas.Protocol {
	if strings.HasPrefix(strings.ToLower(blobURL), "https://") {
		return sas.ProtocolHTTPS
	}
	return sas.ProtocolHTTPSandHTTP // only a local emulator is served over plain http
}

func blobSASURL(blobURL, container, blob string, qp sas.QueryParameters) string {
	return strings.TrimRight(blobURL, "/") + "/" + url.PathEscape(container) + "/" + escapeBlobName(blob) + "?" + qp.Encode()
}

// escapeBlobName escapes each path segment of a blob name, keeping the '/' separators.
func escapeBlobName(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

func uploadValues(container, blob string, blobURL string, start, expiry time.Time) sas.BlobSignatureValues {
	return sas.BlobSignatureValues{
		Protocol:      protocolFor(blobURL),
		StartTime:     start.UTC(),
		ExpiryTime:    expiry.UTC(),
		Permissions:   uploadPermissions,
		ContainerName: container,
		BlobName:      blob,
	}
}

// sharedKeySigner signs a service SAS with the account key.
type sharedKeySigner struct {
	blobURL string
	cred    *sas.SharedKeyCredential
}

func (s *sharedKeySigner) sign(_ context.Context, container, blob string, start, expiry time.Time) (string, error) {
	qp, err := uploadValues(container, blob, s.blobURL, start, expiry).SignWithSharedKey(s.cred)
	if err != nil {
		return "", fmt.Errorf("sign upload SAS: %w", err)
	}
	return blobSASURL(s.blobURL, container, blob, qp), nil
}

// delegationSigner signs a user delegation SAS. The user delegation key is fetched once and reused until
// it would expire before a SAS signed with it (a SAS cannot outlive its key).
type delegationSigner struct {
	blobURL  string
	svc      *service.Client
	lifetime time.Duration

	mu      sync.Mutex
	cred    *service.UserDelegationCredential
	expires time.Time
}

func (s *delegationSigner) sign(ctx context.Context, container, blob string, start, expiry time.Time) (string, error) {
	cred, err := s.key(ctx, start, expiry)
	if err != nil {
		return "", err
	}
	qp, err := uploadValues(container, blob, s.blobURL, start, expiry).SignWithUserDelegation(cred)
	if err != nil {
		return "", fmt.Errorf("sign upload SAS: %w", err)
	}
	return blobSASURL(s.blobURL, container, blob, qp), nil
}

func (s *delegationSigner) key(ctx context.Context, start, expiry time.Time) (*service.UserDelegationCredential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cred != nil && s.expires.After(expiry) {
		return s.cred, nil
	}
	keyExpiry := expiry.Add(s.lifetime)
	if max := start.Add(7 * 24 * time.Hour); keyExpiry.After(max) { // the service's limit
		keyExpiry = max
	}
	cred, err := s.svc.GetUserDelegationCredential(ctx, service.KeyInfo{
		Start:  to.Ptr(start.UTC().Format(sas.TimeFormat)),
		Expiry: to.Ptr(keyExpiry.UTC().Format(sas.TimeFormat)),
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("get user delegation key: %w", err)
	}
	s.cred, s.expires = cred, keyExpiry
	return cred, nil
}
