package intake

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spomig/spomig/internal/jobs"
	"github.com/spomig/spomig/internal/provision"
)

func TestTargetFromMetadata(t *testing.T) {
	const web = "8f1c2b4e-52e3-4c52-9a5e-2f8c0f3f1a77"
	cases := []struct {
		name string
		md   map[string]string
		want DropTarget
		ok   bool
		bad  string // error text, when the target is unusable
	}{
		{name: "none", md: map[string]string{"other": "x"}},
		{name: "nil", md: nil},
		{name: "site only", md: map[string]string{"siteurl": "https://contoso.sharepoint.com/sites/HR"}, ok: true,
			want: DropTarget{SiteURL: "https://contoso.sharepoint.com/sites/HR", From: "metadata"}},
		{name: "Go canonical keys", md: map[string]string{"Siteurl": "https://Contoso.SharePoint.com/sites/HR/", "Webid": strings.ToUpper(web), "Label": "HR%20files"}, ok: true,
			want: DropTarget{SiteURL: "https://contoso.sharepoint.com/sites/HR", WebID: web, Label: "HR files", From: "metadata"}},
		{name: "braced web id", md: map[string]string{"SITEURL": "https://contoso.sharepoint.com", "WEBID": "{" + web + "}"}, ok: true,
			want: DropTarget{SiteURL: "https://contoso.sharepoint.com", WebID: web, From: "metadata"}},
		{name: "label not percent-encoded", md: map[string]string{"siteurl": "https://c.sharepoint.com/sites/x", "label": "100% done"}, ok: true,
			want: DropTarget{SiteURL: "https://c.sharepoint.com/sites/x", Label: "100% done", From: "metadata"}},
		{name: "empty site", md: map[string]string{"siteurl": " "}, ok: true, bad: "empty"},
		{name: "http", md: map[string]string{"siteurl": "http://contoso.sharepoint.com/sites/x"}, ok: true, bad: "https"},
		{name: "relative", md: map[string]string{"siteurl": "/sites/x"}, ok: true, bad: "https"},
		{name: "user info", md: map[string]string{"siteurl": "https://u:p@contoso.sharepoint.com/sites/x"}, ok: true, bad: "user"},
		{name: "query", md: map[string]string{"siteurl": "https://contoso.sharepoint.com/sites/x?sig=abc"}, ok: true, bad: "query"},
		{name: "api path", md: map[string]string{"siteurl": "https://contoso.sharepoint.com/sites/x/_api/web"}, ok: true, bad: "API"},
		{name: "bad web id", md: map[string]string{"siteurl": "https://contoso.sharepoint.com", "webid": "1234"}, ok: true, bad: "webId"},
		{name: "control in label", md: map[string]string{"siteurl": "https://contoso.sharepoint.com", "label": "a%0Ab"}, ok: true, bad: "label"},
		{name: "long label", md: map[string]string{"siteurl": "https://contoso.sharepoint.com", "label": strings.Repeat("x", 1025)}, ok: true, bad: "label"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := TargetFromMetadata(c.md)
			if ok != c.ok {
				t.Fatalf("ok %v, want %v", ok, c.ok)
			}
			if c.bad != "" {
				if !errors.Is(err, ErrBadTarget) || !strings.Contains(err.Error(), c.bad) {
					t.Fatalf("err %v, want ErrBadTarget about %q", err, c.bad)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestParseDropConfig(t *testing.T) {
	cases := []struct {
		name, doc string
		want      DropTarget
		bad       string
	}{
		{name: "full", doc: `{"siteUrl":"https://contoso.sharepoint.com/sites/x","webId":"8F1C2B4E52E34C529A5E2F8C0F3F1A77","label":"Ärchiv"}`,
			want: DropTarget{SiteURL: "https://contoso.sharepoint.com/sites/x", WebID: "8f1c2b4e-52e3-4c52-9a5e-2f8c0f3f1a77", Label: "Ärchiv", From: DropConfigName}},
		{name: "key case and BOM", doc: "\xef\xbb\xbf" + `{"SiteURL": "https://contoso.sharepoint.com/sites/x", "extra": [1, 2]}`,
			want: DropTarget{SiteURL: "https://contoso.sharepoint.com/sites/x", From: DropConfigName}},
		{name: "null label", doc: `{"siteUrl":"https://contoso.sharepoint.com","label":null}`,
			want: DropTarget{SiteURL: "https://contoso.sharepoint.com", From: DropConfigName}},
		{name: "empty", doc: ``, bad: "not a JSON object"},
		{name: "array", doc: `[]`, bad: "not a JSON object"},
		{name: "syntax", doc: `{"siteUrl": }`, bad: "syntax error"},
		{name: "number", doc: `{"siteUrl": 1}`, bad: "siteUrl must be a string"},
		{name: "no site", doc: `{"webId":"x"}`, bad: "no siteUrl"},
		{name: "trailing", doc: `{"siteUrl":"https://contoso.sharepoint.com"} {}`, bad: "after its JSON object"},
		{name: "too large", doc: `{"siteUrl":"https://contoso.sharepoint.com","label":"` + strings.Repeat("x", MaxDropConfigSize) + `"}`, bad: "larger than"},
		{name: "http", doc: `{"siteUrl":"http://contoso.sharepoint.com"}`, bad: "https"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseDropConfig(strings.NewReader(c.doc))
			if c.bad != "" {
				if !errors.Is(err, ErrBadTarget) || !strings.Contains(err.Error(), c.bad) {
					t.Fatalf("err %v, want ErrBadTarget about %q", err, c.bad)
				}
				if strings.Contains(err.Error(), "contoso") {
					t.Errorf("error quotes the document: %v", err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestDropJobID(t *testing.T) {
	a := DropJobID("migration-staging", "a.zip", `"0x8DC7B2F3A1B2C3D"`)
	if a != DropJobID("migration-staging", "a.zip", "0x8DC7B2F3A1B2C3D") {
		t.Error("the ETag's quotes change the id")
	}
	if a != provision.DropJobID("migration-staging", "a.zip", "0x8DC7B2F3A1B2C3D") {
		t.Error("not provision's DropJobID of the unquoted ETag")
	}
	if !provision.IsGUID(a) || !jobs.ValidID(a) {
		t.Errorf("%q is not a GUID job id", a)
	}
	for _, other := range []string{
		DropJobID("migration-staging", "a.zip", `"0x8DC7B2F3A1B2C3E"`),
		DropJobID("migration-staging", "b.zip", `"0x8DC7B2F3A1B2C3D"`),
		DropJobID("other", "a.zip", `"0x8DC7B2F3A1B2C3D"`),
	} {
		if other == a {
			t.Error("different blobs share a drop id")
		}
	}
}

// FuzzDropTarget feeds the target parsers (spomig.json and blob metadata) arbitrary input: they never
// panic, and whatever they accept is a target the job record and provisioning can hold.
func FuzzDropTarget(f *testing.F) {
	f.Add([]byte(`{"siteUrl":"https://contoso.sharepoint.com/sites/x","webId":"8f1c2b4e-52e3-4c52-9a5e-2f8c0f3f1a77","label":"x"}`),
		"https://contoso.sharepoint.com/sites/x", "{8F1C2B4E-52E3-4C52-9A5E-2F8C0F3F1A77}", "HR%20files")
	f.Add([]byte("\xef\xbb\xbf{\"SITEURL\":\"https://a.b/c/\"}"), "https://u@h/", "", "%ZZ")
	f.Add([]byte(`{"siteUrl":"https://[::1]:443/sites/x#f"}`), "https://h/sites/x?sig=1", "0", "\x00")
	f.Add([]byte(`{"siteUrl":null}`), "HTTPS://H/%2e%2e/_API", "8f1c2b4e52e34c529a5e2f8c0f3f1a77", "")
	f.Fuzz(func(t *testing.T, doc []byte, site, web, label string) {
		check := func(tg DropTarget) {
			t.Helper()
			u, err := url.Parse(tg.SiteURL)
			if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
				strings.ContainsAny(tg.SiteURL, "?#") || len(tg.SiteURL) > maxSiteURLBytes {
				t.Fatalf("accepted site URL %q", tg.SiteURL)
			}
			if strings.HasSuffix(tg.SiteURL, "/") || strings.Contains(strings.ToLower(u.Path), "/_api") {
				t.Fatalf("site URL %q not normalized", tg.SiteURL)
			}
			if tg.WebID != "" && !provision.IsGUID(tg.WebID) || tg.WebID != strings.ToLower(tg.WebID) {
				t.Fatalf("accepted web id %q", tg.WebID)
			}
			if !utf8.ValidString(tg.Label) || hasControl(tg.Label) || len(tg.Label) > maxLabelBytes {
				t.Fatalf("accepted label %q", tg.Label)
			}
		}
		if tg, err := ParseDropConfig(bytes.NewReader(doc)); err == nil {
			check(tg)
			if tg.From != DropConfigName {
				t.Fatalf("From %q", tg.From)
			}
		} else if !errors.Is(err, ErrBadTarget) {
			t.Fatalf("error %v is not ErrBadTarget", err)
		}
		md := map[string]string{"SiteUrl": site, "webid": web, "LABEL": label}
		tg, ok, err := TargetFromMetadata(md)
		if !ok {
			t.Fatal("siteurl present but not seen")
		}
		if err == nil {
			check(tg)
		} else if !errors.Is(err, ErrBadTarget) {
			t.Fatalf("error %v is not ErrBadTarget", err)
		}
	})
}
