package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// ErrReportNotFound reports a log file that does not exist.
var ErrReportNotFound = errors.New("report not found")

// MaxLogFiles bounds the files listed for one job (the monitor writes four: .log, .err, .wrn, items.csv).
const MaxLogFiles = 100

// BlobReports reads the decrypted logs in the reports container (migration-reports).
type BlobReports struct {
	c *container.Client
}

// NewBlobReports reads the container c, e.g.
// blobClient.ServiceClient().NewContainerClient(cfg.ReportsContainer).
func NewBlobReports(c *container.Client) *BlobReports { return &BlobReports{c: c} }

// List returns the blobs directly under prefix (not in sub-folders), names relative to prefix, at most
// MaxLogFiles.
func (b *BlobReports) List(ctx context.Context, prefix string) ([]ReportFile, error) {
	var out []ReportFile
	pager := b.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(prefix), MaxResults: to.Ptr(int32(MaxLogFiles))})
	for pager.More() && len(out) < MaxLogFiles {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list log files: %w", err)
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil {
				continue
			}
			name := strings.TrimPrefix(*it.Name, prefix)
			if name == "" || strings.Contains(name, "/") || !validLogName(name) {
				continue
			}
			var size int64
			if it.Properties != nil && it.Properties.ContentLength != nil {
				size = *it.Properties.ContentLength
			}
			out = append(out, ReportFile{Name: name, Size: size})
			if len(out) == MaxLogFiles {
				break
			}
		}
	}
	return out, nil
}

// Open streams the blob name; ErrReportNotFound when it does not exist.
func (b *BlobReports) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	resp, err := b.c.NewBlobClient(name).DownloadStream(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return nil, 0, ErrReportNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open log file: %w", err)
	}
	var size int64
	if resp.ContentLength != nil {
		size = *resp.ContentLength
	}
	return resp.Body, size, nil
}
