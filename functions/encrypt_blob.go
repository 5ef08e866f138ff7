package functions

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// EncryptBlobTrigger: a package appeared in migration-staging/{name}.
//
// The host may put the blob's bytes in Data.blob (base64, dataType binary); they are ignored. Packages can
// be far larger than an invocation body should carry, so the intake reads the blob from storage with ranged
// reads. From the payload only the container, the name and the ETag are taken.

// EncryptBlobBinding is the trigger binding name of EncryptBlobTrigger/function.json.
const EncryptBlobBinding = "package"

// BlobProperties is the part of Metadata.Properties the adapter uses. The host serializes the SDK's
// BlobProperties with JObject.FromObject: ETag is a struct there and may arrive as a string or as an
// object ({} when its members are not public), so it is read leniently; ContentLength may be a number
// or a string.
type BlobProperties struct {
	ETag          json.RawMessage `json:"ETag"`
	ContentLength json.RawMessage `json:"ContentLength"`
}

// BlobTrigger is a decoded blob-trigger invocation.
type BlobTrigger struct {
	Container, Name, URI, ETag string
	Size                       int64
	Metadata                   map[string]string
}

// DecodeBlobTrigger reads the blob trigger's metadata: Uri, name, Properties and Metadata.
func DecodeBlobTrigger(req *InvokeRequest) (*BlobTrigger, error) {
	if _, ok := req.Data[EncryptBlobBinding]; !ok {
		return nil, fmt.Errorf("%w: Data has no binding %q", ErrBadPayload, EncryptBlobBinding)
	}
	uri, err := req.MetaString("Uri")
	if err != nil {
		return nil, err
	}
	name, err := req.MetaString("name")
	if err != nil {
		return nil, err
	}
	bt := &BlobTrigger{URI: uri, Name: name}
	var props BlobProperties
	if _, err := req.MetaObject("Properties", &props); err != nil {
		return nil, err
	}
	if len(props.ETag) > 0 && props.ETag[0] == '"' {
		bt.ETag, _ = DecodeString(props.ETag) // "" when unusable: the intake reads the current ETag itself
	}
	if len(props.ContentLength) > 0 {
		bt.Size, _ = DecodeInt(props.ContentLength)
	}
	if _, err := req.MetaObject("Metadata", &bt.Metadata); err != nil {
		return nil, err
	}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			return nil, fmt.Errorf("%w: Metadata.Uri is not a URL", ErrBadPayload)
		}
		// Path style (Azurite: /account/container/name) or host style (/container/name).
		p := strings.TrimPrefix(u.Path, "/")
		parts := strings.SplitN(p, "/", 3)
		if len(parts) == 3 && !strings.Contains(u.Host, ".blob.") {
			bt.Container = parts[1]
			if bt.Name == "" {
				bt.Name, _ = url.PathUnescape(parts[2])
			}
		} else if len(parts) >= 2 {
			bt.Container = parts[0]
			if bt.Name == "" {
				bt.Name, _ = url.PathUnescape(strings.Join(parts[1:], "/"))
			}
		}
	}
	if bt.Name == "" {
		return nil, fmt.Errorf("%w: neither Metadata.name nor Metadata.Uri names the blob", ErrBadPayload)
	}
	return bt, nil
}

func (s *server) encryptBlob(ctx context.Context, inv *Invocation) (*Result, error) {
	bt, err := DecodeBlobTrigger(inv.Request)
	if err != nil {
		return nil, err
	}
	intake, err := s.opts.Services.Intake(ctx)
	if err != nil {
		return nil, err
	}
	inv.Log.InfoContext(ctx, "package blob", "container", bt.Container, "blob", bt.Name, "etag", bt.ETag, "size", bt.Size)
	if err := intake.ProcessBlob(ctx, bt.Container, bt.Name, bt.ETag); err != nil {
		return nil, err
	}
	return &Result{}, nil
}
