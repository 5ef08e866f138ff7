package kvemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// StateFile is the name of the state file inside Options.DataDir.
const StateFile = "kvemu-state.json"

// state is everything the emulator remembers. Map keys are lower-cased secret names: Key Vault names are
// case-insensitive.
type state struct {
	Secrets map[string]*secret      `json:"secrets"`
	Deleted map[string]*deletedItem `json:"deleted"`
	// Purging holds names whose purge is still "in progress" (Unix nanoseconds until which a re-create
	// answers 409 ObjectIsBeingDeleted).
	Purging map[string]int64 `json:"purging,omitempty"`
}

type secret struct {
	Name     string     `json:"name"` // as first created
	Versions []*version `json:"versions"`
}

type version struct {
	Version     string            `json:"version"`
	Value       string            `json:"value"`
	ContentType string            `json:"contentType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Enabled     bool              `json:"enabled"`
	NotBefore   *int64            `json:"nbf,omitempty"`
	Expires     *int64            `json:"exp,omitempty"`
	Created     int64             `json:"created"`
	Updated     int64             `json:"updated"`
}

type deletedItem struct {
	Secret             *secret `json:"secret"`
	DeletedDate        int64   `json:"deletedDate"`
	ScheduledPurgeDate int64   `json:"scheduledPurgeDate"`
	// VisibleAt (Unix nanoseconds) is when the asynchronous delete "completes" (Options.DeleteLatency).
	VisibleAt int64 `json:"visibleAt,omitempty"`
}

func newState() *state {
	return &state{Secrets: map[string]*secret{}, Deleted: map[string]*deletedItem{}, Purging: map[string]int64{}}
}

func (s *secret) latest() *version { return s.Versions[len(s.Versions)-1] }

func (s *secret) find(v string) *version {
	for _, x := range s.Versions {
		if strings.EqualFold(x.Version, v) {
			return x
		}
	}
	return nil
}

// sortedKeys returns the keys of m in order (listing order).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func loadState(dir string) (*state, error) {
	st := newState()
	if dir == "" {
		return st, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("kvemu: state file %s is corrupt: %w", filepath.Join(dir, StateFile), err)
	}
	if st.Secrets == nil {
		st.Secrets = map[string]*secret{}
	}
	if st.Deleted == nil {
		st.Deleted = map[string]*deletedItem{}
	}
	if st.Purging == nil {
		st.Purging = map[string]int64{}
	}
	return st, nil
}

// save writes the state atomically: a temporary file in the same folder, fsync, rename, fsync of the folder.
func (st *state) save(dir string) error {
	if dir == "" {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".kvemu-state-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, StateFile)); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
