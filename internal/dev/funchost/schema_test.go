package funchost

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

// The SchemaStore schemas (shared/schemas) are the vocabulary of host.json and function.json. These tests check
// that every member the test apps use — the members funchost reads — is a property the schemas define, so that
// the host reads the names the tooling knows. (Per the schemas' README, function.json bindings are checked
// against bindingBase plus the definition of their own type, not against the ambiguous oneOf.)

const schemaDir = "../../../../shared/schemas"

type schemaDoc struct {
	root map[string]any
}

func loadSchema(t *testing.T, name string) *schemaDoc {
	t.Helper()
	b, err := os.ReadFile(schemaDir + "/" + name)
	if err != nil {
		t.Skipf("schemas not available: %v", err)
	}
	var m map[string]any
	must(t, json.Unmarshal(b, &m))
	return &schemaDoc{root: m}
}

func (d *schemaDoc) resolve(ref string) map[string]any {
	var cur any = d.root
	for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, _ := cur.(map[string]any)
		cur = m[p]
	}
	m, _ := cur.(map[string]any)
	return m
}

// properties collects the property schemas a (sub)schema allows, through $ref and the combinators; open is true
// when it constrains no property names.
func (d *schemaDoc) properties(s map[string]any, depth int) (props map[string]map[string]any, open bool) {
	props = map[string]map[string]any{}
	if s == nil || depth > 20 {
		return props, true
	}
	if ref, ok := s["$ref"].(string); ok {
		return d.properties(d.resolve(ref), depth+1)
	}
	constrained := false
	if p, ok := s["properties"].(map[string]any); ok {
		constrained = true
		for k, v := range p {
			vm, _ := v.(map[string]any)
			props[k] = vm
		}
	}
	for _, comb := range []string{"allOf", "anyOf", "oneOf"} {
		arr, _ := s[comb].([]any)
		for _, e := range arr {
			em, _ := e.(map[string]any)
			sub, subOpen := d.properties(em, depth+1)
			if !subOpen {
				constrained = true
			}
			for k, v := range sub {
				props[k] = v
			}
		}
	}
	for _, k := range []string{"then", "else"} {
		if em, ok := s[k].(map[string]any); ok {
			sub, _ := d.properties(em, depth+1)
			for k, v := range sub {
				props[k] = v
			}
		}
	}
	return props, !constrained
}

// checkMembers reports members of v that the schema s does not define (recursively into objects).
func (d *schemaDoc) checkMembers(path string, v any, s map[string]any, out *[]string) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	props, open := d.properties(s, 0)
	if open {
		return
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ps, ok := props[k]
		if !ok {
			*out = append(*out, path+"."+k)
			continue
		}
		d.checkMembers(path+"."+k, obj[k], ps, out)
	}
}

func TestHostJSONMatchesSchema(t *testing.T) {
	d := loadSchema(t, "azure-functions-host.schema.json")
	v2 := d.resolve("#/definitions/version-2")
	for _, forwarding := range []bool{true, false} {
		var host any
		must(t, json.Unmarshal([]byte(fmt.Sprintf(baseHostJSON, fmt.Sprint(forwarding))), &host))
		var unknown []string
		d.checkMembers("host.json", host, v2, &unknown)
		if len(unknown) > 0 {
			t.Errorf("members not in the host.json schema: %v", unknown)
		}
	}
}

func TestFunctionJSONMatchesSchema(t *testing.T) {
	d := loadSchema(t, "azure-functions-function.schema.json")
	defs := map[string]string{
		"queuetrigger": "queueBinding", "queue": "queueBinding", "blobtrigger": "blobBinding", "blob": "blobBinding",
		"timertrigger": "timerTriggerBinding", "httptrigger": "httpBinding", "http": "httpBinding", // httpTrigger is {} in the schema
	}
	apps := map[string]string{
		"queueFn": queueFnJSON, "queueFailFn": queueFailFnJSON, "queueBinFn": queueBinFnJSON,
		"blobFn": blobFnJSON, "blobTextFn": blobTextFnJSON, "blobFailFn": blobFailFnJSON,
		"fwdFn": fwdFnJSON, "keyFn": keyFnJSON, "adminFn": adminFnJSON, "envFn": envFnJSON,
		"timer": `{"bindings":[{"type":"timerTrigger","direction":"in","name":"t","schedule":"0 0 0 1 1 *","runOnStartup":true,"useMonitor":false}]}`,
	}
	base, _ := d.properties(d.resolve("#/definitions/bindingBase"), 0)
	for name, fj := range apps {
		var f struct{ Bindings []map[string]any }
		must(t, json.Unmarshal([]byte(fj), &f))
		for _, b := range f.Bindings {
			typ, _ := b["type"].(string)
			def, ok := defs[strings.ToLower(typ)]
			if !ok {
				t.Errorf("%s: binding type %q has no schema definition", name, typ)
				continue
			}
			props, _ := d.properties(d.resolve("#/definitions/"+def), 0)
			for k := range b {
				if _, ok := props[k]; !ok {
					if _, ok := base[k]; !ok {
						t.Errorf("%s: binding %s: member %q is not in bindingBase or %s", name, b["name"], k, def)
					}
				}
			}
		}
	}
}
