package rpc

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"github.com/fxamacker/cbor/v2"
)

// fdTag is the CBOR tag number of an fd in a message body. It lies in the
// first-come-first-served range of the IANA registry and is not registered;
// it means something only inside caplin's protocol.
const fdTag = 0xcf0d

// An FD is a file descriptor in a call's arguments or results: a field of
// type FD (or *FD) in a struct, or an element of a slice or array of them,
// travels as SCM_RIGHTS ancillary data, and the receiver finds a descriptor
// of its own in the same field. Any kind of descriptor crosses: a file,
// a directory, a pidfd, a socket (another object), a pipe, a memfd.
//
// The zero FD (File == nil) is "no descriptor" and travels as CBOR null.
//
// FDs are found by walking the value's type: in struct fields (exported,
// as the encoder sees them), through pointers, slices and arrays. An FD inside
// a map or an interface value is not supported: sending one fails, and on
// receipt its descriptor is closed.
//
// Ownership: the sender keeps its File (the receiver gets a duplicate),
// except that the files in a Handler's result are closed once the reply is
// sent. The receiver owns the Files it finds in what it decoded and must
// close them; descriptors a message carried that no FD of the decoded value
// claimed are closed for it.
type FD struct {
	// File is the descriptor.
	File *os.File

	// wire is, in a decoded FD, the number the sender gave the
	// descriptor, which the message's fd list maps to a received file.
	wire int32
	set  bool
}

// NewFD returns an FD for f.
func NewFD(f *os.File) FD { return FD{File: f} }

// Close closes the descriptor, if there is one.
func (fd FD) Close() error {
	if fd.File == nil {
		return nil
	}
	return fd.File.Close()
}

// MarshalCBOR encodes fd as its tag around the sender's descriptor number.
func (fd FD) MarshalCBOR() ([]byte, error) {
	if fd.File == nil {
		return []byte{0xf6}, nil // null
	}
	n, err := fdNumber(fd.File)
	if err != nil {
		return nil, err
	}
	return cbor.Marshal(cbor.Tag{Number: fdTag, Content: n})
}

// UnmarshalCBOR decodes fd's tag; the message's fd list then gives it its
// File.
func (fd *FD) UnmarshalCBOR(data []byte) error {
	*fd = FD{}
	if len(data) == 1 && (data[0] == 0xf6 || data[0] == 0xf7) {
		return nil
	}
	var t cbor.RawTag
	if err := decMode.Unmarshal(data, &t); err != nil {
		return fmt.Errorf("rpc: fd: %w", err)
	}
	if t.Number != fdTag {
		return fmt.Errorf("rpc: fd: CBOR tag %d, want %d", t.Number, fdTag)
	}
	var n uint32
	if err := cbor.Unmarshal(t.Content, &n); err != nil || n > 1<<30 {
		return fmt.Errorf("rpc: fd: bad descriptor number")
	}
	fd.wire, fd.set = int32(n), true
	return nil
}

// fdNumber returns f's descriptor number without Fd's side effect of
// making the file blocking.
func fdNumber(f *os.File) (int32, error) {
	var n int32 = -1
	if err := fdctl.Control(f, func(fd int) error { n = int32(fd); return nil }); err != nil {
		return -1, fmt.Errorf("rpc: fd %s: %w", f.Name(), err)
	}
	return n, nil
}

var fdType = reflect.TypeFor[FD]()

// errFDInMap is the error for an FD where the walker cannot follow it.
var errFDInMap = errors.New("rpc: an FD inside a map or interface is not supported")

// A walkFunc visits every FD in v (which, on the receiving side, is
// addressable).
type walkFunc func(v reflect.Value, visit func(reflect.Value) error) error

// walkers caches, per type, how to find its FDs; nil means the type holds
// none, so most messages cost one map lookup.
var walkers sync.Map // reflect.Type -> walkFunc (nil for none)

func walkerFor(t reflect.Type) walkFunc {
	if w, ok := walkers.Load(t); ok {
		return w.(walkFunc)
	}
	w := buildWalker(t, map[reflect.Type]bool{})
	walkers.Store(t, w)
	return w
}

// buildWalker returns the walker for t, nil if t can hold no FD. Recursive
// types are walked through their pointers and slices; seen breaks the
// cycle while building (a recursive type is then walked dynamically).
func buildWalker(t reflect.Type, seen map[reflect.Type]bool) walkFunc {
	if t == fdType {
		return func(v reflect.Value, visit func(reflect.Value) error) error { return visit(v) }
	}
	if seen[t] {
		return func(v reflect.Value, visit func(reflect.Value) error) error {
			if w := walkerFor(t); w != nil {
				return w(v, visit)
			}
			return nil
		}
	}
	seen[t] = true
	defer delete(seen, t)
	switch t.Kind() {
	case reflect.Pointer:
		elem := buildWalker(t.Elem(), seen)
		if elem == nil {
			return nil
		}
		return func(v reflect.Value, visit func(reflect.Value) error) error {
			if v.IsNil() {
				return nil
			}
			return elem(v.Elem(), visit)
		}
	case reflect.Slice, reflect.Array:
		elem := buildWalker(t.Elem(), seen)
		if elem == nil {
			return nil
		}
		return func(v reflect.Value, visit func(reflect.Value) error) error {
			for i := 0; i < v.Len(); i++ {
				if err := elem(v.Index(i), visit); err != nil {
					return err
				}
			}
			return nil
		}
	case reflect.Map:
		if buildWalker(t.Elem(), seen) != nil || buildWalker(t.Key(), seen) != nil {
			return func(reflect.Value, func(reflect.Value) error) error { return errFDInMap }
		}
		return nil
	case reflect.Struct:
		type field struct {
			i int
			w walkFunc
		}
		var fields []field
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous {
				continue
			}
			if w := buildWalker(f.Type, seen); w != nil {
				fields = append(fields, field{i, w})
			}
		}
		if len(fields) == 0 {
			return nil
		}
		return func(v reflect.Value, visit func(reflect.Value) error) error {
			for _, f := range fields {
				if err := f.w(v.Field(f.i), visit); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return nil
}

// collectFDs returns the files of the FDs in v, in the order they are
// found, and fails if one descriptor appears twice (it would be owned
// twice on the other side) or an FD sits where it cannot be found.
func collectFDs(v any) ([]*os.File, []int32, error) {
	if v == nil {
		return nil, nil, nil
	}
	rv := reflect.ValueOf(v)
	w := walkerFor(rv.Type())
	if w == nil {
		return nil, nil, nil
	}
	var files []*os.File
	var nums []int32
	err := w(rv, func(fv reflect.Value) error {
		fd := fv.Interface().(FD)
		if fd.File == nil {
			return nil
		}
		n, err := fdNumber(fd.File)
		if err != nil {
			return err
		}
		for _, m := range nums {
			if m == n {
				return fmt.Errorf("rpc: descriptor %d appears twice in one message", n)
			}
		}
		files = append(files, fd.File)
		nums = append(nums, n)
		return nil
	})
	return files, nums, err
}

// attachFDs gives the FDs decoded into ptr (a pointer) their files:
// wire number nums[i] is files[i]. Each file is claimed at most once;
// claimed[i] reports which were.
func attachFDs(ptr any, files []*os.File, nums []int32, claimed []bool) error {
	rv := reflect.ValueOf(ptr)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil
	}
	w := walkerFor(rv.Type())
	if w == nil {
		return nil
	}
	return w(rv, func(fv reflect.Value) error {
		fd := fv.Addr().Interface().(*FD)
		if !fd.set {
			return nil
		}
		for i, n := range nums {
			if n == fd.wire {
				if claimed[i] {
					return fmt.Errorf("rpc: descriptor %d claimed twice", n)
				}
				claimed[i] = true
				fd.File = files[i]
				fd.set = false
				return nil
			}
		}
		return fmt.Errorf("rpc: descriptor %d not in the message", fd.wire)
	})
}
