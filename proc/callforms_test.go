package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// Every call is defined once, by its Batch method; its Handle method is
// generated from it (zcalls.go). These tests check that the two forms
// agree, by reflection over both method sets and by running calls both
// ways in real children.

// batchOnly are the exported Batch methods that record no call of their
// own with a Handle form: they shape the batch or its memory.
var batchOnly = []string{"Len", "Out", "In", "CString", "Tolerate"}

// handWritten are calls whose Handle form is written by hand, because it
// does more than return the call's result (direct.go, mem.go).
var handWritten = []string{"TakeFile", "Exit", "WriteMem"}

var (
	valType   = reflect.TypeFor[Val]()
	valsType  = reflect.TypeFor[[]Val]()
	ctxType   = reflect.TypeFor[context.Context]()
	errorType = reflect.TypeFor[error]()
)

func TestCallFormsMatch(t *testing.T) {
	bt, ht := reflect.TypeFor[*Batch](), reflect.TypeFor[*Handle]()
	calls := append(handleCalls[:], handWritten...)
	for i := range bt.NumMethod() {
		name := bt.Method(i).Name
		if !slices.Contains(calls, name) && !slices.Contains(batchOnly, name) {
			t.Errorf("Batch.%s is neither a call with a Handle form (a //proc:handle directive) nor listed in batchOnly", name)
		}
	}
	for _, name := range calls {
		bm, ok := bt.MethodByName(name)
		if !ok {
			t.Errorf("Batch.%s is missing", name)
			continue
		}
		hm, ok := ht.MethodByName(name)
		if !ok {
			t.Errorf("Handle.%s is missing: run go generate in proc", name)
			continue
		}
		if slices.Contains(handWritten, name) {
			continue
		}
		if err := derived(bm.Type, hm.Type); err != nil {
			t.Errorf("Handle.%s does not match Batch.%s: %v", name, name, err)
		}
	}
}

// derived checks that Handle method type h is the one gencalls derives
// from Batch method type b (receivers included).
func derived(b, h reflect.Type) error {
	if h.NumIn() < 2 || h.In(1) != ctxType {
		return errors.New("no context first")
	}
	if h.NumOut() == 0 || h.Out(h.NumOut()-1) != errorType {
		return errors.New("no error last")
	}
	if b.NumOut() != 1 || b.Out(0) != valType {
		return errors.New("the Batch method does not return one Val")
	}
	if b.IsVariadic() != h.IsVariadic() {
		return errors.New("variadic in one form only")
	}
	var outs []reflect.Type
	j := 2
	for i := 1; i < b.NumIn(); i++ {
		bp := b.In(i)
		if bp.Kind() == reflect.Pointer && (j >= h.NumIn() || h.In(j) != bp) {
			outs = append(outs, bp.Elem())
			continue
		}
		if j >= h.NumIn() {
			return fmt.Errorf("parameter %d of the Batch method has none to match", i)
		}
		if hp := h.In(j); !matches(bp, hp) {
			return fmt.Errorf("parameter %d is %v, want %v for a Batch %v", j, hp, handleForm(bp), bp)
		}
		j++
	}
	if j != h.NumIn() {
		return fmt.Errorf("%d parameters more than the Batch method's", h.NumIn()-j)
	}
	results := h.NumOut() - 1 - len(outs)
	if results < 0 || results > 1 {
		return fmt.Errorf("%d results for %d out parameters", h.NumOut(), len(outs))
	}
	if results == 1 {
		if k := h.Out(0).Kind(); k != reflect.Int && k != reflect.Uintptr {
			return fmt.Errorf("result %v, want int or uintptr", h.Out(0))
		}
	}
	for k, o := range outs {
		if h.Out(results+k) != o {
			return fmt.Errorf("result %d is %v, want %v", results+k, h.Out(results+k), o)
		}
	}
	return nil
}

// matches reports whether Handle parameter type h is the form of Batch
// parameter type b: a number for a Val, numbers for []Val, else the same.
func matches(b, h reflect.Type) bool {
	switch b {
	case valType:
		return h.Kind() == reflect.Int || h.Kind() == reflect.Uintptr
	case valsType:
		return h.Kind() == reflect.Slice && matches(valType, h.Elem())
	}
	return b == h
}

func handleForm(b reflect.Type) string {
	switch b {
	case valType:
		return "int or uintptr"
	case valsType:
		return "[]int or []uintptr"
	}
	return b.String()
}

// twins are two children made alike: each call runs as a Handle call in a
// and as a one-call Batch in b, and both must give the same result.
type twins struct {
	t    *testing.T
	ctx  context.Context
	a, b *Handle
}

// call runs the call name with the Handle form's arguments args in both
// children, checks that both forms agree (result, out parameters, the
// bytes of []byte arguments, the error's text) and returns the Handle
// form's results but the error, and the error.
func (tw *twins) call(name string, args ...any) ([]any, error) {
	tw.t.Helper()
	hm := reflect.ValueOf(tw.a).MethodByName(name)
	bm, ok := reflect.TypeFor[*Batch]().MethodByName(name)
	if !hm.IsValid() || !ok {
		tw.t.Fatalf("%s: no such call", name)
	}
	ht := hm.Type()
	// The Handle call, in a.
	hin := []reflect.Value{reflect.ValueOf(tw.ctx)}
	for i, a := range args {
		pt := ht.In(min(i+1, ht.NumIn()-1))
		if ht.IsVariadic() && i+1 >= ht.NumIn()-1 {
			pt = pt.Elem()
		}
		v := reflect.ValueOf(a)
		if a == nil {
			v = reflect.Zero(pt)
		} else if v.Type() != pt {
			v = v.Convert(pt)
		}
		hin = append(hin, v)
	}
	hout := hm.Call(hin)
	herr, _ := hout[len(hout)-1].Interface().(error)
	hres := hout[:len(hout)-1]

	// The same call recorded in a Batch, run in b.
	var batch Batch
	bin := []reflect.Value{reflect.ValueOf(&batch)}
	var outs []reflect.Value
	var bufs [][2][]byte // each []byte argument: a's and b's
	k := 1
	bt := bm.Type
	for i := 1; i < bt.NumIn(); i++ {
		pt := bt.In(i)
		if bt.IsVariadic() && i == bt.NumIn()-1 {
			for ; k < len(hin); k++ {
				bin = append(bin, toVal(hin[k]))
			}
			break
		}
		if pt.Kind() == reflect.Pointer && (k >= len(hin) || hin[k].Type() != pt) {
			out := reflect.New(pt.Elem())
			outs = append(outs, out)
			bin = append(bin, out)
			continue
		}
		hv := hin[k]
		k++
		switch {
		case pt == valType:
			bin = append(bin, toVal(hv))
		case pt == valsType:
			vs := make([]Val, hv.Len())
			for j := range vs {
				vs[j] = toVal(hv.Index(j)).Interface().(Val)
			}
			bin = append(bin, reflect.ValueOf(vs))
		case pt == reflect.TypeFor[[]byte]():
			p := bytes.Clone(hv.Bytes())
			bufs = append(bufs, [2][]byte{hv.Bytes(), p})
			bin = append(bin, reflect.ValueOf(p))
		case pt.Kind() == reflect.Pointer && !hv.IsNil() && pt != reflect.TypeFor[*os.File]():
			p := reflect.New(pt.Elem()) // b's own copy of what it points at
			p.Elem().Set(hv.Elem())
			bin = append(bin, p)
		default:
			bin = append(bin, hv)
		}
	}
	v := bm.Func.Call(bin)[0].Interface().(Val)
	res, berr := tw.b.Run(tw.ctx, &batch)
	if berr == nil {
		defer res.Close()
	}
	if be, ok := errors.AsType[*BatchError](berr); ok && be.Len == 1 {
		berr = be.Err
	}

	if fmt.Sprint(herr) != fmt.Sprint(berr) {
		tw.t.Errorf("%s: Handle form: %v; Batch form: %v", name, herr, berr)
	}
	if herr != nil || berr != nil {
		return nil, herr
	}
	var got []any
	if len(hres) > len(outs) {
		got = append(got, reflect.ValueOf(res.Uint(v)).Convert(hres[0].Type()).Interface())
	}
	for _, o := range outs {
		got = append(got, o.Elem().Interface())
	}
	for i, r := range hres {
		if !reflect.DeepEqual(r.Interface(), got[i]) {
			tw.t.Errorf("%s: result %d: Handle form %v, Batch form %v", name, i, r, got[i])
		}
	}
	for _, p := range bufs {
		// A call that fills a buffer returns the count it wrote; the bytes
		// after it are whatever the child's memory held.
		if len(hres) > len(outs) {
			if n, ok := hres[0].Interface().(int); ok && n <= len(p[0]) {
				p[0], p[1] = p[0][:n], p[1][:n]
			}
		}
		if !bytes.Equal(p[0], p[1]) {
			tw.t.Errorf("%s: buffer: Handle form %q, Batch form %q", name, p[0], p[1])
		}
	}
	ret := make([]any, len(hres))
	for i, r := range hres {
		ret[i] = r.Interface()
	}
	return ret, nil
}

// toVal is the Batch argument for a Handle call's number.
func toVal(v reflect.Value) reflect.Value {
	if v.Kind() == reflect.Uintptr {
		return reflect.ValueOf(Ptr(uintptr(v.Uint())))
	}
	return reflect.ValueOf(Int(int(v.Int())))
}

func TestCallFormsAgree(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	tw := &twins{t: t, ctx: ctx, a: fork(t, nil), b: fork(t, nil)}
	dir := sharedTempDir(t)
	for i, h := range []*Handle{tw.a, tw.b} {
		sub := fmt.Sprintf("%s/%d", dir, i)
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := h.Chdir(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	must := func(r []any, err error) []any {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	fails := func(r []any, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("succeeded: %v", r)
		}
	}

	// Results, in both forms.
	must(tw.call("Getuid"))
	must(tw.call("Geteuid"))
	must(tw.call("Getegid"))
	must(tw.call("Syscall", unix.SYS_GETGID))
	must(tw.call("Prctl", unix.PR_GET_DUMPABLE, 0, 0, 0, 0))
	fd := must(tw.call("Openat", unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0))[0].(int)
	must(tw.call("Read", fd, make([]byte, 64)))
	must(tw.call("Fcntl", fd, unix.F_GETFD, 0))
	must(tw.call("Dup3", fd, 50, unix.O_CLOEXEC))
	must(tw.call("CloseFD", 50))
	fails(tw.call("CloseFD", 50))
	fails(tw.call("Write", fd, []byte("x")))

	// Paths, relative to each child's own directory.
	must(tw.call("Mkdirat", unix.AT_FDCWD, "d", 0o700))
	fails(tw.call("Mkdirat", unix.AT_FDCWD, "d", 0o700))
	must(tw.call("Fchmodat", unix.AT_FDCWD, "d", 0o750))
	must(tw.call("Symlinkat", "d", "l"))
	var st unix.Stat_t
	must(tw.call("Fstatat", unix.AT_FDCWD, "l", &st, unix.AT_SYMLINK_NOFOLLOW))
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("fstatat of a symlink: mode %#o", st.Mode)
	}
	must(tw.call("Unlinkat", unix.AT_FDCWD, "l", 0))
	must(tw.call("Unlinkat", unix.AT_FDCWD, "d", unix.AT_REMOVEDIR))
	fails(tw.call("Unlinkat", unix.AT_FDCWD, "d", unix.AT_REMOVEDIR))
	fails(tw.call("Chdir", "nonexistent"))
	var sfs unix.Statfs_t
	must(tw.call("Fstatfs", fd, &sfs))

	// Out parameters, []Val arguments and fds.
	sp := must(tw.call("Socketpair", unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0))[0].([2]int)
	must(tw.call("Sendmsg", sp[0], []byte("hi"), []int{fd}, 0))
	must(tw.call("Recvmsg", sp[1], make([]byte, 8), 2, 0))
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	must(tw.call("PutFile", f, -1))

	// Failures that name the call and its fd.
	fails(tw.call("LandlockAddNetRule", -1, 0, 80))
	fails(tw.call("Setns", fd, unix.CLONE_NEWNET))
	fails(tw.call("Mmap", 0, 0, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0))
	fails(tw.call("Munmap", 1, 4096))
	fails(tw.call("Kill", 1<<30, 0))
	fails(tw.call("Fsmount", -1, 0, 0))
}
