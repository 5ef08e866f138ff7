package capture

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/url"
	"sync"
	"testing"
)

func TestBufferConcurrentTeeRecords(t *testing.T) {
	var suite Buffer
	b := &Buffer{Tee: &suite}
	log := b.Logger()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.Info("call", "n", i)
			log.Debug("other")
		}()
	}
	wg.Wait()
	if n := len(b.Records("call")); n != 8 {
		t.Errorf("%d records of call, want 8", n)
	}
	if b.Lines() != 16 || suite.Lines() != 16 || suite.String() != b.String() {
		t.Errorf("lines %d, tee %d; tee holds the same text: %t", b.Lines(), suite.Lines(), suite.String() == b.String())
	}
}

func TestSecretsFindEveryForm(t *testing.T) {
	key := bytes.Repeat([]byte{0xA5, 0x5A, 0x01, 0xFE}, 8)
	sigBytes := bytes.Repeat([]byte{0xFB, 0xEF, 0x3F}, 11)
	sig := base64.StdEncoding.EncodeToString(sigBytes) // holds '+' and '/'
	uri := "https://127.0.0.1:1/devstoreaccount1/c?sv=1&sig=" + url.QueryEscape(sig)
	var s Secrets
	s.LearnSPOAnswer([]byte(fmt.Sprintf(`{"EncryptionKey":%q,"DataContainerUri":%q}`, base64.StdEncoding.EncodeToString(key), uri)))
	if s.Len() == 0 {
		t.Fatal("nothing learnt")
	}
	for _, leak := range append(SecretForms(t, key, uri, ""), sig, url.QueryEscape(sig), fmt.Sprintf("%x", key)) {
		if len(s.Find([]byte("log: "+leak+" end"))) == 0 {
			t.Errorf("leak %q not found", leak)
		}
	}
	if found := s.Find([]byte("sig=REDACTED, nothing secret here")); len(found) != 0 {
		t.Errorf("found %v in a clean text", found)
	}
	var up Secrets
	up.LearnURL("upload", uri)
	if got := up.Find([]byte(uri)); len(got) == 0 || got[0] != "upload" {
		t.Errorf("upload signature: %v", got)
	}
}
