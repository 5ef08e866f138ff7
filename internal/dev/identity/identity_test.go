package identity

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// The real azidentity ManagedIdentityCredential gets tokens from the endpoint through IDENTITY_ENDPOINT.
func TestManagedIdentityCredentialGetsTokens(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/msi/token", Handler(Options{Header: "h3ader"}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	t.Setenv("IDENTITY_ENDPOINT", srv.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", "h3ader")

	cred, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, scope := range []string{"https://vault.azure.net/.default", "https://127.0.0.1:10444/.default"} {
		tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{scope}})
		if err != nil {
			t.Fatalf("%s: %v", scope, err)
		}
		c, err := Claims(tok.Token)
		if err != nil {
			t.Fatal(err)
		}
		if want := scope[:len(scope)-len("/.default")]; c["aud"] != want {
			t.Fatalf("aud %v, want %s", c["aud"], want)
		}
	}

	t.Setenv("IDENTITY_HEADER", "wrong")
	cred2, _ := azidentity.NewManagedIdentityCredential(nil)
	if _, err := cred2.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://storage.azure.com/.default"}}); err == nil {
		t.Fatal("a wrong IDENTITY_HEADER got a token")
	}
}
