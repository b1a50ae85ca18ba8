package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/dir/export"
	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestBindFD binds descriptors: an O_PATH descriptor of a directory, and
// the root of a read-only export, which stays read-only in the sandbox even
// as a writable bind, and is moved, so it serves one sandbox only.
func TestBindFD(t *testing.T) {
	testenv.AlsoAsNobody(t)
	top := testenv.SharedTempDir(t)
	data := filepath.Join(top, "data")
	os.Mkdir(data, 0o777)
	os.Chmod(data, 0o777)
	os.WriteFile(filepath.Join(data, "f"), []byte("granted"), 0o666)
	os.WriteFile(filepath.Join(top, "secret"), []byte("secret"), 0o666)

	f, err := os.OpenFile(data, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: Bind, FD: f, Dest: "/data"})
	out, code := run(t, spec, `cat /data/f; echo; cat /data/../secret 2>/dev/null || echo no-secret; echo w > /data/new && echo wrote`)
	if code != 0 || out != "granted\nno-secret\nwrote\n" {
		t.Errorf("bind of an O_PATH fd: exit %d, output %q", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(data, "new")); string(b) != "w\n" {
		t.Errorf("the write through the bind did not reach the directory: %q", b)
	}

	d, err := dir.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ro, err := d.Sub(".", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	exp, err := export.Dir(context.Background(), ro)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	spec = baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: Bind, FD: exp, Dest: "/data"})
	out, code = run(t, spec, `cat /data/f; echo; (echo w > /data/new2) 2>/dev/null && echo wrote || echo read-only`)
	if code != 0 || out != "granted\nread-only\n" {
		t.Errorf("bind of a read-only export: exit %d, output %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(data, "new2")); err == nil {
		t.Errorf("a sandbox wrote through a read-only export")
	}
	// Moved into that sandbox: it is no longer a detached mount.
	if _, err := Build(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "(bind "+exp.Name()+" /data)") {
		t.Errorf("a second sandbox from the same export: %v, want an error naming the bind", err)
	} else {
		t.Log(err)
	}
}

// TestBindFDBadInput: a descriptor is a bind's source only, in place of a
// path; one whose path now leads elsewhere is refused.
func TestBindFDBadInput(t *testing.T) {
	ctx := context.Background()
	top := t.TempDir()
	os.Mkdir(filepath.Join(top, "a"), 0o755)
	f, err := os.Open(filepath.Join(top, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, m := range []Mount{
		{Kind: Tmpfs, FD: f, Dest: "/x"},
		{Kind: ROBind, FD: f, Source: top, Dest: "/x"},
	} {
		if _, err := Build(ctx, &Spec{Mounts: []Mount{m}}); err == nil || !strings.Contains(err.Error(), "a descriptor is the source of a bind only") {
			t.Errorf("%v: %v", m, err)
		}
	}
	// A pipe is on no mount of ours, and no mount's root.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if _, err := Build(ctx, &Spec{Mounts: []Mount{{Kind: ROBind, FD: pr, Dest: "/x"}}}); !errors.Is(err, errNotMount) {
		t.Errorf("bind of a pipe: %v, want errNotMount", err)
	}
	// Deleted: its path is no longer a path.
	os.Remove(filepath.Join(top, "a"))
	if _, err := Build(ctx, &Spec{Mounts: []Mount{{Kind: ROBind, FD: f, Dest: "/x"}}}); !errors.Is(err, errMoved) {
		t.Errorf("bind of a removed directory's fd: %v, want errMoved", err)
	}
}
