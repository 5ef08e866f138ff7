package jobs

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
)

// seed creates jobs in the given states and returns their ids by state.
func seed(t *testing.T, s *Store, counts map[State]int) map[State][]string {
	t.Helper()
	ids := map[State][]string{}
	for st, n := range counts {
		for range n {
			j := &Job{ID: newID("ls"), State: st}
			if err := s.Create(context.Background(), j); err != nil {
				t.Fatal(err)
			}
			ids[st] = append(ids[st], j.ID)
		}
	}
	for st := range ids {
		slices.Sort(ids[st])
	}
	return ids
}

func TestListPagesWithStateFilter(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	ids := seed(t, s, map[State]int{
		StateQueued: 3, StateRunning: 5, StateAwaitingPackage: 4, StateCompleted: 2, StatePostponed: 1,
	})
	tests := []struct {
		name      string
		states    []State
		top       int
		wantPages []int
		want      []string
	}{
		{"two states, 3 pages", []State{StateRunning, StateQueued}, 3, []int{3, 3, 2},
			append(slices.Clone(ids[StateQueued]), ids[StateRunning]...)},
		{"active states, 5 pages", ActiveStates(), 2, []int{2, 2, 2, 2, 1},
			slices.Concat(ids[StateQueued], ids[StatePostponed], ids[StateRunning])},
		{"non-adjacent states", []State{StateCompleted, StateAwaitingPackage, StateCompleted}, 4, []int{4, 2},
			slices.Concat(ids[StateAwaitingPackage], ids[StateCompleted])},
		{"no match", []State{StateFailed}, 3, []int{0}, nil},
		{"all jobs", nil, 6, []int{6, 6, 3}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var sizes []int
			token := ""
			for {
				page, next, err := s.List(ctx, ListOptions{State: tt.states, Top: tt.top, ContinuationToken: token})
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(page))
				for _, j := range page {
					if len(tt.states) > 0 && !slices.Contains(tt.states, j.State) {
						t.Errorf("job %s in state %s", j.ID, j.State)
					}
					got = append(got, j.ID)
				}
				if next == "" {
					break
				}
				if len(sizes) > 20 {
					t.Fatal("paging does not end")
				}
				token = next
			}
			if !slices.Equal(sizes, tt.wantPages) {
				t.Errorf("page sizes %v, want %v", sizes, tt.wantPages)
			}
			if tt.want != nil && !slices.Equal(got, tt.want) {
				t.Errorf("ids\n got %v\nwant %v", got, tt.want)
			}
			if tt.states == nil && (len(got) != 15 || !slices.IsSorted(got)) {
				t.Errorf("all jobs: %v", got)
			}
		})
	}
}

func TestListContinuationTokenRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	seed(t, s, map[State]int{StateRunning: 5, StateQueued: 1})
	running := []State{StateRunning}

	page1, token, err := s.List(ctx, ListOptions{State: running, Top: 2})
	if err != nil || len(page1) != 2 || token == "" {
		t.Fatalf("page 1: %d %q %v", len(page1), token, err)
	}
	tok, err := ParseContinuationToken(token)
	if err != nil {
		t.Fatal(err)
	}
	if tok.String() != token || tok.NextPartitionKey == "" && tok.NextRowKey == "" {
		t.Fatalf("round trip %+v → %q, want %q", tok, tok.String(), token)
	}
	if strings.ContainsAny(token, "+/=") {
		t.Fatalf("token %q is not URL safe", token)
	}
	// The same token twice gives the same page.
	a, _, err1 := s.List(ctx, ListOptions{State: running, Top: 2, ContinuationToken: token})
	b, _, err2 := s.List(ctx, ListOptions{State: running, Top: 2, ContinuationToken: tok.String()})
	if err1 != nil || err2 != nil || len(a) != 2 || a[0].ID != b[0].ID || a[0].ID == page1[1].ID {
		t.Fatalf("page 2: %v %v", err1, err2)
	}
	bad := []struct {
		name string
		opts ListOptions
	}{
		{"another filter", ListOptions{State: []State{StateQueued}, ContinuationToken: token}},
		{"no filter", ListOptions{ContinuationToken: token}},
		{"garbage", ListOptions{State: running, ContinuationToken: "!!!"}},
		{"tampered fingerprint", ListOptions{State: running, ContinuationToken: ContinuationToken{NextPartitionKey: tok.NextPartitionKey, NextRowKey: tok.NextRowKey, Query: strings.Repeat("0", 16)}.String()}},
	}
	for _, tt := range bad {
		if _, _, err := s.List(ctx, tt.opts); !errors.Is(err, ErrInvalidContinuationToken) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	if _, _, err := s.List(ctx, ListOptions{State: []State{"Paused"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown state: %v", err)
	}
}

func TestListTopBounds(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	seed(t, s, map[State]int{StateRunning: DefaultListTop + 1})
	page, next, err := s.List(ctx, ListOptions{})
	if err != nil || len(page) != DefaultListTop || next == "" {
		t.Fatalf("default top: %d %q %v", len(page), next, err)
	}
	page, next, err = s.List(ctx, ListOptions{Top: 5000})
	if err != nil || len(page) != DefaultListTop+1 || next != "" {
		t.Fatalf("top above max: %d %q %v", len(page), next, err)
	}
}

func TestListActiveAndAll(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, Options{})
	ids := seed(t, s, map[State]int{
		StateSubmitted: 40, StateRunning: 70, StatePostponed: 1, StateStaged: 3, StateFailed: 2, StateCompleted: 2,
	})
	var active []string
	for j, err := range s.ListActive(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if !j.State.Active() {
			t.Fatalf("inactive job %s (%s)", j.ID, j.State)
		}
		active = append(active, j.ID)
	}
	want := slices.Concat(ids[StateSubmitted], ids[StatePostponed], ids[StateRunning])
	if !slices.Equal(active, want) {
		t.Fatalf("ListActive: %d jobs, want %d", len(active), len(want))
	}
	n := 0
	for _, err := range s.All(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 5 {
			break // stopping early is fine
		}
	}
	for _, err := range s.All(ctx, "Paused") {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("All with unknown state: %v", err)
		}
	}
}

func TestListFilter(t *testing.T) {
	tests := []struct {
		states []State
		want   string
	}{
		{nil, "PartitionKey eq 'job' and RowKey ge 'job|' and RowKey lt 'job}'"},
		{ActiveStates(), "PartitionKey eq 'job' and ((RowKey ge 'state|03|' and RowKey lt 'state|07|'))"},
		{[]State{StateRunning, StateAwaitingPackage, StateQueued, StateRunning},
			"PartitionKey eq 'job' and ((RowKey ge 'state|00|' and RowKey lt 'state|01|') or (RowKey ge 'state|04|' and RowKey lt 'state|05|') or (RowKey ge 'state|06|' and RowKey lt 'state|07|'))"},
	}
	for _, tt := range tests {
		got, err := listFilter(tt.states)
		if err != nil || got != tt.want {
			t.Errorf("listFilter(%v) =\n %s\nwant\n %s (%v)", tt.states, got, tt.want, err)
		}
	}
	// The worst case (every other state) stays within the service's 15 comparisons.
	var alternate []State
	for i, st := range States() {
		if i%2 == 0 {
			alternate = append(alternate, st)
		}
	}
	f, _ := listFilter(alternate)
	if n := strings.Count(f, " eq ") + strings.Count(f, " ge ") + strings.Count(f, " lt "); n > 15 {
		t.Fatalf("%d comparisons: %s", n, f)
	}
}

func TestParseContinuationTokenRejects(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	q := strings.Repeat("a", 16)
	tests := []struct{ name, token string }{
		{"empty", ""},
		{"not base64", "***"},
		{"padded base64", base64.URLEncoding.EncodeToString([]byte(`{"v":1,"pk":"ab","q":"` + q + `"}`))}, // ends in "=="
		{"not JSON", enc("hello")},
		{"array", enc(`[1]`)},
		{"unknown field", enc(`{"v":1,"pk":"a","q":"` + q + `","x":1}`)},
		{"trailing data", enc(`{"v":1,"pk":"a","q":"` + q + `"}{}`)},
		{"version 2", enc(`{"v":2,"pk":"a","q":"` + q + `"}`)},
		{"no fingerprint", enc(`{"v":1,"pk":"a"}`)},
		{"bad fingerprint", enc(`{"v":1,"pk":"a","q":"XYZ"}`)},
		{"no continuation", enc(`{"v":1,"q":"` + q + `"}`)},
		{"control char", enc(`{"v":1,"pk":"a\r\nX-Evil: 1","q":"` + q + `"}`)},
		{"non-ASCII", enc(`{"v":1,"rk":"é","q":"` + q + `"}`)},
		{"key too long", enc(`{"v":1,"rk":"` + strings.Repeat("k", maxTokenKeyBytes+1) + `","q":"` + q + `"}`)},
		{"too long", strings.Repeat("A", maxTokenTextBytes+1)},
	}
	for _, tt := range tests {
		if tok, err := ParseContinuationToken(tt.token); !errors.Is(err, ErrInvalidContinuationToken) {
			t.Errorf("%s: %+v %v", tt.name, tok, err)
		}
	}
	ok := ContinuationToken{NextPartitionKey: "1!8!am9i", NextRowKey: "1!20!c3RhdGV8MDR8", Query: q}
	if got, err := ParseContinuationToken(ok.String()); err != nil || got != ok {
		t.Fatalf("valid token: %+v %v", got, err)
	}
}

func FuzzParseContinuationToken(f *testing.F) {
	q := strings.Repeat("0", 16)
	f.Add(ContinuationToken{NextPartitionKey: "1!8!am9i", NextRowKey: "1!20!c3RhdGV8MDR8", Query: q}.String())
	f.Add(ContinuationToken{NextRowKey: "state|06|x", Query: q}.String())
	f.Add("")
	f.Add("e30")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"pk":"\u0000","q":"` + q + `"}`)))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseContinuationToken(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidContinuationToken) {
				t.Fatalf("error %v does not wrap ErrInvalidContinuationToken", err)
			}
			if strings.Contains(err.Error(), s) && len(s) > 8 {
				t.Fatalf("error echoes the token: %v", err)
			}
			return
		}
		for _, k := range []string{tok.NextPartitionKey, tok.NextRowKey} {
			if len(k) > maxTokenKeyBytes || !printableASCII(k) {
				t.Fatalf("accepted key %q", k)
			}
		}
		if tok.NextPartitionKey == "" && tok.NextRowKey == "" || !queryRE.MatchString(tok.Query) {
			t.Fatalf("accepted %+v", tok)
		}
		again, err := ParseContinuationToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("round trip of %+v: %+v %v", tok, again, err)
		}
	})
}
