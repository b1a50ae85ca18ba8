package sandbox

import (
	"context"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// fill sets every field reachable from v (a settable value) to something
// other than its zero value: each slice gets one element, each map one
// entry, each pointer a new value, all filled in turn.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	case reflect.String:
		v.SetString("x")
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[os.File]() {
			return // an *os.File is shared, not copied: its identity is enough
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(v.Index(i))
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem())
		v.Set(p)
	case reflect.Interface:
		if v.Type() != reflect.TypeFor[FUSEServer]() {
			panic("fill: an interface in Spec: teach Clone and this test about it")
		}
		v.Set(reflect.ValueOf(FUSEServer(&stubServer{}))) // shared, as the files are
	default:
		panic("fill: a field of kind " + v.Kind().String() + " in Spec: teach Clone and this test about it")
	}
}

// shared lists the places, by path, where a and b (a value and its clone)
// share memory: a slice's array, a map, or a pointer's target, but for
// *os.File and a FUSE mount's server, which Clone shares on purpose.
func shared(path string, a, b reflect.Value) []string {
	var out []string
	switch a.Kind() {
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if a.Type().Field(i).IsExported() {
				out = append(out, shared(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))...)
			}
		}
	case reflect.Array:
		for i := 0; i < a.Len(); i++ {
			out = append(out, shared(path+"[i]", a.Index(i), b.Index(i))...)
		}
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			out = append(out, path)
		}
		for i := 0; i < min(a.Len(), b.Len()); i++ {
			out = append(out, shared(path+"[i]", a.Index(i), b.Index(i))...)
		}
	case reflect.Map:
		if !a.IsNil() && a.Pointer() == b.Pointer() {
			out = append(out, path)
		}
		for _, k := range a.MapKeys() {
			out = append(out, shared(path+"[k]", a.MapIndex(k), b.MapIndex(k))...)
		}
	case reflect.Pointer:
		if a.Type() == reflect.TypeFor[*os.File]() || a.IsNil() {
			break
		}
		if a.Pointer() == b.Pointer() {
			out = append(out, path)
		}
		out = append(out, shared(path, a.Elem(), b.Elem())...)
	case reflect.Interface:
		if a.Type() == reflect.TypeFor[FUSEServer]() {
			break // the caller's server, shared on purpose, as the files are
		}
		out = append(out, path+" (a "+a.Kind().String()+", which Clone cannot copy)")
	case reflect.Func, reflect.Chan:
		out = append(out, path+" (a "+a.Kind().String()+", which Clone cannot copy)")
	}
	return out
}

// TestSpecCloneDeep fills every field of a Spec, clones it, and checks
// that the clone is equal and shares nothing but the files: a reference
// field added to Spec (or to Mount, FilterPolicy, Limits) without a copy
// in Clone fails here.
func TestSpecCloneDeep(t *testing.T) {
	var s Spec
	fill(reflect.ValueOf(&s).Elem())
	f := os.NewFile(^uintptr(0), "never used")
	s.Files[1] = f
	s.Mounts[0].FD = f
	c := s.Clone()
	if !reflect.DeepEqual(&s, c) {
		t.Errorf("Clone() = %+v, want %+v", c, &s)
	}
	for _, p := range shared("Spec", reflect.ValueOf(s), reflect.ValueOf(*c)) {
		t.Errorf("the clone shares %s with the original", p)
	}
	if c.Files[1] != f || c.Mounts[0].FD != f {
		t.Error("the clone holds other files than the original's")
	}
	if z := (*Spec)(nil).Clone(); !reflect.DeepEqual(z, &Spec{}) {
		t.Errorf("nil.Clone() = %+v", z)
	}
}

// TestSpecChangedAfterBuild changes everything it can of a Spec once
// Build, NewTemplate and a template's sandbox have been made from it, and
// checks from inside that none of them saw the change: each works on a
// copy of its own.
func TestSpecChangedAfterBuild(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts,
		Mount{Kind: Tmpfs, Dest: "/t", Perms: Perms(0o700)},
		Mount{Kind: BindData, Dest: "/data", Data: []byte("orig")})
	spec.Env = []string{"PATH=/usr/bin:/bin", "A=orig"}
	change := func(spec *Spec) {
		*spec.Mounts[len(spec.Mounts)-2].Perms = 0o777
		copy(spec.Mounts[len(spec.Mounts)-1].Data, "evil")
		spec.Mounts[0].Dest = "/elsewhere"
		spec.Env[1] = "A=changed"
	}
	const script = `stat -c %a /t; cat /data; echo; echo $A; test -d /usr/bin && echo usr`
	const want = "700\norig\norig\nusr\n"
	check := func(name string, sb *Sandbox, r *os.File) {
		t.Helper()
		defer sb.Close()
		p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", script})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(r)
		r.Close()
		if st, err := p.Wait(ctx); err != nil || !st.Success() || string(out) != want {
			t.Errorf("%s: %v %v, output %q, want %q", name, st, err, out, want)
		}
	}

	r, w, _ := os.Pipe()
	s := spec.Clone()
	s.Files = map[int]*os.File{1: w, 2: w}
	sb, err := Build(ctx, s)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	change(s)
	check("Build", sb, r)

	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	env := []string{"PATH=/usr/bin:/bin", "A=orig"}
	r, w, _ = os.Pipe()
	sb, err = tmpl.NewSandbox(ctx, map[int]*os.File{1: w, 2: w}, env)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	change(spec)
	env[1] = "A=changed"
	check("a template's first sandbox", sb, r)
	r, w, _ = os.Pipe()
	sb, err = tmpl.NewSandbox(ctx, map[int]*os.File{1: w, 2: w}, nil)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	check("a template's sandbox with the template's environment", sb, r)
	if !strings.HasPrefix(spec.Env[1], "A=changed") {
		t.Fatal("the test did not change its spec")
	}
}
