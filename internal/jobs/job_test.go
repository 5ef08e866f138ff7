package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

func TestMarkEventSeen(t *testing.T) {
	j := &Job{}
	long := strings.Repeat("k", MaxEventKeyBytes+1)
	tests := []struct {
		key  string
		want bool
	}{
		{"JobStart|1", true},
		{"JobStart|1", false},
		{"JobProgress|2", true},
		{long, true},
		{long, false},
		{"ctrl\x00key", true},
		{"ctrl\x00key", false},
	}
	for _, tt := range tests {
		if got := j.MarkEventSeen(tt.key); got != tt.want {
			t.Errorf("MarkEventSeen(%.20q) = %v", tt.key, got)
		}
		if !j.HasSeenEvent(tt.key) {
			t.Errorf("HasSeenEvent(%.20q) false", tt.key)
		}
	}
	for _, k := range j.SeenEvents {
		if len(k) > MaxEventKeyBytes || !printableASCII(k) {
			t.Errorf("stored key %q", k)
		}
	}
	// Bounded: the oldest keys are forgotten.
	for i := range MaxSeenEvents {
		j.MarkEventSeen(fmt.Sprint("e", i))
	}
	if len(j.SeenEvents) != MaxSeenEvents || j.HasSeenEvent("JobStart|1") || !j.HasSeenEvent("e0") {
		t.Fatalf("%d keys", len(j.SeenEvents))
	}
}

func TestAddItemFailure(t *testing.T) {
	j := &Job{}
	for i := range MaxFirstErrors + 3 {
		kept := j.AddItemFailure(ItemFailure{Kind: "bogus", URL: "https://x/y?sig=abc", Message: strings.Repeat("m", 2*MaxItemMessageBytes), ErrorCode: fmt.Sprint(i)})
		if kept != (i < MaxFirstErrors) {
			t.Fatalf("item %d kept %v", i, kept)
		}
	}
	f := j.FirstErrors[0]
	if len(j.FirstErrors) != MaxFirstErrors || f.Kind != ItemError || f.URL != "https://x/y?sig=REDACTED" || len(f.Message) != MaxItemMessageBytes {
		t.Fatalf("%d items, first %+v", len(j.FirstErrors), f)
	}
}

func TestSubmitLease(t *testing.T) {
	now := time.Date(2025, 5, 20, 9, 0, 0, 0, time.UTC)
	j := &Job{}
	steps := []struct {
		owner   string
		at      time.Time
		wantErr error
	}{
		{"a", now, nil},
		{"b", now.Add(time.Minute), ErrLeaseHeld},
		{"a", now.Add(time.Minute), nil}, // renew
		{"b", now.Add(7 * time.Minute), nil},
		{"", now.Add(8 * time.Minute), ErrInvalid},
	}
	for i, s := range steps {
		if err := j.AcquireSubmitLease(s.owner, s.at, 5*time.Minute); !errors.Is(err, s.wantErr) || (s.wantErr == nil) != (err == nil) {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if !j.HoldsSubmitLease("b", now.Add(8*time.Minute)) || j.HoldsSubmitLease("a", now.Add(8*time.Minute)) {
		t.Fatal("holder")
	}
	j.ReleaseSubmitLease("a")
	if j.SubmitLease.Owner != "b" {
		t.Fatal("released by a non-holder")
	}
	j.ReleaseSubmitLease("b")
	if j.SubmitLease != (Lease{}) {
		t.Fatal("not released")
	}
}

func TestPercentages(t *testing.T) {
	tests := []struct {
		done, total int64
		want        float64
		ok          bool
	}{
		{0, 0, 0, false},
		{5, 0, 0, false},
		{5, -1, 0, false},
		{0, 10, 0, true},
		{5, 10, 50, true},
		{1, 3, 100.0 / 3, true},
		{12, 10, 100, true},
		{-1, 10, 0, true},
	}
	for _, tt := range tests {
		j := &Job{FilesDone: tt.done, FilesTotal: tt.total, BytesDone: tt.done, BytesTotal: tt.total, ObjectsDone: tt.done, ObjectsTotal: tt.total}
		for name, f := range map[string]func() (float64, bool){"files": j.FilesPercent, "bytes": j.BytesPercent, "objects": j.ObjectsPercent} {
			if got, ok := f(); got != tt.want || ok != tt.ok {
				t.Errorf("%s %d/%d = %v, %v", name, tt.done, tt.total, got, ok)
			}
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Job)
		wantErr error
	}{
		{"empty id", func(j *Job) { j.ID = "" }, ErrInvalid},
		{"id with slash", func(j *Job) { j.ID = "a/b" }, ErrInvalid},
		{"id with quote", func(j *Job) { j.ID = "a'b" }, ErrInvalid},
		{"SPO job id with space", func(j *Job) { j.SPOJobID = "a b" }, ErrInvalid},
		{"unknown state", func(j *Job) { j.State = "Paused" }, ErrInvalid},
		{"unknown source", func(j *Job) { j.Source = "ftp" }, ErrInvalid},
		{"long label", func(j *Job) { j.Label = strings.Repeat("l", maxLabelBytes+1) }, ErrInvalid},
		{"control char", func(j *Job) { j.SiteURL = "https://x/\n" }, ErrInvalid},
		{"invalid UTF-8", func(j *Job) { j.Label = "\xff" }, ErrInvalid},
		{"time before 1601", func(j *Job) { j.CleanupAt = time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC) }, ErrInvalid},
		{"signed callback", func(j *Job) { j.CallbackURL = "https://prod.logic.azure.com/invoke?sp=x&sig=abc" }, ErrSecret},
		{"SAS blob name", func(j *Job) { j.StagingBlob.Name = "x.zip?SIG=abc" }, ErrSecret},
		{"account key", func(j *Job) { j.ProgressToken = "AccountKey=abc" }, ErrSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := fullJob("j1")
			tt.mutate(j)
			if _, err := j.prepare(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var secretLike = regexp.MustCompile(`(?i)key|sas|sig`)

// TestNoSecretLikeProperties guards the record format: no entity property, no property of the JSON
// list properties and no Job field is named like a key, SAS or signature.
func TestNoSecretLikeProperties(t *testing.T) {
	j := fullJob("j1")
	j.FailureReason = "x"
	j.Postponed = Postponement{NextPickupTime: time.Now(), Reason: "y"}
	j.EndedAt = time.Now()
	props, err := j.prepare()
	if err != nil {
		t.Fatal(err)
	}
	b, err := entityJSON(mainRowKey(j.ID), props)
	if err != nil {
		t.Fatal(err)
	}
	checkNoSecretNames(t, b)
	if len(props) < 35 {
		t.Fatalf("only %d properties: fullJob does not set every field", len(props))
	}
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for f := range typ.Fields() {
			if secretLike.MatchString(f.Name) {
				t.Errorf("field %s.%s is named like a secret", path, f.Name)
			}
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == typ.PkgPath() {
				walk(f.Type, path+"."+f.Name)
			}
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
				walk(f.Type.Elem(), path+"."+f.Name)
			}
		}
	}
	walk(reflect.TypeFor[Job](), "Job")
}

// checkNoSecretNames checks the property names of an entity's JSON and of its JSON list properties.
func checkNoSecretNames(t *testing.T, entity []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(entity, &m); err != nil {
		t.Fatal(err)
	}
	for name, v := range m {
		base := strings.SplitN(name, "@", 2)[0]
		switch {
		case base == "PartitionKey" || base == "RowKey" || strings.HasPrefix(name, "odata."):
		case secretLike.MatchString(base):
			t.Errorf("property %q is named like a secret", name)
		}
		s, ok := v.(string)
		if !ok || !strings.HasPrefix(s, "[") {
			continue
		}
		var list []any
		if err := json.Unmarshal([]byte(s), &list); err != nil {
			continue
		}
		for _, item := range list {
			if obj, ok := item.(map[string]any); ok {
				for k := range obj {
					if secretLike.MatchString(k) {
						t.Errorf("property %s.%s is named like a secret", name, k)
					}
				}
			}
		}
	}
}

// TestListsFitPathologicalContent: text that JSON escapes six-fold still fits the property bound,
// by dropping entries as documented.
func TestListsFitPathologicalContent(t *testing.T) {
	j := &Job{ID: "j", State: StateRunning}
	nasty := strings.Repeat("\x01", MaxItemMessageBytes)
	for range MaxFirstErrors {
		j.AddItemFailure(ItemFailure{Kind: ItemError, URL: strings.Repeat("\x02", MaxItemURLBytes), Message: nasty})
	}
	j.History = []Transition{{State: StateAwaitingPackage, Reason: "created"}}
	for range MaxHistory {
		j.History = append(j.History, Transition{State: StateRunning, Reason: nasty})
	}
	props, err := j.prepare()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pFirstErrors, pHistory} {
		s, _ := props[p].(string)
		if s == "" || len(s) > MaxJSONPropertyBytes {
			t.Errorf("%s: %d bytes", p, len(s))
		}
	}
	if len(j.FirstErrors) == 0 || len(j.FirstErrors) == MaxFirstErrors || j.History[0].Reason != "created" {
		t.Fatalf("%d first errors, first history %+v", len(j.FirstErrors), j.History[0])
	}
}

// utf16Bytes is the size Azure Tables counts for a string property.
func utf16Bytes(s string) int { return 2 * len(utf16.Encode([]rune(s))) }
