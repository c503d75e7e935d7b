// Package spec loads and saves a bundle's config.json and holds the spec
// modifiers: pure functions on *specs.Spec. Loading keeps the original bytes
// so that a refused create can prove it changed nothing, and saving keeps
// every field, including ones this version of specs-go does not know.
package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/userns-shim/userns-shim/pkg/fsutil"
)

// MaxSize bounds the config.json the shim reads. Real ones are a few KiB;
// a spec with thousands of mounts stays well below this.
const MaxSize = 32 << 20

// File is a loaded config.json. Spec holds the fields the shim reads and
// writes (see view), the others are left zero; Save writes the changes to
// those fields into the document as it was read, which keeps everything
// else as written.
type File struct {
	Path string
	Raw  []byte // the bytes as read
	Spec *specs.Spec
	was  view // Spec's fields as read, for Encode to tell what changed
	mode os.FileMode
	uid  int
	gid  int
}

// Load reads and decodes path (see Read).
func Load(path string) (*File, error) {
	raw, st, err := Read(path)
	if err != nil {
		return nil, err
	}
	return FromBytes(path, raw, st)
}

// FromBytes decodes raw, the content of path as Read returned it with st.
func FromBytes(path string, raw []byte, st os.FileInfo) (*File, error) {
	v, err := decodeView(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	// The spec gets a copy: the modifiers change it in place.
	c := deepCopy(v)
	return &File{Path: path, Raw: raw, Spec: c.spec(), was: v, mode: st.Mode().Perm(), uid: int(sys.Uid), gid: int(sys.Gid)}, nil
}

// Read returns the bytes of path, which must be a regular file (not a
// symlink, so that a bundle cannot point the shim at another file to
// rewrite) of at most MaxSize bytes holding one JSON object.
func Read(path string) ([]byte, os.FileInfo, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, nil, fmt.Errorf("open %s: it is a symlink; config.json must be a regular file", path)
		}
		if errors.Is(err, unix.ENXIO) { // what open(2) says of a socket
			return nil, nil, fmt.Errorf("open %s: it is a socket; config.json must be a regular file", path)
		}
		return nil, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file but %s", path, describeType(st.Mode()))
	}
	raw, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, nil, err // f.Read's *os.PathError names the operation and path
	}
	if len(raw) > MaxSize {
		return nil, nil, fmt.Errorf("%s is larger than %d MiB", path, MaxSize>>20)
	}
	if err := CheckDocument(raw); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return raw, st, nil
}

// CheckDocument refuses raw unless it is one JSON object and nothing else.
func CheckDocument(raw []byte) error {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' || !json.Valid(t) {
		return syntaxError(raw)
	}
	return nil
}

func describeType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device node"
	}
	return "a special file"
}

// syntaxError explains why raw is not one JSON object.
func syntaxError(raw []byte) error {
	var v map[string]json.RawMessage
	err := json.Unmarshal(raw, &v)
	var se *json.SyntaxError
	switch {
	case len(bytes.TrimSpace(raw)) == 0:
		return errors.New("empty file: not a runtime spec")
	case errors.As(err, &se):
		return fmt.Errorf("not valid JSON at byte %d: %w", se.Offset, err)
	case err != nil:
		return fmt.Errorf("not a valid OCI runtime spec: %w", err)
	}
	return errors.New("not a JSON object")
}

// Decode parses the fields of a config.json document that the shim reads
// and writes (view) into a spec; all others are left zero. A field the shim
// does not read is the runtime's to judge.
func Decode(raw []byte) (*specs.Spec, error) {
	v, err := decodeView(raw)
	if err != nil {
		return nil, err
	}
	return v.spec(), nil
}

func decodeView(raw []byte) (view, error) {
	var v view
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, specError(err)
	}
	if v.Process == nil && v.Root == nil && v.Linux == nil {
		return v, errors.New("not an OCI runtime spec: no process, root or linux section")
	}
	return v, nil
}

func specError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON at byte %d: %w", se.Offset, err)
	}
	return fmt.Errorf("not a valid OCI runtime spec: %w", err)
}

// decodeFull parses raw into a whole spec and tells whether it has fields
// specs-go does not know. The strict decode is the common case's only one:
// a document with unknown fields is decoded a second time, leniently.
func decodeFull(raw []byte) (*specs.Spec, bool, error) {
	var s specs.Spec
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	err := d.Decode(&s)
	unknown := err != nil && strings.HasPrefix(err.Error(), "json: unknown field ")
	if unknown {
		s = specs.Spec{}
		err = json.Unmarshal(raw, &s)
	}
	if err != nil {
		return nil, false, specError(err)
	}
	return &s, unknown, nil
}

// Encode returns orig, the document s was decoded from, with the fields of
// s that the shim reads and writes (view) written into it where they
// changed (patch): every other byte of orig stays. A document that repeats
// a key the patch must go into takes a full re-encode instead
// (encodeFull), which gives the same result at a few times the cost.
func Encode(s *specs.Spec, orig []byte) ([]byte, error) {
	var was view
	if err := json.Unmarshal(orig, &was); err != nil {
		return nil, specError(err)
	}
	return encode(s, orig, was)
}

// encode is Encode with orig's view fields decoded already.
func encode(s *specs.Spec, orig []byte, was view) ([]byte, error) {
	out, err := patch(orig, reflect.ValueOf(was), reflect.ValueOf(viewOf(s)))
	if errors.Is(err, errAmbiguous) {
		return encodeFull(s, orig)
	}
	return out, err
}

// encodeFull decodes orig whole, gives it the view fields of s and
// marshals it, keeping every field of orig that specs-go does not know.
func encodeFull(s *specs.Spec, orig []byte) ([]byte, error) {
	full, unknown, err := decodeFull(orig)
	if err != nil {
		return nil, err
	}
	SetView(full, s)
	out, err := json.Marshal(full)
	if err != nil || !unknown {
		return out, err
	}
	o, err := decodeAny(orig)
	if err != nil {
		return nil, err
	}
	next, err := decodeAny(out)
	if err != nil {
		return nil, err
	}
	restoreUnknown(o, next, reflect.TypeFor[specs.Spec]())
	return json.Marshal(next)
}

// decodeAny decodes a JSON document generically, numbers as written: a
// float64 would turn RLIM_INFINITY (2^64-1) into a number no uint64 holds.
func decodeAny(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// restoreUnknown copies into next every object key of orig that
// encoding/json decoded into no field of t, the Go type at this place,
// wherever next still has the enclosing object. A key that matches a field
// only case-insensitively ("uidmappings") was decoded into that field: kept
// beside the shim's "uidMappings" it would be read after it by a Go runtime
// and undo the rewrite.
func restoreUnknown(orig, next any, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch o := orig.(type) {
	case map[string]any:
		n, ok := next.(map[string]any)
		if !ok {
			return
		}
		for key, ov := range o {
			var ft reflect.Type
			switch t.Kind() {
			case reflect.Map:
				ft = t.Elem()
			case reflect.Struct:
				var name string
				if name, ft = jsonField(t, key); ft == nil {
					if _, inNext := n[key]; !inNext {
						n[key] = ov
					}
					continue
				}
				key = name
			default:
				return
			}
			if nv, inNext := n[key]; inNext {
				restoreUnknown(ov, nv, ft)
			}
		}
	case []any:
		n, ok := next.([]any)
		if !ok || (t.Kind() != reflect.Slice && t.Kind() != reflect.Array) {
			return
		}
		for i := range min(len(o), len(n)) {
			restoreUnknown(o[i], n[i], t.Elem())
		}
	}
}

// jsonField returns the JSON name and type of the field of struct t that
// encoding/json decodes key into: an exact match, else a case-insensitive
// one, as encoding/json does. Fields of embedded structs count as t's own.
func jsonField(t reflect.Type, key string) (string, reflect.Type) {
	var foldName string
	var foldType reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			if n, ft := jsonField(f.Type, key); ft != nil {
				if n == key {
					return n, ft
				}
				foldName, foldType = n, ft
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return name, f.Type
		}
		if foldType == nil && strings.EqualFold(name, key) {
			foldName, foldType = name, f.Type
		}
	}
	return foldName, foldType
}

// Encode returns what Save writes for s (see Encode).
func (f *File) Encode(s *specs.Spec) ([]byte, error) { return encode(s, f.Raw, f.was) }

// Save writes s over the file atomically: a temporary file in the same
// directory, the original's mode and owner, then rename. Readers see
// either the old document or the whole new one.
func (f *File) Save(s *specs.Spec) error {
	data, err := f.Encode(s)
	if err != nil {
		return fmt.Errorf("encode %s: %w", f.Path, err)
	}
	return fsutil.WriteAtomic(f.Path, data, f.mode, f.uid, f.gid)
}
