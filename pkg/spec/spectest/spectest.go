// Package spectest checks rewritten config.json documents for the fuzz tests
// of pkg/spec and pkg/shim. It judges Encode from the outside: what a runtime
// decodes, and which keys of the original no specs-go field can hold.
package spectest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/userns-shim/userns-shim/pkg/spec"
)

// CheckRewrite reports how out, the document written for s after decoding
// orig, fails: it must be one JSON object that decodes to exactly s (what
// the runtime reads is what the shim decided), and keep every key of orig
// that is surely unknown to specs-go, with its value where that value holds
// nothing specs-go knows.
func CheckRewrite(s *specs.Spec, orig, out []byte) error {
	if err := spec.CheckDocument(out); err != nil {
		return fmt.Errorf("output is not one JSON object: %w", err)
	}
	back, err := spec.Decode(out)
	if err != nil {
		return fmt.Errorf("output does not decode: %w", err)
	}
	want, err := json.Marshal(s)
	if err != nil {
		return err
	}
	got, err := json.Marshal(back)
	if err != nil {
		return err
	}
	if !bytes.Equal(want, got) {
		return fmt.Errorf("output decodes to another spec:\nwant %s\ngot  %s", want, got)
	}
	o, err := decodeAny(orig)
	if err != nil {
		return err
	}
	n, err := decodeAny(out)
	if err != nil {
		return err
	}
	return unknownKept(o, n, "", true)
}

func decodeAny(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	return v, d.Decode(&v)
}

// unknownKept walks orig and out side by side. The top level's annotations
// are the shim's to change, so they are not compared.
func unknownKept(orig, out any, where string, top bool) error {
	switch o := orig.(type) {
	case map[string]any:
		n, ok := out.(map[string]any)
		if !ok {
			return nil
		}
		for k, ov := range o {
			if top && k == "annotations" {
				continue
			}
			nk, nv, inOut := lookup(n, k)
			if !isFieldName(k) {
				if !inOut || nk != k {
					return fmt.Errorf("unknown field %s.%s lost", where, k)
				}
				// null is left out: in a map of structs it decodes as {}.
				if ov != nil && foreign(ov) && !reflect.DeepEqual(ov, nv) {
					return fmt.Errorf("unknown field %s.%s changed from %v to %v", where, k, ov, nv)
				}
			}
			if inOut {
				if err := unknownKept(ov, nv, where+"."+k, false); err != nil {
					return err
				}
			}
		}
	case []any:
		n, ok := out.([]any)
		if !ok {
			return nil
		}
		for i := range min(len(o), len(n)) {
			if err := unknownKept(o[i], n[i], fmt.Sprintf("%s[%d]", where, i), false); err != nil {
				return err
			}
		}
	}
	return nil
}

// lookup finds key in m, exactly or as encoding/json would match a field.
func lookup(m map[string]any, key string) (string, any, bool) {
	if v, ok := m[key]; ok {
		return key, v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return k, v, true
		}
	}
	return "", nil, false
}

// foreign reports whether v holds no object key specs-go could know.
func foreign(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if isFieldName(k) || !foreign(e) {
				return false
			}
		}
	case []any:
		for _, e := range x {
			if !foreign(e) {
				return false
			}
		}
	}
	return true
}

// fieldNames are the JSON names of every field of every struct in a spec.
var fieldNames = func() []string {
	seen := map[reflect.Type]bool{}
	var names []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			names = append(names, name)
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[specs.Spec]())
	return names
}()

// isFieldName reports whether encoding/json could match key to a field of
// some specs-go struct: equal to a field's name but for case.
func isFieldName(key string) bool {
	for _, n := range fieldNames {
		if strings.EqualFold(n, key) {
			return true
		}
	}
	return false
}
