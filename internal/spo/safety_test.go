package spo

import (
	"errors"
	"testing"
)

func TestParseSite(t *testing.T) {
	c, err := New(Options{Credential: &staticCredential{}, TenantHost: "contoso.sharepoint.com",
		AllowedSiteHosts: []string{"contoso.sharepoint.com", "CONTOSO-my.sharepoint.com", "127.0.0.1:8443"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, base, scope string
		err             error
	}{
		{"https://contoso.sharepoint.com/sites/x", "https://contoso.sharepoint.com/sites/x", "https://contoso.sharepoint.com/.default", nil},
		{"https://Contoso.SharePoint.com:443/sites/x/", "https://contoso.sharepoint.com/sites/x", "https://contoso.sharepoint.com/.default", nil},
		{"https://contoso.sharepoint.com", "https://contoso.sharepoint.com", "https://contoso.sharepoint.com/.default", nil},
		{"https://contoso-my.sharepoint.com/personal/a_b", "https://contoso-my.sharepoint.com/personal/a_b", "https://contoso-my.sharepoint.com/.default", nil},
		{"https://127.0.0.1:8443/sites/x", "https://127.0.0.1:8443/sites/x", "https://127.0.0.1:8443/.default", nil},
		{"HTTPS://contoso.sharepoint.com/sites/a%20b", "https://contoso.sharepoint.com/sites/a%20b", "https://contoso.sharepoint.com/.default", nil},
		{"http://contoso.sharepoint.com/sites/x", "", "", ErrSiteNotHTTPS},
		{"ftp://contoso.sharepoint.com/sites/x", "", "", ErrSiteNotHTTPS},
		{"", "", "", ErrSiteNotHTTPS},
		{"https://127.0.0.1:8444/sites/x", "", "", ErrSiteNotAllowed},
		{"https://contoso.sharepoint.com.evil.com/sites/x", "", "", ErrSiteNotAllowed},
		{"https://evil.com/contoso.sharepoint.com/sites/x", "", "", ErrSiteNotAllowed},
		{"https://u@contoso.sharepoint.com/sites/x", "", "", ErrSiteNotAllowed},
		{"https:contoso.sharepoint.com/sites/x", "", "", ErrSiteNotAllowed},
		{"https:///sites/x", "", "", ErrSiteNotAllowed},
		{"https://contoso.sharepoint.com/sites/x?", "", "", ErrSiteNotAllowed},
		{"https://contoso.sharepoint.com/sites/x/_vti_bin/client.svc", "", "", ErrSiteNotAllowed},
		{"https://contoso.sharepoint.com/sites/x/%2e%2e/y", "", "", ErrSiteNotAllowed},
	}
	for _, tt := range tests {
		s, err := c.parseSite(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("parseSite(%q) err = %v, want %v", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseSite(%q): %v", tt.in, err)
			continue
		}
		if s.base != tt.base || s.scope != tt.scope {
			t.Errorf("parseSite(%q) = %+v, want base %s scope %s", tt.in, s, tt.base, tt.scope)
		}
	}
}

func TestCheckStorageURI(t *testing.T) {
	c, err := New(Options{Credential: &staticCredential{}, TenantHost: "contoso.sharepoint.com", AllowedStorageHosts: []string{"127.0.0.1:10000", "Azurite.local:10001"}})
	if err != nil {
		t.Fatal(err)
	}
	const sas = "?sv=2018-03-28&sr=c&sig=abc&spr=https"
	tests := []struct {
		uri  string
		kind storageKind
		id   string // "" when refused
	}{
		{"https://spoprov1.blob.core.windows.net/0-1623-data" + sas, blobContainer, "spoprov1.blob.core.windows.net/0-1623-data"},
		{"https://spoprov1.blob.core.windows.net:443/0-1623-data" + sas, blobContainer, "spoprov1.blob.core.windows.net/0-1623-data"},
		{"https://SPOPROV1.Blob.Core.Windows.Net/c/" + sas, blobContainer, "spoprov1.blob.core.windows.net/c"},
		{"https://gov1.blob.core.usgovcloudapi.net/c" + sas, blobContainer, "gov1.blob.core.usgovcloudapi.net/c"},
		{"https://cn1.blob.core.chinacloudapi.cn/c" + sas, blobContainer, "cn1.blob.core.chinacloudapi.cn/c"},
		{"https://spoprov1.queue.core.windows.net:443/q?sp=rap&sig=x", storageQueue, "spoprov1.queue.core.windows.net/q"},
		{"https://gov1.queue.core.usgovcloudapi.net/q", storageQueue, "gov1.queue.core.usgovcloudapi.net/q"},
		{"https://cn1.queue.core.chinacloudapi.cn/q", storageQueue, "cn1.queue.core.chinacloudapi.cn/q"},
		{"http://127.0.0.1:10000/devstoreaccount1/c" + sas, blobContainer, "127.0.0.1:10000/devstoreaccount1/c"},
		{"https://127.0.0.1:10000/devstoreaccount1/c", blobContainer, "127.0.0.1:10000/devstoreaccount1/c"},
		{"http://azurite.local:10001/devstoreaccount1/q", storageQueue, "azurite.local:10001/devstoreaccount1/q"},
		// refused
		{"http://spoprov1.blob.core.windows.net/c" + sas, blobContainer, ""},
		{"https://spoprov1.blob.core.windows.net:8443/c" + sas, blobContainer, ""},
		{"https://evil.example.com/c" + sas, blobContainer, ""},
		{"https://spoprov1.blob.core.windows.net.evil.com/c" + sas, blobContainer, ""},
		{"https://blob.core.windows.net/c", blobContainer, ""},
		{"https://ab.blob.core.windows.net/c", blobContainer, ""},
		{"https://a-b1.blob.core.windows.net/c", blobContainer, ""},
		{"https://x.y.blob.core.windows.net/c", blobContainer, ""},
		{"https://spoprov1.queue.core.windows.net/q", blobContainer, ""},
		{"https://spoprov1.blob.core.windows.net/c", storageQueue, ""},
		{"https://spoprov1.blob.core.windows.net/c/blob" + sas, blobContainer, ""},
		{"https://spoprov1.blob.core.windows.net/" + sas, blobContainer, ""},
		{"https://spoprov1.blob.core.windows.net/c#f", blobContainer, ""},
		{"https://user:pw@spoprov1.blob.core.windows.net/c", blobContainer, ""},
		{"//spoprov1.blob.core.windows.net/c", blobContainer, ""},
		{"spoprov1.blob.core.windows.net/c", blobContainer, ""},
		{"http://127.0.0.1:10002/devstoreaccount1/c", blobContainer, ""},
		{"http://127.0.0.1:10000", blobContainer, ""},
		{"ftp://127.0.0.1:10000/devstoreaccount1/c", blobContainer, ""},
		{"", blobContainer, ""},
		{"https://spoprov1.blob.core.windows.net/c%zz", blobContainer, ""},
	}
	for _, tt := range tests {
		id, err := c.checkStorageURI(tt.uri, tt.kind)
		if tt.id == "" {
			if !errors.Is(err, ErrStorageHostNotAllowed) {
				t.Errorf("checkStorageURI(%q, %v) = %q, %v; want refusal", tt.uri, tt.kind, id, err)
			}
			continue
		}
		if err != nil || id != tt.id {
			t.Errorf("checkStorageURI(%q, %v) = %q, %v; want %q", tt.uri, tt.kind, id, err, tt.id)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://a.blob.core.windows.net/c?sv=2018-03-28&sr=c&sig=abc%2Bdef%3D&st=2023-05-08T00:00:00Z&sp=rw",
			"https://a.blob.core.windows.net/c?sv=2018-03-28&sr=c&sig=REDACTED&st=2023-05-08T00:00:00Z&sp=rw"},
		{"https://a/c?sig=abc", "https://a/c?sig=REDACTED"},
		{"https://a/c?SIG=abc&x=1", "https://a/c?SIG=REDACTED&x=1"},
		{"https://a/c?sig=a/b+c==#frag", "https://a/c?sig=REDACTED#frag"},
		{"https://a/c?sig=", "https://a/c?sig=REDACTED"},
		{"https://a/c?x=1&sig=1&sig=2", "https://a/c?x=1&sig=REDACTED&sig=REDACTED"},
		{"https://a/c?redirect=https%3A%2F%2Fb%3Fsig%3Dabc", "https://a/c?redirect=https%3A%2F%2Fb%3Fsig%3DREDACTED"},
		{"https://a/c?sv=1&sp=rw", "https://a/c?sv=1&sp=rw"},
		{"https://a/c", "https://a/c"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseGUID(t *testing.T) {
	for in, want := range map[string]string{
		testJobID:                                testJobID,
		"{9E8D7C6B-5A49-4837-A625-140F1E2D3C4B}": testJobID,
		emptyGUID:                                emptyGUID,
	} {
		if got, ok := parseGUID(in); !ok || got != want {
			t.Errorf("parseGUID(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "x", testJobID + " ", " " + testJobID, "{" + testJobID, "9e8d7c6b5a494837a625140f1e2d3c4b",
		"9e8d7c6b-5a49-4837-a625-140f1e2d3c4g", "9e8d7c6b-5a49-4837-a625_140f1e2d3c4b"} {
		if got, ok := parseGUID(in); ok {
			t.Errorf("parseGUID(%q) = %q, accepted", in, got)
		}
	}
}
