package funchost

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// This file is the host's own (small) storage-connection handling. The host is a separate program from the
// product, so it does not share internal/storageconn: it resolves a binding's "connection" the way the Functions
// host does:
//
//   - empty → AzureWebJobsStorage; a setting name without the AzureWebJobs prefix also matches AzureWebJobs<name>;
//   - UseDevelopmentStorage=true[;DevelopmentStorageProxyUri=http://host] → the Azurite endpoints
//     (blob 10000, queue 10001, table 10002, account devstoreaccount1 and its well-known key); the Go SDK does not
//     understand the short form;
//   - any other connection string → parsed by the Azure SDK;
//   - no such setting, but <conn>__blobServiceUri / __queueServiceUri / __serviceUri / __accountName → identity-based,
//     with azidentity (DefaultAzureCredential, or a managed identity / client secret when __credential, __clientId,
//     __tenantId, __clientSecret say so). "__" may also be written ":".

const (
	devAccount = "devstoreaccount1"
	devKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

type storageConn struct {
	name  string // setting name or identity prefix
	blob  *service.Client
	queue *azqueue.ServiceClient
}

type connCache struct {
	s  settings
	mu sync.Mutex
	m  map[string]*storageConn
}

func newConnCache(s settings) *connCache { return &connCache{s: s, m: map[string]*storageConn{}} }

func (c *connCache) get(name string) (*storageConn, error) {
	if name == "" {
		name = "AzureWebJobsStorage"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc, ok := c.m[strings.ToLower(name)]; ok {
		return sc, nil
	}
	sc, err := openConn(c.s, name)
	if err != nil {
		return nil, err
	}
	c.m[strings.ToLower(name)] = sc
	return sc, nil
}

// expandDevelopmentStorage rewrites UseDevelopmentStorage=true into the explicit Azurite connection string.
// It returns the input unchanged when it is not the short form.
func expandDevelopmentStorage(cs string) string {
	kv := parseConnString(cs)
	if !strings.EqualFold(kv["usedevelopmentstorage"], "true") {
		return cs
	}
	scheme, host := "http", "127.0.0.1"
	if p := kv["developmentstorageproxyuri"]; p != "" {
		if u, err := url.Parse(p); err == nil && u.Hostname() != "" {
			scheme, host = u.Scheme, u.Hostname()
		}
	}
	return fmt.Sprintf("DefaultEndpointsProtocol=%[1]s;AccountName=%[3]s;AccountKey=%[4]s;"+
		"BlobEndpoint=%[1]s://%[2]s:10000/%[3]s;QueueEndpoint=%[1]s://%[2]s:10001/%[3]s;TableEndpoint=%[1]s://%[2]s:10002/%[3]s;",
		scheme, host, devAccount, devKey)
}

// parseConnString splits "k=v;k=v" into lower-cased keys (values keep '=' such as key padding).
func parseConnString(cs string) map[string]string {
	m := map[string]string{}
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		m[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	return m
}

func (s settings) identitySetting(prefix, key string) (string, bool) {
	if v, ok := s.get(prefix + "__" + key); ok && v != "" {
		return v, true
	}
	if v, ok := s.get(prefix + ":" + key); ok && v != "" {
		return v, true
	}
	return "", false
}

func openConn(s settings, name string) (*storageConn, error) {
	candidates := []string{name}
	if !strings.HasPrefix(strings.ToLower(name), "azurewebjobs") {
		candidates = append(candidates, "AzureWebJobs"+name)
	}
	for _, n := range candidates {
		if cs, ok := s.get(n); ok && strings.TrimSpace(cs) != "" {
			return connFromString(n, expandDevelopmentStorage(cs))
		}
	}
	for _, n := range candidates {
		if sc, ok, err := connFromIdentity(s, n); ok || err != nil {
			return sc, err
		}
	}
	return nil, fmt.Errorf("storage connection %q: no app setting %q (connection string) and no %s__blobServiceUri/__queueServiceUri/__accountName (identity)", name, name, name)
}

func connFromString(name, cs string) (*storageConn, error) {
	b, err := service.NewClientFromConnectionString(cs, nil)
	if err != nil {
		return nil, fmt.Errorf("storage connection %q: %w", name, err)
	}
	q, err := azqueue.NewServiceClientFromConnectionString(cs, nil)
	if err != nil {
		return nil, fmt.Errorf("storage connection %q: %w", name, err)
	}
	return &storageConn{name: name, blob: b, queue: q}, nil
}

func connFromIdentity(s settings, prefix string) (*storageConn, bool, error) {
	blobURI, hasBlob := s.identitySetting(prefix, "blobServiceUri")
	queueURI, hasQueue := s.identitySetting(prefix, "queueServiceUri")
	if svc, ok := s.identitySetting(prefix, "serviceUri"); ok {
		if !hasBlob && strings.Contains(svc, ".blob.") {
			blobURI, hasBlob = svc, true
		} else if !hasQueue && strings.Contains(svc, ".queue.") {
			queueURI, hasQueue = svc, true
		} else if !hasBlob {
			blobURI, hasBlob = svc, true
		}
	}
	if acct, ok := s.identitySetting(prefix, "accountName"); ok {
		if !hasBlob {
			blobURI, hasBlob = "https://"+acct+".blob.core.windows.net", true
		}
		if !hasQueue {
			queueURI, hasQueue = "https://"+acct+".queue.core.windows.net", true
		}
	}
	if !hasBlob && !hasQueue {
		return nil, false, nil
	}
	cred, err := identityCredential(s, prefix)
	if err != nil {
		return nil, true, fmt.Errorf("storage connection %q: %w", prefix, err)
	}
	sc := &storageConn{name: prefix}
	if hasBlob {
		opts := &service.ClientOptions{}
		opts.InsecureAllowCredentialWithHTTP = strings.HasPrefix(strings.ToLower(blobURI), "http:")
		if sc.blob, err = service.NewClient(blobURI, cred, opts); err != nil {
			return nil, true, fmt.Errorf("storage connection %q: %w", prefix, err)
		}
	}
	if hasQueue {
		opts := &azqueue.ClientOptions{}
		opts.InsecureAllowCredentialWithHTTP = strings.HasPrefix(strings.ToLower(queueURI), "http:")
		if sc.queue, err = azqueue.NewServiceClient(queueURI, cred, opts); err != nil {
			return nil, true, fmt.Errorf("storage connection %q: %w", prefix, err)
		}
	}
	return sc, true, nil
}

func identityCredential(s settings, prefix string) (azcore.TokenCredential, error) {
	clientID, _ := s.identitySetting(prefix, "clientId")
	tenantID, _ := s.identitySetting(prefix, "tenantId")
	secret, _ := s.identitySetting(prefix, "clientSecret")
	credential, _ := s.identitySetting(prefix, "credential")
	switch {
	case tenantID != "" && clientID != "" && secret != "":
		return azidentity.NewClientSecretCredential(tenantID, clientID, secret, nil)
	case strings.EqualFold(credential, "managedidentity"):
		o := &azidentity.ManagedIdentityCredentialOptions{}
		if clientID != "" {
			o.ID = azidentity.ClientID(clientID)
		} else if rid, ok := s.identitySetting(prefix, "managedIdentityResourceId"); ok {
			o.ID = azidentity.ResourceID(rid)
		}
		return azidentity.NewManagedIdentityCredential(o)
	}
	return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: policy.ClientOptions{}})
}

func (sc *storageConn) queueService() (*azqueue.ServiceClient, error) {
	if sc.queue == nil {
		return nil, errors.New("storage connection " + sc.name + " has no queue endpoint")
	}
	return sc.queue, nil
}

func (sc *storageConn) blobService() (*service.Client, error) {
	if sc.blob == nil {
		return nil, errors.New("storage connection " + sc.name + " has no blob endpoint")
	}
	return sc.blob, nil
}
