package funchost

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// keysFile is the local stand-in for the host's key store (<app>/.funchost/keys.json by default).
//
//	{
//	  "masterKey": "…",                              // admin level, /admin/* and every function
//	  "hostKeys": { "default": "…" },                // function level, every function
//	  "functionKeys": { "ProvisionHttp": { "default": "…" } }   // optional, function level, one function
//	}
//
// The file is created with a random master key and a random default host key on first run (mode 0600). The app
// settings FUNCHOST_MASTER_KEY and FUNCHOST_FUNCTION_KEY replace the master key and the default host key (they
// are not written back).
type keysFile struct {
	MasterKey    string                       `json:"masterKey"`
	HostKeys     map[string]string            `json:"hostKeys"`
	FunctionKeys map[string]map[string]string `json:"functionKeys,omitempty"`
}

type keyStore struct {
	path string
	keys keysFile
}

func randomKey() string {
	b := make([]byte, 40)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return strings.TrimRight(base64.URLEncoding.EncodeToString(b), "=")
}

func loadKeys(path string, s settings) (*keyStore, bool, error) {
	ks := &keyStore{path: path}
	created := false
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		ks.keys = keysFile{MasterKey: randomKey(), HostKeys: map[string]string{"default": randomKey()}}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		out, _ := json.MarshalIndent(ks.keys, "", "  ")
		if err := os.WriteFile(path, append(out, '\n'), 0o600); err != nil {
			return nil, false, fmt.Errorf("write keys file: %w", err)
		}
		created = true
	case err != nil:
		return nil, false, err
	default:
		if err := json.Unmarshal(stripBOM(b), &ks.keys); err != nil {
			return nil, false, fmt.Errorf("keys file %s: %w", path, err)
		}
	}
	if ks.keys.HostKeys == nil {
		ks.keys.HostKeys = map[string]string{}
	}
	if v, ok := s.get("FUNCHOST_MASTER_KEY"); ok && v != "" {
		ks.keys.MasterKey = v
	}
	if v, ok := s.get("FUNCHOST_FUNCTION_KEY"); ok && v != "" {
		ks.keys.HostKeys["default"] = v
	}
	if ks.keys.MasterKey == "" {
		return nil, false, fmt.Errorf("keys file %s: masterKey is empty", path)
	}
	return ks, created, nil
}

func keyEqual(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// authLevel returns the level a presented key grants for a function ("admin", "function" or "" for none) and
// the key's name.
func (k *keyStore) authLevel(key, function string) (level, keyID string) {
	if key == "" {
		return "", ""
	}
	if keyEqual(key, k.keys.MasterKey) {
		return "admin", "master"
	}
	for name, v := range k.keys.HostKeys {
		if keyEqual(key, v) {
			return "function", name
		}
	}
	for fn, keys := range k.keys.FunctionKeys {
		if !strings.EqualFold(fn, function) {
			continue
		}
		for name, v := range keys {
			if keyEqual(key, v) {
				return "function", name
			}
		}
	}
	return "", ""
}
