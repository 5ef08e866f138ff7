package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/spomig/spomig/internal/azauth"
	"github.com/spomig/spomig/internal/config"
	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/spo"
	"github.com/spomig/spomig/internal/vault"
)

// clients are the outside systems, built from the configuration.
type clients struct {
	blob   *azblob.Client
	queue  *azqueue.ServiceClient
	tables *aztables.ServiceClient
	jobs   *jobs.Store
	vault  *vault.Custody
	spo    *spo.Client
}

func newClients(ctx context.Context, cfg *config.Config, log *slog.Logger) (*clients, error) {
	c := &clients{}
	var err error
	if c.blob, err = cfg.Storage.BlobClient(nil); err != nil {
		return nil, err
	}
	if c.queue, err = cfg.Storage.QueueClient(nil); err != nil {
		return nil, err
	}
	if c.tables, err = cfg.Storage.TableClient(nil); err != nil {
		return nil, err
	}
	if c.jobs, err = jobs.New(c.tables, jobs.Options{Table: cfg.JobsTable, Logger: log.With("component", "jobs")}); err != nil {
		return nil, err
	}
	kvCred, err := azauth.New(azauthOptions(cfg.KeyVaultAuth))
	if err != nil {
		return nil, fmt.Errorf("key vault credential: %w", err)
	}
	if c.vault, err = vault.New(vault.Options{
		VaultURL:                             cfg.KeyVaultURL,
		Credential:                           kvCred,
		DisableChallengeResourceVerification: cfg.KeyVaultDisableChallengeVerification,
		Logger:                               log.With("component", "vault"),
	}); err != nil {
		return nil, err
	}
	spoCred, err := azauth.New(azauthOptions(cfg.SPOAuth))
	if err != nil {
		return nil, fmt.Errorf("SharePoint credential: %w", err)
	}
	if c.spo, err = spo.New(spo.Options{
		Credential:          spoCred,
		TenantHost:          cfg.TenantHost,
		AllowedSiteHosts:    cfg.AllowedSiteHosts,
		Organisation:        cfg.Organisation,
		Version:             Version,
		RetryBudget:         cfg.SPORetryBudget,
		AllowedStorageHosts: cfg.AllowedStorageHosts,
		Logger:              log.With("component", "spo"),
	}); err != nil {
		return nil, err
	}
	if err := c.ensureResources(ctx, cfg); err != nil {
		return nil, err
	}
	return c, nil
}

func azauthOptions(a config.Auth) azauth.Options {
	return azauth.Options{Kind: a.Kind, ClientID: a.ClientID, TenantID: a.TenantID,
		CertificatePath: a.CertificatePath, CertificatePassword: a.CertificatePassword}
}

// ensureResources creates the app's containers, queues and table when missing (idempotent).
func (c *clients) ensureResources(ctx context.Context, cfg *config.Config) error {
	for _, name := range []string{cfg.StagingContainer, cfg.ReportsContainer} {
		if _, err := c.blob.CreateContainer(ctx, name, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return fmt.Errorf("create container %s: %w", name, err)
		}
	}
	for _, name := range []string{cfg.SubmitQueue, cfg.SubmitQueue + "-poison"} {
		if _, err := c.queue.CreateQueue(ctx, name, nil); err != nil && !isQueueExists(err) {
			return fmt.Errorf("create queue %s: %w", name, err)
		}
	}
	return c.jobs.EnsureTable(ctx)
}

func isQueueExists(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && (re.ErrorCode == "QueueAlreadyExists" || re.StatusCode == 204)
}
