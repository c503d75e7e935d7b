package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// view is the part of a config.json the shim reads and writes, with
// specs-go's names and types. encoding/json builds the codec of a struct
// together with those of every type it can reach, so decoding into
// specs.Spec costs the whole runtime-spec type graph (Windows, VM, seccomp
// and more) in every process, about 0.5 ms here; this subset about 0.2 ms.
// Save writes back only the fields of view that changed, into the document
// as it was (patch), so whatever else it holds stays as written.
type view struct {
	Version     string            `json:"ociVersion"`
	Process     *processView      `json:"process,omitempty"`
	Root        *specs.Root       `json:"root,omitempty"`
	Mounts      []specs.Mount     `json:"mounts,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Linux       *linuxView        `json:"linux,omitempty"`
}

// processView: process.user is validated; the rest is what fieldsAfter11
// looks for.
type processView struct {
	User            specs.User             `json:"user"`
	Scheduler       *specs.Scheduler       `json:"scheduler,omitempty"`
	IOPriority      *specs.LinuxIOPriority `json:"ioPriority,omitempty"`
	ExecCPUAffinity *specs.CPUAffinity     `json:"execCPUAffinity,omitempty"`
}

type linuxView struct {
	UIDMappings  []specs.LinuxIDMapping          `json:"uidMappings,omitempty"`
	GIDMappings  []specs.LinuxIDMapping          `json:"gidMappings,omitempty"`
	Resources    *resourcesView                  `json:"resources,omitempty"`
	Namespaces   []specs.LinuxNamespace          `json:"namespaces,omitempty"`
	NetDevices   map[string]specs.LinuxNetDevice `json:"netDevices,omitempty"`
	IntelRdt     *specs.LinuxIntelRdt            `json:"intelRdt,omitempty"`
	MemoryPolicy *specs.LinuxMemoryPolicy        `json:"memoryPolicy,omitempty"`
}

type resourcesView struct {
	Pids *specs.LinuxPids `json:"pids,omitempty"`
}

// spec returns a specs.Spec holding v's fields (sharing their values).
func (v *view) spec() *specs.Spec {
	s := &specs.Spec{}
	intoSpec(reflect.ValueOf(s).Elem(), reflect.ValueOf(v).Elem())
	return s
}

// viewOf returns the view fields of s (sharing their values).
func viewOf(s *specs.Spec) view {
	var v view
	fromSpec(reflect.ValueOf(&v).Elem(), reflect.ValueOf(s).Elem())
	return v
}

// The view types name their fields as specs-go does, and fromSpec and
// intoSpec copy by name: the view's definition is the one list of what the
// shim uses. A field of a view type's own (processView for *specs.Process)
// is a section, copied field by field.

// fromSpec fills v, a view struct, from s, the specs-go struct it views.
func fromSpec(v, s reflect.Value) {
	for i := range v.NumField() {
		f, sf := v.Type().Field(i), s.FieldByName(v.Type().Field(i).Name)
		switch {
		case f.Type == sf.Type():
			v.Field(i).Set(sf)
		case sf.IsNil():
			v.Field(i).SetZero()
		default:
			section := reflect.New(f.Type.Elem())
			fromSpec(section.Elem(), sf.Elem())
			v.Field(i).Set(section)
		}
	}
}

// intoSpec gives s, a specs-go struct, the fields of v, the view struct of
// it, and keeps all others. A section v lacks loses its view fields in s,
// and goes when nothing else is left in it.
func intoSpec(s, v reflect.Value) {
	for i := range v.NumField() {
		f, sf := v.Type().Field(i), s.FieldByName(v.Type().Field(i).Name)
		section := v.Field(i)
		switch {
		case f.Type == sf.Type():
			sf.Set(section)
		case section.IsNil():
			if !sf.IsNil() {
				intoSpec(sf.Elem(), reflect.New(f.Type.Elem()).Elem())
				if sf.Elem().IsZero() {
					sf.SetZero()
				}
			}
		default:
			if sf.IsNil() {
				sf.Set(reflect.New(sf.Type().Elem()))
			}
			intoSpec(sf.Elem(), section.Elem())
		}
	}
}

// deepCopy returns v with nothing shared: every pointer, slice and map
// copied.
func deepCopy(v view) view {
	out := reflect.New(reflect.TypeFor[view]()).Elem()
	copyValue(out, reflect.ValueOf(v))
	return out.Interface().(view)
}

func copyValue(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Pointer:
		if !src.IsNil() {
			dst.Set(reflect.New(src.Type().Elem()))
			copyValue(dst.Elem(), src.Elem())
		}
	case reflect.Slice:
		if !src.IsNil() {
			dst.Set(reflect.MakeSlice(src.Type(), src.Len(), src.Len()))
			for i := range src.Len() {
				copyValue(dst.Index(i), src.Index(i))
			}
		}
	case reflect.Map:
		if !src.IsNil() {
			dst.Set(reflect.MakeMapWithSize(src.Type(), src.Len()))
			for it := src.MapRange(); it.Next(); {
				e := reflect.New(src.Type().Elem()).Elem()
				copyValue(e, it.Value())
				dst.SetMapIndex(it.Key(), e)
			}
		}
	case reflect.Struct:
		for i := range src.NumField() {
			copyValue(dst.Field(i), src.Field(i))
		}
	default:
		dst.Set(src)
	}
}

// SetView gives dst (a whole spec) the fields that the shim reads and
// writes from src, keeping all others; a section left with nothing set goes.
func SetView(dst, src *specs.Spec) {
	intoSpec(reflect.ValueOf(dst).Elem(), reflect.ValueOf(viewOf(src)))
}

// errAmbiguous: a field to descend into occurs more than once in one
// object (as "linux" and "Linux", say). encoding/json merges such
// occurrences; the patch leaves that to a full re-encode.
var errAmbiguous = errors.New("a patched field occurs more than once")

// patch returns raw, a JSON value that decodes to old, changed so that it
// decodes to new. Objects and arrays of objects are patched member by
// member, so keys the Go types do not know stay; other values are written
// whole. A key is matched as encoding/json matches it, case folded, and
// every variant of a key that is written goes, so that no leftover
// ("uidmappings" beside "uidMappings") can undo the change for a runtime.
func patch(raw []byte, old, new reflect.Value) ([]byte, error) {
	for new.Kind() == reflect.Pointer {
		if new.IsNil() {
			return []byte("null"), nil
		}
		if old.IsNil() {
			old = reflect.New(new.Type().Elem())
		}
		old, new = old.Elem(), new.Elem()
	}
	switch {
	case new.Kind() == reflect.Struct:
		return patchObject(raw, old, new)
	case new.Kind() == reflect.Slice && !new.IsNil() && descends(new.Type().Elem()):
		return patchArray(raw, old, new)
	}
	return json.Marshal(new.Interface())
}

// descends reports whether patch goes into values of type t rather than
// writing them whole.
func descends(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct || (t.Kind() == reflect.Slice && descends(t.Elem()))
}

type member struct {
	key   string
	value json.RawMessage
}

func patchObject(raw []byte, old, new reflect.Value) ([]byte, error) {
	members, err := objectMembers(raw)
	if err != nil {
		return nil, err
	}
	t := new.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		ov, nv := old.Field(i), new.Field(i)
		if reflect.DeepEqual(ov.Interface(), nv.Interface()) {
			continue
		}
		var base json.RawMessage
		at, found := len(members), 0
		kept := members[:0:0]
		for _, m := range members {
			if strings.EqualFold(m.key, name) {
				base, at, found = m.value, min(at, len(kept)), found+1
				continue
			}
			kept = append(kept, m)
		}
		if found > 1 && descends(f.Type) {
			return nil, errAmbiguous
		}
		members = kept
		if strings.Contains(","+opts+",", ",omitempty,") && isEmpty(nv) {
			continue
		}
		value, err := patch(base, ov, nv)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		members = append(members[:at], append([]member{{name, value}}, members[at:]...)...)
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		key, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		b.Write(key)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func patchArray(raw []byte, old, new reflect.Value) ([]byte, error) {
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		elems = nil // absent, null or no array: written anew
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range new.Len() {
		if i > 0 {
			b.WriteByte(',')
		}
		nv := new.Index(i)
		var base json.RawMessage
		ov := reflect.New(nv.Type()).Elem()
		if i < len(elems) && i < old.Len() {
			base, ov = elems[i], old.Index(i)
			if reflect.DeepEqual(ov.Interface(), nv.Interface()) {
				b.Write(base)
				continue
			}
		}
		value, err := patch(base, ov, nv)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		b.Write(value)
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// objectMembers splits a JSON object into its members, in order; anything
// that is not an object (absent, null) counts as an empty one, as for
// encoding/json, which leaves a struct alone on null.
func objectMembers(raw []byte) ([]member, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	if _, err := d.Token(); err != nil {
		return nil, err
	}
	var out []member
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return nil, err
		}
		key, _ := k.(string)
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, member{key, v})
	}
	return out, nil
}

// isEmpty is encoding/json's omitempty test.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}
