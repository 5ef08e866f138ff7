// Package storageconn turns an Azure Functions storage connection setting into Azure SDK clients for
// Blob, Queue and Table storage.
//
// A connection named N (for example AzureWebJobsStorage) is, as the Functions host reads it, either
//   - a connection string in setting N: "UseDevelopmentStorage=true" (which the Go SDK does not understand
//     and which is expanded here to the explicit Azurite endpoints), or the ordinary
//     "DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;..." form, with or without explicit
//     endpoints or a SharedAccessSignature; or
//   - an identity-based connection: N__blobServiceUri, N__queueServiceUri, N__tableServiceUri
//     (N__serviceUri for a blob-only connection, N__accountName for public-cloud accounts), with
//     N__credential=managedidentity and optional N__clientId, or local-development service principals
//     (N__tenantId, N__clientId, N__clientSecret). Without N__credential, DefaultAzureCredential is used.
package storageconn

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// The Azurite development account, as UseDevelopmentStorage=true means it.
const (
	DevAccount = "devstoreaccount1"
	DevKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Conn is a parsed storage connection.
type Conn struct {
	Name                        string                 // the setting name, for messages
	BlobURL, QueueURL, TableURL string                 // service endpoints, without a query string
	AccountName, AccountKey     string                 // set for shared-key connections
	SAS                         string                 // set for SAS connection strings (without the leading '?')
	Credential                  azcore.TokenCredential // set for identity-based connections
	CredentialKind              string                 // "sharedkey", "sas" or the identity kind
}

// Getenv reads a setting; os.Getenv fits.
type Getenv func(string) string

// Parse reads the connection named name. ClientOptions are used to build identity credentials.
func Parse(name string, getenv Getenv) (*Conn, error) {
	if name == "" {
		name = "AzureWebJobsStorage"
	}
	if v := strings.TrimSpace(getenv(name)); v != "" {
		c, err := ParseConnectionString(v)
		if err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
		c.Name = name
		return c, nil
	}
	return parseIdentity(name, getenv)
}

// ParseConnectionString parses a storage connection string, expanding UseDevelopmentStorage=true.
// Error messages never repeat the string (it may hold a key).
func ParseConnectionString(s string) (*Conn, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, errors.New("malformed connection string: a part has no '='")
		}
		kv[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if strings.EqualFold(kv["usedevelopmentstorage"], "true") {
		host := "http://127.0.0.1"
		if p := kv["developmentstorageproxyuri"]; p != "" {
			u, err := url.Parse(p)
			if err != nil || u.Host == "" {
				return nil, errors.New("malformed DevelopmentStorageProxyUri")
			}
			host = u.Scheme + "://" + u.Hostname()
		}
		return &Conn{
			BlobURL:        host + ":10000/" + DevAccount,
			QueueURL:       host + ":10001/" + DevAccount,
			TableURL:       host + ":10002/" + DevAccount,
			AccountName:    DevAccount,
			AccountKey:     DevKey,
			CredentialKind: "sharedkey",
		}, nil
	}
	c := &Conn{AccountName: kv["accountname"], AccountKey: kv["accountkey"], SAS: strings.TrimPrefix(kv["sharedaccesssignature"], "?")}
	proto := kv["defaultendpointsprotocol"]
	if proto == "" {
		proto = "https"
	}
	if proto != "http" && proto != "https" {
		return nil, fmt.Errorf("DefaultEndpointsProtocol must be http or https, not %q", proto)
	}
	suffix := kv["endpointsuffix"]
	if suffix == "" {
		suffix = "core.windows.net"
	}
	endpoint := func(explicit, svc string) (string, error) {
		if explicit != "" {
			u, err := url.Parse(explicit)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return "", fmt.Errorf("malformed %sEndpoint: want an absolute http(s) URL", title(svc))
			}
			return strings.TrimRight(explicit, "/"), nil
		}
		if c.AccountName == "" {
			return "", nil
		}
		return fmt.Sprintf("%s://%s.%s.%s", proto, c.AccountName, svc, suffix), nil
	}
	var err error
	if c.BlobURL, err = endpoint(kv["blobendpoint"], "blob"); err != nil {
		return nil, err
	}
	if c.QueueURL, err = endpoint(kv["queueendpoint"], "queue"); err != nil {
		return nil, err
	}
	if c.TableURL, err = endpoint(kv["tableendpoint"], "table"); err != nil {
		return nil, err
	}
	switch {
	case c.AccountKey != "":
		if c.AccountName == "" {
			return nil, errors.New("connection string has AccountKey but no AccountName")
		}
		c.CredentialKind = "sharedkey"
	case c.SAS != "":
		c.CredentialKind = "sas"
	default:
		return nil, errors.New("connection string needs AccountKey or SharedAccessSignature (or UseDevelopmentStorage=true)")
	}
	if c.BlobURL == "" && c.QueueURL == "" && c.TableURL == "" {
		return nil, errors.New("connection string needs AccountName or explicit endpoints")
	}
	return c, nil
}

func parseIdentity(name string, getenv Getenv) (*Conn, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(name + "__" + k)) }
	c := &Conn{Name: name}
	c.BlobURL, c.QueueURL, c.TableURL = get("blobServiceUri"), get("queueServiceUri"), get("tableServiceUri")
	if c.BlobURL == "" {
		c.BlobURL = get("serviceUri")
	}
	if acct := get("accountName"); acct != "" {
		if c.BlobURL == "" {
			c.BlobURL = "https://" + acct + ".blob.core.windows.net"
		}
		if c.QueueURL == "" {
			c.QueueURL = "https://" + acct + ".queue.core.windows.net"
		}
		if c.TableURL == "" {
			c.TableURL = "https://" + acct + ".table.core.windows.net"
		}
	}
	if c.BlobURL == "" && c.QueueURL == "" && c.TableURL == "" {
		return nil, fmt.Errorf("setting %s is missing: set a connection string, or %s__blobServiceUri/__queueServiceUri/__tableServiceUri (or __accountName) for an identity-based connection", name, name)
	}
	for k, v := range map[string]string{"blobServiceUri": c.BlobURL, "queueServiceUri": c.QueueURL, "tableServiceUri": c.TableURL} {
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, fmt.Errorf("setting %s__%s is not an absolute http(s) URL", name, k)
		}
	}
	c.BlobURL, c.QueueURL, c.TableURL = strings.TrimRight(c.BlobURL, "/"), strings.TrimRight(c.QueueURL, "/"), strings.TrimRight(c.TableURL, "/")
	var err error
	kind := strings.ToLower(get("credential"))
	switch kind {
	case "managedidentity":
		opts := &azidentity.ManagedIdentityCredentialOptions{}
		if id := get("clientId"); id != "" {
			opts.ID = azidentity.ClientID(id)
		} else if rid := get("managedIdentityResourceId"); rid != "" {
			opts.ID = azidentity.ResourceID(rid)
		}
		c.Credential, err = azidentity.NewManagedIdentityCredential(opts)
	case "":
		if tenant, id, secret := get("tenantId"), get("clientId"), get("clientSecret"); tenant != "" && id != "" && secret != "" {
			kind = "clientsecret"
			c.Credential, err = azidentity.NewClientSecretCredential(tenant, id, secret, nil)
		} else {
			kind = "default"
			c.Credential, err = azidentity.NewDefaultAzureCredential(nil)
		}
	default:
		return nil, fmt.Errorf("setting %s__credential: unknown credential %q (want managedidentity, or leave it empty)", name, kind)
	}
	if err != nil {
		return nil, fmt.Errorf("setting %s: build %s credential: %w", name, kind, err)
	}
	c.CredentialKind = kind
	return c, nil
}

// BlobClient builds an azblob client for the connection.
func (c *Conn) BlobClient(opts *azblob.ClientOptions) (*azblob.Client, error) {
	if c.BlobURL == "" {
		return nil, fmt.Errorf("connection %s has no blob endpoint", c.Name)
	}
	switch {
	case c.AccountKey != "":
		cred, err := azblob.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("connection %s: account key: %w", c.Name, errors.New("not valid base64"))
		}
		return azblob.NewClientWithSharedKeyCredential(c.BlobURL+"/", cred, opts)
	case c.SAS != "":
		return azblob.NewClientWithNoCredential(c.BlobURL+"/?"+c.SAS, opts)
	default:
		return azblob.NewClient(c.BlobURL+"/", c.Credential, opts)
	}
}

// QueueClient builds an azqueue service client for the connection.
func (c *Conn) QueueClient(opts *azqueue.ClientOptions) (*azqueue.ServiceClient, error) {
	if c.QueueURL == "" {
		return nil, fmt.Errorf("connection %s has no queue endpoint", c.Name)
	}
	switch {
	case c.AccountKey != "":
		cred, err := azqueue.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("connection %s: account key: %w", c.Name, errors.New("not valid base64"))
		}
		return azqueue.NewServiceClientWithSharedKeyCredential(c.QueueURL+"/", cred, opts)
	case c.SAS != "":
		return azqueue.NewServiceClientWithNoCredential(c.QueueURL+"/?"+c.SAS, opts)
	default:
		return azqueue.NewServiceClient(c.QueueURL+"/", c.Credential, opts)
	}
}

// TableClient builds an aztables service client for the connection.
func (c *Conn) TableClient(opts *aztables.ClientOptions) (*aztables.ServiceClient, error) {
	if c.TableURL == "" {
		return nil, fmt.Errorf("connection %s has no table endpoint", c.Name)
	}
	switch {
	case c.AccountKey != "":
		cred, err := aztables.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("connection %s: account key: %w", c.Name, errors.New("not valid base64"))
		}
		return aztables.NewServiceClientWithSharedKey(c.TableURL+"/", cred, opts)
	case c.SAS != "":
		return aztables.NewServiceClientWithNoCredential(c.TableURL+"/?"+c.SAS, opts)
	default:
		return aztables.NewServiceClient(c.TableURL+"/", c.Credential, opts)
	}
}

func title(s string) string { return strings.ToUpper(s[:1]) + s[1:] }
