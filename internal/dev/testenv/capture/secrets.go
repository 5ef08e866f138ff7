package capture

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// MinLen is the length under which Secrets keeps no form: shorter text turns up by chance.
const MinLen = 16

// KeyForms returns the text forms a byte secret (an AES key) may take in a leak: raw, base64 (standard
// and URL alphabets, padded or not) and hex (lower and upper case).
func KeyForms(b []byte) []string {
	return []string{string(b), base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b))}
}

// SigForms returns the forms of a SAS signature given as it appears in a URL query (percent-encoded):
// as given, decoded, encoded again (with and without "/" escaped) and the KeyForms of its bytes.
func SigForms(raw string) []string {
	out := []string{raw}
	if dec, err := url.QueryUnescape(raw); err == nil {
		out = append(out, dec, url.QueryEscape(dec), strings.ReplaceAll(url.QueryEscape(dec), "%2F", "/"))
		if b, err := base64.StdEncoding.DecodeString(dec); err == nil {
			out = append(out, KeyForms(b)...)
		}
	}
	return out
}

// SecretForms lists the forms of a key (KeyForms) and of the SAS signatures of URIs (SigForms). An
// empty URI is skipped; a URI without a signature fails the test.
func SecretForms(tb testing.TB, key []byte, uris ...string) []string {
	tb.Helper()
	out := KeyForms(key)
	for _, u := range uris {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil {
			tb.Fatal(err)
		}
		sig := p.Query().Get("sig")
		if sig == "" {
			tb.Fatalf("URI without a signature")
		}
		out = append(out, SigForms(url.QueryEscape(sig))...)
	}
	return out
}

// Secrets is a set of secret forms, each with what it is (for messages). It is safe for concurrent use;
// the zero value is empty and ready.
type Secrets struct {
	mu    sync.Mutex
	forms map[string]string // form → what it is
}

// Add keeps the forms (those of at least MinLen characters) of one secret.
func (s *Secrets) Add(what string, forms ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.forms == nil {
		s.forms = map[string]string{}
	}
	for _, f := range forms {
		if len(f) >= MinLen {
			s.forms[f] = what
		}
	}
}

var (
	sigParamRE = regexp.MustCompile(`(?i)[?&]sig=([^&"'\s\\]+)`)
	keyRE      = regexp.MustCompile(`"EncryptionKey"\s*:\s*"([^"]+)"`)
)

// LearnSPOAnswer keeps the secrets of a SharePoint answer: the AES key of ProvisionMigrationContainers
// and the signature of every SAS URI (containers, queue).
func (s *Secrets) LearnSPOAnswer(body []byte) {
	for _, m := range keyRE.FindAllSubmatch(body, -1) {
		if k, err := base64.StdEncoding.DecodeString(string(m[1])); err == nil && len(k) == 32 {
			s.Add("AES key issued by SharePoint", KeyForms(k)...)
		}
	}
	for _, m := range sigParamRE.FindAllSubmatch(bytes.ReplaceAll(body, []byte(`\u0026`), []byte("&")), -1) {
		s.Add("SAS signature issued by SharePoint", SigForms(string(m[1]))...)
	}
}

// LearnURL keeps the forms of the SAS signature of u, as what.
func (s *Secrets) LearnURL(what, u string) {
	pu, err := url.Parse(u)
	if err != nil {
		return
	}
	s.Add(what, SigForms(url.QueryEscape(pu.Query().Get("sig")))...)
}

// Len is the number of forms kept.
func (s *Secrets) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.forms)
}

// Find answers what each form found in text is (one entry per form found, in no order).
func (s *Secrets) Find(text []byte) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for f, what := range s.forms {
		if bytes.Contains(text, []byte(f)) {
			out = append(out, what)
		}
	}
	return out
}
