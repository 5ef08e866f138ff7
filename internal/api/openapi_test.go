package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/spomig/spomig/internal/api"
)

type compiledSchema struct{ s *jsonschema.Schema }

func (c *compiledSchema) validate(body []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return c.s.Validate(v)
}

// toSchemaValue turns a Go value into what jsonschema expects (json.Number numbers).
func toSchemaValue(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(raw))
}

// compileSchema compiles a Swagger 2.0 schema object (a subset of JSON Schema draft 4) whose $refs point
// into definitions.
func compileSchema(definitions, schema any) (*compiledSchema, error) {
	root := map[string]any{"definitions": definitions}
	for k, v := range schema.(map[string]any) {
		root[k] = v
	}
	doc, err := toSchemaValue(root)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	if err := c.AddResource("mem:///response.json", doc); err != nil {
		return nil, err
	}
	s, err := c.Compile("mem:///response.json")
	if err != nil {
		return nil, err
	}
	return &compiledSchema{s: s}, nil
}

// swaggerSchema compiles the official Swagger 2.0 JSON schema (testdata/swagger-2.0.schema.json, the copy
// go-openapi/spec embeds, from https://github.com/OAI/OpenAPI-Specification/tree/main/schemas/v2.0).
func swaggerSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("testdata/swagger-2.0.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("http://swagger.io/v2/schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("http://swagger.io/v2/schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOpenAPIDocument fetches the document through the API and checks it against the Swagger 2.0 schema,
// the rules the schema cannot express, what a Power Automate custom connector needs, and the routes the
// router actually serves.
func TestOpenAPIDocument(t *testing.T) {
	a := newApp(t)
	r := a.do(http.MethodGet, "/api/openapi.json", nil, map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "spomig.azurewebsites.net"})
	if r.Status != http.StatusOK {
		t.Fatalf("GET /api/openapi.json: %d %s", r.Status, r.Body)
	}
	sch := swaggerSchema(t)
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(v); err != nil {
		t.Fatalf("the document is not valid OpenAPI 2.0: %v", err)
	}
	// The schema bites: a document without info, or with an unknown top-level field, is refused.
	var broken map[string]any
	_ = json.Unmarshal(r.Body, &broken)
	delete(broken, "info")
	if bv, _ := toSchemaValue(broken); sch.Validate(bv) == nil {
		t.Fatal("the Swagger schema accepted a document without info: the validation is not effective")
	}

	var doc struct {
		Swagger             string                                `json:"swagger"`
		Host                string                                `json:"host"`
		BasePath            string                                `json:"basePath"`
		Schemes             []string                              `json:"schemes"`
		Paths               map[string]map[string]json.RawMessage `json:"paths"`
		Definitions         map[string]any                        `json:"definitions"`
		SecurityDefinitions map[string]map[string]any             `json:"securityDefinitions"`
		Security            []map[string][]string                 `json:"security"`
	}
	if err := json.Unmarshal(r.Body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Host != "spomig.azurewebsites.net" || doc.BasePath != "/api" || len(doc.Schemes) != 1 || doc.Schemes[0] != "https" {
		t.Errorf("host/basePath/schemes = %q %q %v", doc.Host, doc.BasePath, doc.Schemes)
	}
	key := doc.SecurityDefinitions["functionKey"]
	if key["type"] != "apiKey" || key["in"] != "header" || key["name"] != "x-functions-key" {
		t.Errorf("securityDefinitions.functionKey = %v", key)
	}
	if len(doc.Security) != 1 || doc.Security[0]["functionKey"] == nil {
		t.Errorf("security = %v", doc.Security)
	}

	// Every $ref resolves.
	for _, m := range regexp.MustCompile(`"\$ref":"#/definitions/([^"]+)"`).FindAllSubmatch(r.Body, -1) {
		if _, ok := doc.Definitions[string(m[1])]; !ok {
			t.Errorf("$ref to missing definition %s", m[1])
		}
	}
	for _, name := range []string{"Job", "Page", "Problem", "Logs", "LogFile", "Upload", "CreateRequest"} {
		if _, ok := doc.Definitions[name]; !ok {
			t.Errorf("definition %s missing", name)
		}
	}

	// Operations: unique operationIds, summaries, descriptions, visibility, every path parameter declared,
	// the async result operation, the pageable list.
	type param struct {
		Name, In string
		Required bool
	}
	type operation struct {
		OperationID string                     `json:"operationId"`
		Summary     string                     `json:"summary"`
		Description string                     `json:"description"`
		Parameters  []param                    `json:"parameters"`
		Responses   map[string]json.RawMessage `json:"responses"`
		Visibility  string                     `json:"x-ms-visibility"`
		Pageable    map[string]string          `json:"x-ms-pageable"`
	}
	documented := map[string]bool{} // "METHOD /api/path"
	ids := map[string]bool{}
	paramRE := regexp.MustCompile(`\{([^}]+)\}`)
	for p, item := range doc.Paths {
		var shared []param
		if raw, ok := item["parameters"]; ok {
			_ = json.Unmarshal(raw, &shared)
		}
		for method, raw := range item {
			if method == "parameters" {
				continue
			}
			var op operation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			where := strings.ToUpper(method) + " " + p
			documented[strings.ToUpper(method)+" /api"+p] = true
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s: operationId %q missing or repeated", where, op.OperationID)
			}
			ids[op.OperationID] = true
			if op.Summary == "" || op.Description == "" {
				t.Errorf("%s: summary or description missing", where)
			}
			switch op.Visibility {
			case "important", "advanced", "internal":
			default:
				t.Errorf("%s: x-ms-visibility %q", where, op.Visibility)
			}
			all := append(append([]param(nil), shared...), op.Parameters...)
			for _, m := range paramRE.FindAllStringSubmatch(p, -1) {
				found := false
				for _, pr := range all {
					found = found || (pr.Name == m[1] && pr.In == "path" && pr.Required)
				}
				if !found {
					t.Errorf("%s: path parameter %s not declared (in: path, required)", where, m[1])
				}
			}
			if _, ok := op.Responses["200"]; !ok {
				if _, ok := op.Responses["201"]; !ok {
					t.Errorf("%s: no success response", where)
				}
			}
		}
	}
	var result struct {
		Responses map[string]struct {
			Headers map[string]any `json:"headers"`
		} `json:"responses"`
	}
	_ = json.Unmarshal(doc.Paths["/migrations/{id}/result"]["get"], &result)
	if h := result.Responses["202"].Headers; h["Location"] == nil || h["Retry-After"] == nil {
		t.Errorf("the result operation's 202 must declare Location and Retry-After: %v", result.Responses["202"])
	}
	var list operation
	_ = json.Unmarshal(doc.Paths["/migrations"]["get"], &list)
	if list.Pageable["nextLinkName"] != "nextLink" {
		t.Errorf("list: x-ms-pageable = %v", list.Pageable)
	}

	// The document and the router agree, both ways.
	served := map[string]bool{}
	err = api.Router(a.handler).Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			return err
		}
		for _, m := range methods {
			served[m+" "+tpl] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var onlyDoc, onlyServed []string
	for k := range documented {
		if !served[k] {
			onlyDoc = append(onlyDoc, k)
		}
	}
	for k := range served {
		if !documented[k] {
			onlyServed = append(onlyServed, k)
		}
	}
	sort.Strings(onlyDoc)
	sort.Strings(onlyServed)
	if len(onlyDoc) > 0 || len(onlyServed) > 0 {
		t.Errorf("document and router disagree:\n only documented: %v\n only served: %v", onlyDoc, onlyServed)
	}
	if len(served) != len(api.Routes()) {
		t.Errorf("router serves %d routes, Routes lists %d", len(served), len(api.Routes()))
	}
}
