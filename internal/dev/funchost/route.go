package funchost

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// routeTemplate is an ASP.NET Core route template as used in function.json "route": literal segments (matched
// ignoring case), {param}, {param:constraint(args)} (int, long, bool, guid, alpha, double, decimal, float, min,
// max, range, minlength, maxlength, length and regex are checked; other constraints are accepted), {param?},
// {param=default}, complex segments such as {name}.{ext}, and a final {*catchall} or {**catchall}.
type routeTemplate struct {
	text     string
	segments []routeSegment
}

type routeSegment struct {
	literal  string // whole-segment literal (when params is empty)
	re       *regexp.Regexp
	params   []routeParam
	catchAll bool
	optional bool // a single optional parameter segment
}

type routeParam struct {
	name        string
	constraints []string
	def         *string
}

var paramRE = regexp.MustCompile(`\{([^{}]*)\}`)

func parseRouteTemplate(t string) (*routeTemplate, error) {
	t = strings.Trim(strings.TrimSpace(t), "/")
	rt := &routeTemplate{text: t}
	if t == "" {
		return rt, nil
	}
	parts := strings.Split(t, "/")
	for i, seg := range parts {
		if seg == "" {
			return nil, fmt.Errorf("route %q: empty segment", t)
		}
		if strings.ContainsAny(seg, "?") && !paramRE.MatchString(seg) {
			return nil, fmt.Errorf("route %q: '?' outside a parameter", t)
		}
		locs := paramRE.FindAllStringSubmatchIndex(seg, -1)
		if len(locs) == 0 {
			if strings.ContainsAny(seg, "{}") {
				return nil, fmt.Errorf("route %q: unbalanced braces in %q", t, seg)
			}
			rt.segments = append(rt.segments, routeSegment{literal: seg})
			continue
		}
		rs := routeSegment{}
		var pattern strings.Builder
		pattern.WriteString("(?is)^")
		last := 0
		for _, l := range locs {
			lit := seg[last:l[0]]
			if strings.ContainsAny(lit, "{}") {
				return nil, fmt.Errorf("route %q: unbalanced braces in %q", t, seg)
			}
			pattern.WriteString(regexp.QuoteMeta(lit))
			p, err := parseRouteParam(seg[l[2]:l[3]])
			if err != nil {
				return nil, fmt.Errorf("route %q: %w", t, err)
			}
			if strings.HasPrefix(p.name, "*") {
				p.name = strings.TrimLeft(p.name, "*")
				if i != len(parts)-1 || len(locs) != 1 || l[0] != 0 || l[1] != len(seg) {
					return nil, fmt.Errorf("route %q: a catch-all parameter must be the whole last segment", t)
				}
				rs.catchAll = true
			}
			if !identRE.MatchString(p.name) {
				return nil, fmt.Errorf("route %q: invalid parameter name %q", t, p.name)
			}
			if strings.HasSuffix(seg[l[2]:l[3]], "?") || p.def != nil {
				if len(locs) != 1 || l[0] != 0 || l[1] != len(seg) {
					return nil, fmt.Errorf("route %q: an optional parameter must be a whole segment", t)
				}
				rs.optional = true
			}
			pattern.WriteString("(.+)")
			rs.params = append(rs.params, p)
			last = l[1]
		}
		tail := seg[last:]
		if strings.ContainsAny(tail, "{}") {
			return nil, fmt.Errorf("route %q: unbalanced braces in %q", t, seg)
		}
		pattern.WriteString(regexp.QuoteMeta(tail) + "$")
		re, err := regexp.Compile(pattern.String())
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", t, err)
		}
		rs.re = re
		rt.segments = append(rt.segments, rs)
	}
	// Only trailing segments may be optional.
	seenOptional := false
	for _, s := range rt.segments {
		if s.optional || s.catchAll {
			seenOptional = true
		} else if seenOptional {
			return nil, fmt.Errorf("route %q: an optional parameter must be at the end", t)
		}
	}
	return rt, nil
}

func parseRouteParam(s string) (routeParam, error) {
	p := routeParam{}
	s = strings.TrimSuffix(s, "?")
	if name, def, ok := strings.Cut(s, "="); ok {
		s = name
		p.def = &def
	}
	name, cons, _ := strings.Cut(s, ":")
	p.name = strings.TrimSpace(name)
	if p.name == "" || p.name == "*" || p.name == "**" {
		return p, errors.New("empty parameter name")
	}
	if cons != "" {
		// Constraints are separated by ':' outside parentheses (regex(...) may contain ':').
		depth, start := 0, 0
		for i, c := range cons {
			switch c {
			case '(':
				depth++
			case ')':
				depth--
			case ':':
				if depth == 0 {
					p.constraints = append(p.constraints, cons[start:i])
					start = i + 1
				}
			}
		}
		p.constraints = append(p.constraints, cons[start:])
	}
	return p, nil
}

// precedence orders templates like ASP.NET routing: per segment, literals before constrained parameters before
// parameters before optional ones before catch-alls.
func (rt *routeTemplate) precedence() []int {
	out := make([]int, len(rt.segments))
	for i, s := range rt.segments {
		switch {
		case s.re == nil:
			out[i] = 1
		case s.catchAll:
			out[i] = 5
		case s.optional:
			out[i] = 4
		case len(s.params) > 1 || s.re.String() != "(?is)^(.+)$" || len(s.params[0].constraints) > 0:
			out[i] = 2 // complex segment or constrained parameter
		default:
			out[i] = 3
		}
	}
	return out
}

// match matches an escaped request path (without the route prefix) and returns the route values.
func (rt *routeTemplate) match(escapedPath string) (map[string]string, bool) {
	escapedPath = strings.Trim(escapedPath, "/")
	var segs []string
	if escapedPath != "" {
		segs = strings.Split(escapedPath, "/")
	}
	values := map[string]string{}
	for i, s := range rt.segments {
		if s.catchAll {
			rest := segs[min(i, len(segs)):]
			dec := make([]string, len(rest))
			for j, r := range rest {
				d, err := url.PathUnescape(r)
				if err != nil {
					return nil, false
				}
				dec[j] = d
			}
			v := strings.Join(dec, "/")
			if v == "" && s.params[0].def != nil {
				v = *s.params[0].def
			}
			if v != "" && !checkConstraints(s.params[0].constraints, v) {
				return nil, false
			}
			if v != "" {
				values[s.params[0].name] = v
			}
			return values, true
		}
		if i >= len(segs) {
			if !s.optional {
				return nil, false
			}
			if s.params[0].def != nil {
				values[s.params[0].name] = *s.params[0].def
			}
			continue
		}
		seg, err := url.PathUnescape(segs[i])
		if err != nil || seg == "" {
			return nil, false
		}
		if s.re == nil {
			if !strings.EqualFold(seg, s.literal) {
				return nil, false
			}
			continue
		}
		m := s.re.FindStringSubmatch(seg)
		if m == nil {
			return nil, false
		}
		for j, p := range s.params {
			if !checkConstraints(p.constraints, m[j+1]) {
				return nil, false
			}
			values[p.name] = m[j+1]
		}
	}
	if len(segs) > len(rt.segments) {
		return nil, false
	}
	return values, true
}

var guidRE = regexp.MustCompile(`(?i)^[{(]?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}[)}]?$`)

func checkConstraints(cons []string, v string) bool {
	for _, c := range cons {
		name, args, _ := strings.Cut(c, "(")
		args = strings.TrimSuffix(args, ")")
		argN := func(i int) (float64, bool) {
			parts := strings.Split(args, ",")
			if i >= len(parts) {
				return 0, false
			}
			f, err := strconv.ParseFloat(strings.TrimSpace(parts[i]), 64)
			return f, err == nil
		}
		num := func() (float64, bool) {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil && !math.IsNaN(f)
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "int":
			if _, err := strconv.ParseInt(v, 10, 32); err != nil {
				return false
			}
		case "long":
			if _, err := strconv.ParseInt(v, 10, 64); err != nil {
				return false
			}
		case "bool":
			if !strings.EqualFold(v, "true") && !strings.EqualFold(v, "false") {
				return false
			}
		case "guid":
			if !guidRE.MatchString(v) {
				return false
			}
		case "alpha":
			for _, r := range v {
				if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
					return false
				}
			}
		case "double", "decimal", "float":
			if _, ok := num(); !ok {
				return false
			}
		case "min", "max", "range":
			n, ok := num()
			if !ok {
				return false
			}
			a, okA := argN(0)
			b, okB := argN(1)
			lname := strings.ToLower(strings.TrimSpace(name))
			if (lname == "min" && okA && n < a) || (lname == "max" && okA && n > a) ||
				(lname == "range" && okA && okB && (n < a || n > b)) {
				return false
			}
		case "minlength", "maxlength", "length":
			l := float64(len([]rune(v)))
			a, okA := argN(0)
			b, okB := argN(1)
			lname := strings.ToLower(strings.TrimSpace(name))
			if (lname == "minlength" && okA && l < a) || (lname == "maxlength" && okA && l > a) ||
				(lname == "length" && okA && !okB && l != a) || (lname == "length" && okA && okB && (l < a || l > b)) {
				return false
			}
		case "regex":
			re, err := regexp.Compile("(?i)" + args)
			if err == nil && !re.MatchString(v) {
				return false
			}
		}
	}
	return true
}
