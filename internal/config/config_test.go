package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) Getenv { return func(k string) string { return m[k] } }

// minimal is a complete valid configuration.
func minimal() map[string]string {
	return map[string]string{
		"FUNCTIONS_CUSTOMHANDLER_PORT": "34567",
		"AzureWebJobsStorage":          "UseDevelopmentStorage=true",
		"SPOMIG_KEYVAULT_URL":          "https://contoso-spomig.vault.azure.net/",
		"SPOMIG_TENANT_HOST":           "Contoso.SharePoint.com",
		"SPOMIG_SPO_AUTH":              "managedidentity",
	}
}

func with(kv ...string) map[string]string {
	m := minimal()
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "<unset>" {
			delete(m, kv[i])
		} else {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 34567 || c.KeyVaultURL != "https://contoso-spomig.vault.azure.net" || c.TenantHost != "contoso.sharepoint.com" {
		t.Fatalf("parsed %+v", c)
	}
	if len(c.AllowedSiteHosts) != 1 || c.AllowedSiteHosts[0] != "contoso.sharepoint.com" {
		t.Fatalf("allowed site hosts default %v", c.AllowedSiteHosts)
	}
	if c.StagingContainer != "migration-staging" || c.SubmitQueue != "migration-submit" || c.JobsTable != "migrationjobs" || c.ReportsContainer != "migration-reports" {
		t.Fatalf("names %+v", c)
	}
	if c.UploadConcurrency != 2 || c.UploadBlockSize != 4<<20 || c.SPORetryBudget != 2*time.Minute || c.StuckAfter != 6*time.Hour || c.Retention != 168*time.Hour {
		t.Fatalf("defaults %+v", c)
	}
	if strings.Join(c.MonitorSources, ",") != "queue,progress" {
		t.Fatalf("monitor sources %v", c.MonitorSources)
	}
}

func TestMaxDequeueCountFromHostJSON(t *testing.T) {
	c, err := Load(env(with("FUNCTIONS_APP_ROOT_PATH", "../..")))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxDequeueCount != 5 {
		t.Fatalf("maxDequeueCount from the app's host.json = %d, want 5", c.MaxDequeueCount)
	}
	c, err = Load(env(with("AzureFunctionsJobHost__extensions__queues__maxDequeueCount", "3")))
	if err != nil || c.MaxDequeueCount != 3 {
		t.Fatalf("override: %v %v", c, err)
	}
}

func TestStorageConnectionKinds(t *testing.T) {
	tests := []struct {
		desc               string
		settings           map[string]string
		blob, queue, table string
		kind               string
	}{
		{"UseDevelopmentStorage=true expands to Azurite", with(),
			"http://127.0.0.1:10000/devstoreaccount1", "http://127.0.0.1:10001/devstoreaccount1", "http://127.0.0.1:10002/devstoreaccount1", "sharedkey"},
		{"UseDevelopmentStorage with proxy", with("AzureWebJobsStorage", "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://localhost"),
			"http://localhost:10000/devstoreaccount1", "http://localhost:10001/devstoreaccount1", "http://localhost:10002/devstoreaccount1", "sharedkey"},
		{"account connection string", with("AzureWebJobsStorage", "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=a2V5;EndpointSuffix=core.windows.net"),
			"https://contoso.blob.core.windows.net", "https://contoso.queue.core.windows.net", "https://contoso.table.core.windows.net", "sharedkey"},
		{"explicit endpoints", with("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:20000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:20001/devstoreaccount1;TableEndpoint=http://127.0.0.1:20002/devstoreaccount1;"),
			"http://127.0.0.1:20000/devstoreaccount1", "http://127.0.0.1:20001/devstoreaccount1", "http://127.0.0.1:20002/devstoreaccount1", "sharedkey"},
		{"SAS connection string", with("AzureWebJobsStorage", "BlobEndpoint=https://contoso.blob.core.windows.net;QueueEndpoint=https://contoso.queue.core.windows.net;SharedAccessSignature=sv=2022-11-02&sig=abc"),
			"https://contoso.blob.core.windows.net", "https://contoso.queue.core.windows.net", "", "sas"},
		{"identity with user-assigned managed identity", with("AzureWebJobsStorage", "<unset>",
			"AzureWebJobsStorage__blobServiceUri", "https://contoso.blob.core.windows.net/",
			"AzureWebJobsStorage__queueServiceUri", "https://contoso.queue.core.windows.net",
			"AzureWebJobsStorage__tableServiceUri", "https://contoso.table.core.windows.net",
			"AzureWebJobsStorage__credential", "managedidentity",
			"AzureWebJobsStorage__clientId", "11111111-1111-1111-1111-111111111111"),
			"https://contoso.blob.core.windows.net", "https://contoso.queue.core.windows.net", "https://contoso.table.core.windows.net", "managedidentity"},
		{"identity by account name, DefaultAzureCredential", with("AzureWebJobsStorage", "<unset>", "AzureWebJobsStorage__accountName", "contoso"),
			"https://contoso.blob.core.windows.net", "https://contoso.queue.core.windows.net", "https://contoso.table.core.windows.net", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := Load(env(tc.settings))
			if err != nil {
				t.Fatal(err)
			}
			s := c.Storage
			if s.BlobURL != tc.blob || s.QueueURL != tc.queue || s.TableURL != tc.table || s.CredentialKind != tc.kind {
				t.Fatalf("got blob=%s queue=%s table=%s kind=%s", s.BlobURL, s.QueueURL, s.TableURL, s.CredentialKind)
			}
			if tc.kind == "managedidentity" || tc.kind == "default" {
				if s.Credential == nil {
					t.Fatal("identity connection without a credential")
				}
			}
		})
	}
}

func TestInvalidSettingsAreNamed(t *testing.T) {
	tests := []struct {
		desc     string
		settings map[string]string
		want     []string
	}{
		{"missing port", with("FUNCTIONS_CUSTOMHANDLER_PORT", "<unset>"), []string{"FUNCTIONS_CUSTOMHANDLER_PORT is missing"}},
		{"port not a number", with("FUNCTIONS_CUSTOMHANDLER_PORT", "http"), []string{`FUNCTIONS_CUSTOMHANDLER_PORT: "http" is not a port number`}},
		{"port out of range", with("FUNCTIONS_CUSTOMHANDLER_PORT", "70000"), []string{"is not a port number (1-65535)"}},
		{"missing storage", with("AzureWebJobsStorage", "<unset>"), []string{"setting AzureWebJobsStorage is missing"}},
		{"malformed connection string", with("AzureWebJobsStorage", "garbage"), []string{"AzureWebJobsStorage: malformed connection string"}},
		{"connection string without key", with("AzureWebJobsStorage", "AccountName=contoso"), []string{"needs AccountKey or SharedAccessSignature"}},
		{"malformed blob endpoint", with("AzureWebJobsStorage", "AccountName=a;AccountKey=a2V5;BlobEndpoint=not a url"), []string{"malformed BlobEndpoint"}},
		{"malformed identity URL", with("AzureWebJobsStorage", "<unset>", "AzureWebJobsStorage__blobServiceUri", "contoso.blob"), []string{"AzureWebJobsStorage__blobServiceUri is not an absolute http(s) URL"}},
		{"unknown storage credential", with("AzureWebJobsStorage", "<unset>", "AzureWebJobsStorage__blobServiceUri", "https://c.blob.core.windows.net", "AzureWebJobsStorage__credential", "password"), []string{`unknown credential "password"`}},
		{"key vault URL missing", with("SPOMIG_KEYVAULT_URL", "<unset>"), []string{"SPOMIG_KEYVAULT_URL is missing"}},
		{"key vault URL not https", with("SPOMIG_KEYVAULT_URL", "http://kv.vault.azure.net"), []string{`SPOMIG_KEYVAULT_URL: "http://kv.vault.azure.net" is not an https URL`}},
		{"tenant host with scheme", with("SPOMIG_TENANT_HOST", "https://contoso.sharepoint.com"), []string{"SPOMIG_TENANT_HOST: \"https://contoso.sharepoint.com\" is not a host name"}},
		{"unknown SPO credential kind", with("SPOMIG_SPO_AUTH", "secret"), []string{`SPOMIG_SPO_AUTH: unknown credential kind "secret"`}},
		{"certificate auth incomplete", with("SPOMIG_SPO_AUTH", "certificate"), []string{"SPOMIG_SPO_CLIENT_ID is missing", "SPOMIG_SPO_TENANT_ID is missing", "SPOMIG_SPO_CERTIFICATE_PATH is missing"}},
		{"unknown key vault credential", with("SPOMIG_KEYVAULT_AUTH", "kerberos"), []string{`SPOMIG_KEYVAULT_AUTH: unknown credential kind "kerberos"`}},
		{"client id with default credential", with("SPOMIG_KEYVAULT_CLIENT_ID", "11111111-1111-1111-1111-111111111111"), []string{"SPOMIG_KEYVAULT_CLIENT_ID: is set but SPOMIG_KEYVAULT_AUTH is default"}},
		{"bad duration", with("SPOMIG_STUCK_AFTER", "soon"), []string{`SPOMIG_STUCK_AFTER: "soon" is not a positive duration`}},
		{"block size too small", with("SPOMIG_UPLOAD_BLOCK_SIZE", "1024"), []string{"SPOMIG_UPLOAD_BLOCK_SIZE: \"1024\" is not a whole number from 1048576"}},
		{"bad monitor source", with("SPOMIG_MONITOR_SOURCES", "queue,email"), []string{`SPOMIG_MONITOR_SOURCES: "email" is not one of queue, progress`}},
		{"bad container name", with("SPOMIG_STAGING_CONTAINER", "Migration_Staging"), []string{"SPOMIG_STAGING_CONTAINER: \"Migration_Staging\" is not a valid name"}},
		{"bad boolean", with("SPOMIG_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION", "yes please"), []string{"is not true or false"}},
		{"organisation with pipe", with("SPOMIG_ORGANISATION", "a|b"), []string{"SPOMIG_ORGANISATION: must not contain '|'"}},
		{"several at once", with("FUNCTIONS_CUSTOMHANDLER_PORT", "<unset>", "SPOMIG_KEYVAULT_URL", "<unset>", "SPOMIG_TENANT_HOST", "<unset>"),
			[]string{"3 problems", "FUNCTIONS_CUSTOMHANDLER_PORT is missing", "SPOMIG_KEYVAULT_URL is missing", "SPOMIG_TENANT_HOST is missing"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := Load(env(tc.settings))
			if err == nil {
				t.Fatal("accepted")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not *config.Error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestConnectionStringErrorsNeverEchoTheKey(t *testing.T) {
	const secret = "c2VjcmV0LWFjY291bnQta2V5LXZhbHVl"
	for _, cs := range []string{
		"AccountKey=" + secret,
		"AccountName=a;AccountKey=" + secret + ";BlobEndpoint=::bad",
		"AccountName=a;AccountKey=" + secret + ";DefaultEndpointsProtocol=ftp",
		secret,
	} {
		_, err := Load(env(with("AzureWebJobsStorage", cs)))
		if err == nil {
			t.Fatalf("accepted %q", cs)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error echoes the account key: %v", err)
		}
	}
}

func TestSettingsTableCoversEverySettingRead(t *testing.T) {
	read := map[string]bool{}
	probe := func(k string) string { read[k] = true; return minimal()[k] }
	if _, err := Load(probe); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, s := range Settings {
		documented[s.Name] = true
	}
	for k := range read {
		if strings.HasPrefix(k, "AzureWebJobsStorage__") {
			continue // documented under AzureWebJobsStorage
		}
		if !documented[k] && k != "WEBSITE_HOSTNAME" && k != "FUNCTIONS_APP_ROOT_PATH" && !strings.HasPrefix(k, "AzureFunctionsJobHost__") {
			t.Errorf("setting %s is read but not documented in Settings", k)
		}
	}
}

func TestREADMESettingsTableIsCurrent(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, "<!-- settings:begin -->\n"), strings.Index(s, "<!-- settings:end -->")
	if i < 0 || j < i {
		t.Fatal("README has no settings markers")
	}
	got := s[i+len("<!-- settings:begin -->\n") : j]
	if got != SettingsMarkdown() {
		t.Fatal("README's configuration table is stale: run `go run ./cmd/settingsdoc` and paste it between the markers")
	}
}
