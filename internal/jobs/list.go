package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"regexp"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Paging bounds of List.
const (
	// DefaultListTop is the page size of List when ListOptions.Top is 0.
	DefaultListTop = 50
	// MaxListTop is the largest page size (the service's own limit per request). A page holds Top
	// records in memory: typically a few KiB each, about 100 KB each at the caps (see MaxHistory).
	MaxListTop = 1000
	// iterPageSize is the page size of All and ListActive (at most this many records in memory).
	iterPageSize = 100
)

// ErrInvalidContinuationToken reports a continuation token that is malformed or belongs to another query.
var ErrInvalidContinuationToken = errors.New("invalid continuation token")

// ListOptions selects a page of List.
type ListOptions struct {
	// State keeps the jobs in these states; empty keeps all jobs.
	State []State
	// Top is the page size: default DefaultListTop (50), values above MaxListTop (1000) are lowered to it.
	// Memory: Top records (see MaxListTop).
	Top int
	// ContinuationToken is the next token of the previous page of the same query; empty for the first page.
	ContinuationToken string
}

// List returns a page of job records and the token of the next page ("" after the last page).
//
// Without a state filter the jobs come in job id order; with one, grouped by state in pipeline order,
// then by job id. A page is short only when it is the last one; a page may be empty if the jobs after
// the previous one changed state meanwhile. Paging is not a snapshot: a job that changes state between
// two pages may be missed or seen twice.
func (s *Store) List(ctx context.Context, opts ListOptions) ([]Job, string, error) {
	top := opts.Top
	switch {
	case top <= 0:
		top = DefaultListTop
	case top > MaxListTop:
		top = MaxListTop
	}
	filter, err := listFilter(opts.State)
	if err != nil {
		return nil, "", err
	}
	query := queryFingerprint(filter)
	var pk, rk *string
	if opts.ContinuationToken != "" {
		tok, err := ParseContinuationToken(opts.ContinuationToken)
		if err != nil {
			return nil, "", err
		}
		if tok.Query != query {
			return nil, "", fmt.Errorf("%w: it continues another query", ErrInvalidContinuationToken)
		}
		pk, rk = &tok.NextPartitionKey, &tok.NextRowKey
	}
	page := make([]Job, 0, min(top, iterPageSize))
	for len(page) < top {
		n := int32(top - len(page))
		pager := s.table.NewListEntitiesPager(&aztables.ListEntitiesOptions{
			Filter: &filter, Top: &n, NextPartitionKey: pk, NextRowKey: rk,
		})
		resp, err := pager.NextPage(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("list jobs: %w", err)
		}
		for _, e := range resp.Entities {
			j, err := decodeJob(e)
			if err != nil {
				return nil, "", fmt.Errorf("list jobs: %w", err)
			}
			page = append(page, *j)
		}
		pk, rk = resp.NextPartitionKey, resp.NextRowKey
		if deref(pk) == "" && deref(rk) == "" {
			return page, "", nil
		}
	}
	next := ContinuationToken{NextPartitionKey: deref(pk), NextRowKey: deref(rk), Query: query}
	return page, next.String(), nil
}

// All iterates over the jobs in the given states (all jobs when none), reading pages of 100. The
// iteration stops after yielding an error.
func (s *Store) All(ctx context.Context, states ...State) iter.Seq2[*Job, error] {
	return func(yield func(*Job, error) bool) {
		token := ""
		for {
			page, next, err := s.List(ctx, ListOptions{State: states, Top: iterPageSize, ContinuationToken: token})
			if err != nil {
				yield(nil, err)
				return
			}
			for i := range page {
				if !yield(&page[i], nil) {
					return
				}
			}
			if next == "" {
				return
			}
			token = next
		}
	}
}

// ListActive iterates over the jobs the monitor watches: submitted to SPO and not ended
// (ActiveStates). Their state index rows are adjacent, so this is one range query per page.
func (s *Store) ListActive(ctx context.Context) iter.Seq2[*Job, error] {
	return s.All(ctx, ActiveStates()...)
}

// listFilter is the OData filter of a List query: the record rows when no state is given, else the
// state index rows of the states, as ranges of adjacent ordinals (at most 6 ranges, 13 comparisons,
// within the service's limit of 15).
func listFilter(states []State) (string, error) {
	base := "PartitionKey eq '" + partitionKey + "'"
	if len(states) == 0 {
		return base + " and RowKey ge '" + mainPrefix + "' and RowKey lt 'job}'", nil
	}
	ords := make([]int, 0, len(states))
	for _, st := range states {
		o, ok := stateInfo[st]
		if !ok {
			return "", fmt.Errorf("list jobs: %w: unknown state %q", ErrInvalid, truncate(string(st), 32))
		}
		ords = append(ords, o)
	}
	slices.Sort(ords)
	ords = slices.Compact(ords)
	var ranges []string
	for i := 0; i < len(ords); {
		lo, hi := ords[i], ords[i]
		for i++; i < len(ords) && ords[i] == hi+1; i++ {
			hi = ords[i]
		}
		ranges = append(ranges, fmt.Sprintf("(RowKey ge '%s%02d|' and RowKey lt '%s%02d|')", statePrefix, lo, statePrefix, hi+1))
	}
	return base + " and (" + strings.Join(ranges, " or ") + ")", nil
}

func queryFingerprint(filter string) string {
	sum := sha256.Sum256([]byte(filter))
	return hex.EncodeToString(sum[:8])
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// ---- continuation tokens ----

// ContinuationToken is the decoded form of List's opaque next token: the table's continuation
// (x-ms-continuation-NextPartitionKey and -NextRowKey) and a fingerprint of the query it continues,
// so that a token cannot be replayed against another filter. Its text form is unpadded base64url of a
// small JSON object, safe in a URL query.
type ContinuationToken struct {
	NextPartitionKey string
	NextRowKey       string
	Query            string
}

// Bounds of a continuation token.
const (
	maxTokenTextBytes = 4096
	maxTokenKeyBytes  = 1024
)

type tokenJSON struct {
	V  int    `json:"v"`
	PK string `json:"pk,omitempty"`
	RK string `json:"rk,omitempty"`
	Q  string `json:"q"`
}

var queryRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// String is the opaque text form of t.
func (t ContinuationToken) String() string {
	b, _ := json.Marshal(tokenJSON{V: 1, PK: t.NextPartitionKey, RK: t.NextRowKey, Q: t.Query})
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseContinuationToken decodes a token made by List. It refuses, with ErrInvalidContinuationToken,
// anything else: bad base64 or JSON, unknown fields or version, keys that are not printable ASCII or
// too long, a missing query fingerprint.
func ParseContinuationToken(s string) (ContinuationToken, error) {
	bad := func(why string) (ContinuationToken, error) {
		return ContinuationToken{}, fmt.Errorf("%w: %s", ErrInvalidContinuationToken, why)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > maxTokenTextBytes {
		return bad("too long")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return bad("not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var tj tokenJSON
	if err := dec.Decode(&tj); err != nil {
		return bad("not a token object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("trailing data")
	}
	if tj.V != 1 {
		return bad("unknown version")
	}
	if !queryRE.MatchString(tj.Q) {
		return bad("no query fingerprint")
	}
	if tj.PK == "" && tj.RK == "" {
		return bad("no continuation")
	}
	for _, k := range []string{tj.PK, tj.RK} {
		if len(k) > maxTokenKeyBytes || !printableASCII(k) {
			return bad("malformed continuation")
		}
	}
	return ContinuationToken{NextPartitionKey: tj.PK, NextRowKey: tj.RK, Query: tj.Q}, nil
}
