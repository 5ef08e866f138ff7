package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// The secrets check (CONTRIBUTING: "Secrets (AES keys, SAS signatures, tokens) never appear in logs,
// errors, records or HTTP responses"). At the end of every test, after its stack stopped:
//
//   - the secrets issued are read from the Key Vault emulator's state file (every version of every
//     secret, deleted ones included): each job's AES key and the sig= of its container SAS URIs, each
//     site's report queue SAS; plus the signature of every staging upload URL the API minted;
//   - the corpus is every line every part wrote (handler, host, Azurite, Key Vault and SPO emulators) and
//     every distinct API response body the test received;
//   - no secret may appear in the corpus, in any of the encodings a careless log line would use (base64
//     standard/URL, padded or not, hex; SAS signatures raw, percent-encoded either case, decoded). The
//     one exception is the upload URL's own signature in the 201 answer of the create that minted it.
//   - no bearer token (a JWT) appears either.

// secretNeedle is one secret with every text form it could leak as.
type secretNeedle struct {
	label string
	forms []string
}

func keyForms(k []byte) []string {
	return []string{
		base64.StdEncoding.EncodeToString(k), base64.RawStdEncoding.EncodeToString(k),
		base64.URLEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k),
		hex.EncodeToString(k), strings.ToUpper(hex.EncodeToString(k)),
	}
}

var rawSigRE = regexp.MustCompile(`(?i)(?:^|[?&])sig=([^&#]+)`)

// sigOf returns the decoded sig= value of a SAS URL ("" without one).
func sigOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	for k, v := range u.Query() {
		if strings.EqualFold(k, "sig") && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func sigForms(rawURL string) []string {
	sig := sigOf(rawURL)
	if sig == "" {
		return nil
	}
	forms := map[string]bool{sig: true, url.QueryEscape(sig): true, percentLower(url.QueryEscape(sig)): true,
		url.PathEscape(sig): true, strings.TrimRight(sig, "="): true}
	if u, err := url.Parse(rawURL); err == nil {
		if m := rawSigRE.FindStringSubmatch(u.RawQuery); m != nil {
			forms[m[1]] = true
		}
	}
	var out []string
	for f := range forms {
		if len(f) >= 16 {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// percentLower writes the hex digits of percent escapes in lower case ("%2B" → "%2b").
func percentLower(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerHex(b[i+1]), lowerHex(b[i+2])
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// kvState is the Key Vault emulator's state file (internal/dev/kvemu/store.go).
type kvState struct {
	Secrets map[string]*kvSecret `json:"secrets"`
	Deleted map[string]struct {
		Secret *kvSecret `json:"secret"`
	} `json:"deleted"`
}

type kvSecret struct {
	Name     string `json:"name"`
	Versions []struct {
		Value string `json:"value"`
	} `json:"versions"`
}

// issuedSecrets reads every secret the stack's Key Vault ever held.
func (e *env) issuedSecrets() []secretNeedle {
	n, err := secretsInVaultState(filepath.Join(e.dir, "data", "keyvault", "kvemu-state.json"))
	if err != nil {
		e.t.Errorf("secrets check: %v", err)
	}
	return n
}

// secretsInVaultState reads the Key Vault emulator's state file: every version of every secret,
// deleted ones included. A missing file means no secret was ever stored.
func secretsInVaultState(path string) ([]secretNeedle, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st kvState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("key vault state: %w", err)
	}
	all := []*kvSecret{}
	for _, s := range st.Secrets {
		all = append(all, s)
	}
	for _, d := range st.Deleted {
		if d.Secret != nil {
			all = append(all, d.Secret)
		}
	}
	var out []secretNeedle
	for _, s := range all {
		for i, v := range s.Versions {
			var m map[string]any
			if json.Unmarshal([]byte(v.Value), &m) != nil {
				continue
			}
			for k, x := range m {
				str, _ := x.(string)
				if str == "" {
					continue
				}
				label := fmt.Sprintf("%s#%d.%s", s.Name, i, k)
				if k == "key" {
					if key, err := base64.StdEncoding.DecodeString(str); err == nil && len(key) >= 16 {
						out = append(out, secretNeedle{label: label + " (AES key)", forms: keyForms(key)})
					}
					continue
				}
				if f := sigForms(str); len(f) > 0 {
					out = append(out, secretNeedle{label: label + " (SAS sig)", forms: f})
				}
			}
		}
	}
	return out, nil
}

// tokenize cuts text into runs of the characters base64, hex and percent-encoding use (at least 16
// long): every leaked form of a secret lies inside one run, so the check compares secrets with the
// distinct runs only.
func tokenize(text string, into map[string]bool) {
	start := -1
	for i := 0; i <= len(text); i++ {
		in := i < len(text) && isTokenByte(text[i])
		if in && start < 0 {
			start = i
		}
		if !in && start >= 0 {
			if i-start >= 16 {
				into[text[start:i]] = true
			}
			start = -1
		}
	}
}

func isTokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '+' || c == '/' || c == '=' || c == '%' || c == '-' || c == '_'
}

func leaks(tokens map[string]bool, n secretNeedle) (string, bool) {
	for tok := range tokens {
		for _, f := range n.forms {
			if strings.Contains(tok, f) {
				return tok, true
			}
		}
	}
	return "", false
}

// checkSecrets runs the check over everything the test captured.
func (e *env) checkSecrets() {
	needles := e.issuedSecrets()
	e.mu.Lock()
	bodies := make([]*apiBody, 0, len(e.bodies))
	for _, b := range e.bodies {
		bodies = append(bodies, b)
	}
	e.mu.Unlock()
	logText := e.log.String()
	found, n := findLeaks(needles, logText, bodies)
	for _, f := range found {
		e.t.Errorf("secrets check: %s", f)
	}
	e.t.Logf("secrets check: %d secrets against %d KiB of logs and %d distinct API answers", n, len(logText)>>10, len(bodies))
}

// findLeaks searches the logs and the bodies for the needles and for the upload signatures the 201
// bodies carry (allowed only in their own body). It returns what it found (at most 10) and the number
// of secrets searched.
func findLeaks(needles []secretNeedle, logText string, bodies []*apiBody) ([]string, int) {
	uploadSigs := map[string]bool{}
	for _, b := range bodies {
		if b.uploadSig != "" {
			uploadSigs[b.uploadSig] = true
		}
	}
	for sig := range uploadSigs {
		needles = append(needles, secretNeedle{label: "a staging upload URL sig", forms: sigForms("https://x/?sig=" + url.QueryEscape(sig))})
	}
	var found []string
	report := func(format string, a ...any) {
		if len(found) < 10 {
			found = append(found, fmt.Sprintf(format, a...))
		}
	}
	common := map[string]bool{}
	tokenize(logText, common)
	for _, b := range bodies {
		if b.uploadSig == "" {
			tokenize(string(b.body), common)
		}
	}
	for _, n := range needles {
		if tok, ok := leaks(common, n); ok {
			report("%s appears in a log line or an API answer (in %q)", n.label, redactAround(tok))
		}
	}
	// A 201 may carry its own upload signature, nothing else.
	for _, b := range bodies {
		if b.uploadSig == "" {
			continue
		}
		toks := map[string]bool{}
		tokenize(string(b.body), toks)
		for _, n := range needles {
			if slices.Contains(n.forms, b.uploadSig) {
				continue
			}
			if _, ok := leaks(toks, n); ok {
				report("%s appears in the answer %s", n.label, b.what)
			}
		}
	}
	// Bearer tokens: a JWT header never shows.
	for _, jwt := range []string{"eyJhbGciOi", "eyJ0eXAiOi"} {
		if strings.Contains(logText, jwt) {
			report("a bearer token (JWT) appears in the logs")
		}
		for _, b := range bodies {
			if strings.Contains(string(b.body), jwt) {
				report("a bearer token (JWT) appears in the answer %s", b.what)
			}
		}
	}
	return found, len(needles)
}

// redactAround shows where a leak was found without printing the secret.
func redactAround(tok string) string {
	if len(tok) <= 12 {
		return "…"
	}
	return tok[:6] + "…" + tok[len(tok)-6:]
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func azcoreOpts(c *http.Client) azcore.ClientOptions { return azcore.ClientOptions{Transport: c} }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestSecretsCheckFindsLeaks checks the checker: every leaked form of a key and of a signature is found,
// and an upload URL is accepted in its own 201 answer only.
func TestSecretsCheckFindsLeaks(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb, 0x3e, 0x11}, 11)[:32]
	sas := "https://127.0.0.1:10100/devstoreaccount1/c?sv=2021-08-06&sp=rw&sig=abc%2Bdef%2Fghi0123456789jklmnopqrstuvwxyzAB%3D"
	upload := "https://127.0.0.1:10000/devstoreaccount1/migration-staging/x.zip?sv=2021-08-06&sp=cw&sig=UPLOADupload0123456789%2Bzzzzzzzzzzzzzzzzzzzz%3D"
	dir := t.TempDir()
	val, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString(key), "dataContainerUri": sas})
	state, _ := json.Marshal(map[string]any{"secrets": map[string]any{"spomig-job-x": map[string]any{
		"name": "spomig-job-x", "versions": []map[string]any{{"value": string(val)}}}}})
	path := filepath.Join(dir, "kvemu-state.json")
	if err := os.WriteFile(path, state, 0o600); err != nil {
		t.Fatal(err)
	}
	needles, err := secretsInVaultState(path)
	if err != nil || len(needles) != 2 {
		t.Fatalf("needles %d, %v", len(needles), err)
	}
	created := &apiBody{what: "POST /migrations 201", body: []byte(`{"upload":{"url":"` + upload + `"}}`), uploadSig: sigOf(upload)}
	if found, _ := findLeaks(needles, "clean log line sig=REDACTED\n", []*apiBody{created}); len(found) != 0 {
		t.Fatalf("false positives: %v", found)
	}
	for name, leak := range map[string]string{
		"key base64":        "key=" + base64.StdEncoding.EncodeToString(key),
		"key raw url":       `"k":"` + base64.RawURLEncoding.EncodeToString(key) + `"`,
		"key hex":           "key " + hex.EncodeToString(key) + " end",
		"sig encoded":       "GET " + sas + " 200",
		"sig decoded":       "sig: abc+def/ghi0123456789jklmnopqrstuvwxyzAB= ",
		"sig lower percent": "sig=abc%2bdef%2fghi0123456789jklmnopqrstuvwxyzAB%3d&x",
		"upload in a log":   "PUT " + upload,
		"jwt":               "Authorization: Bearer eyJhbGciOiJub25lIn0.e30.x",
	} {
		if found, _ := findLeaks(needles, "before\n"+leak+"\nafter", []*apiBody{created}); len(found) == 0 {
			t.Errorf("%s: leak not found", name)
		}
	}
	other := &apiBody{what: "GET /migrations/x 200", body: []byte(`{"url":"` + upload + `"}`)}
	if found, _ := findLeaks(needles, "", []*apiBody{created, other}); len(found) == 0 {
		t.Errorf("an upload URL in another answer was not found")
	}
}
