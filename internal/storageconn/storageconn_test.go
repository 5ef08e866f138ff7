package storageconn

import (
	"strings"
	"testing"
)

func FuzzParseConnectionString(f *testing.F) {
	for _, s := range []string{
		"UseDevelopmentStorage=true",
		"UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://localhost",
		"DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
		"BlobEndpoint=https://contoso.blob.core.windows.net;SharedAccessSignature=sv=2022-11-02&sig=abc",
		"AccountName=a;AccountKey=c2VjcmV0;BlobEndpoint=::bad",
		";;=;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConnectionString(s)
		if err != nil {
			// An error never repeats a key given in the string.
			for _, part := range strings.Split(s, ";") {
				k, v, ok := strings.Cut(part, "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "AccountKey") && len(strings.TrimSpace(v)) >= 8 &&
					strings.Contains(err.Error(), strings.TrimSpace(v)) {
					t.Fatalf("error %q repeats the account key", err)
				}
			}
			return
		}
		if c.BlobURL == "" && c.QueueURL == "" && c.TableURL == "" {
			t.Fatalf("accepted %q without any endpoint", s)
		}
		if c.CredentialKind != "sharedkey" && c.CredentialKind != "sas" {
			t.Fatalf("accepted %q with credential kind %q", s, c.CredentialKind)
		}
	})
}
