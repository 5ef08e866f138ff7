package stage

import (
	"regexp"
	"testing"
)

var leftSig = regexp.MustCompile(`(?i)sig=([^&\s"']*)`)

// FuzzRedact: whatever surrounds it, no sig= value survives redact except REDACTED.
func FuzzRedact(f *testing.F) {
	f.Add(`Put "https://a.blob.core.windows.net/c/b?sv=2025&sig=abc%2Bdef%3D&sp=rw": EOF`)
	f.Add("SIG=x&Sig=y sig=")
	f.Add("sig=sig=sig=a")
	f.Fuzz(func(t *testing.T, s string) {
		out := redact(s)
		for _, m := range leftSig.FindAllStringSubmatch(out, -1) {
			if m[1] != "REDACTED" && m[1] != "" {
				t.Fatalf("redact(%q) = %q keeps sig value %q", s, out, m[1])
			}
		}
	})
}
