// Package deploy_test validates the shipped deployment configuration (envoy/, envoy/istio/, deploy/k8s/) by parsing every file
// into the schema of the program that reads it, with unknown fields rejected, and asserting the values the deployment depends on (docs/operations.md).
package deploy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// repoFile reads a file by its path from the repository root.
func repoFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeProtoYAML decodes YAML into a protobuf message the way Envoy and Istio read their configuration, failing on any field
// the schema does not have.
func decodeProtoYAML(t *testing.T, name string, y []byte, m proto.Message) {
	t.Helper()
	js, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, m); err != nil {
		t.Fatalf("%s does not match %s: %v", name, m.ProtoReflect().Descriptor().FullName(), err)
	}
}

// validateProto runs the protoc-gen-validate rules that Envoy enforces when it loads a config.
func validateProto(t *testing.T, name string, m proto.Message) {
	t.Helper()
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		t.Fatalf("%s: %T has no validation rules", name, m)
	}
	if err := v.ValidateAll(); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

// strictYAML decodes one YAML document into v, rejecting fields v's type does not have.
func strictYAML(t *testing.T, name string, y []byte, v any) {
	t.Helper()
	js, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	// As the API server's strict field validation: names are case-sensitive (encoding/json would take "failopen" for
	// failOpen), unknown and duplicate fields are errors.
	strictErrs, err := kjson.UnmarshalStrict(js, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, e := range strictErrs {
		t.Errorf("%s: %v", name, e)
	}
}

// splitDocuments splits a multi-document YAML stream, dropping empty documents.
func splitDocuments(y []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), y...), []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}
