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

// CheckRewrite reports how out, the document written for s (as spec.Decode
// gave it, then changed) after decoding orig, fails: it must be one JSON
// object whose fields the shim uses decode to exactly s (what the runtime
// reads is what the shim decided); decoded whole, as runc decodes it, it
// must be orig with those fields of s and nothing else changed; and it must
// keep every key of orig that is surely unknown to specs-go, with its value
// where that value holds nothing specs-go knows.
func CheckRewrite(s *specs.Spec, orig, out []byte) error {
	if err := spec.CheckDocument(out); err != nil {
		return fmt.Errorf("output is not one JSON object: %w", err)
	}
	back, err := spec.Decode(out)
	if err != nil {
		return fmt.Errorf("output does not decode: %w", err)
	}
	if err := sameJSON(s, back, "output decodes to another spec"); err != nil {
		return err
	}
	var whole, wholeOut specs.Spec
	if json.Unmarshal(orig, &whole) == nil {
		if err := json.Unmarshal(out, &wholeOut); err != nil {
			return fmt.Errorf("output does not decode whole, the original does: %w", err)
		}
		spec.SetView(&whole, s)
		if err := sameJSON(&whole, &wholeOut, "output decoded whole is not the original with the shim's changes"); err != nil {
			return err
		}
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

func sameJSON(want, got *specs.Spec, what string) error {
	w, err := json.Marshal(want)
	if err != nil {
		return err
	}
	g, err := json.Marshal(got)
	if err != nil {
		return err
	}
	if !bytes.Equal(w, g) {
		return fmt.Errorf("%s:\nwant %s\ngot  %s", what, w, g)
	}
	return nil
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
