package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// manyGrants is how many grants of one kind TestManyGrants gives: more
// than the calls one round trip to the sandbox's first process carries.
const manyGrants = 1000

// TestManyGrants builds sandboxes with a thousand read-only binds and a
// thousand symbolic links, as launchers with long command lines do, and
// checks from inside that the last of them is there and does what it says.
func TestManyGrants(t *testing.T) {
	testenv.AlsoAsNobody(t)
	host := testenv.SharedTempDir(t)
	for i := range manyGrants {
		name := filepath.Join(host, fmt.Sprint(i))
		os.Mkdir(name, 0o755)
		os.WriteFile(filepath.Join(name, "f"), []byte(fmt.Sprint(i)), 0o644)
	}
	spec := baseSpec()
	for i := range manyGrants {
		spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: filepath.Join(host, fmt.Sprint(i)), Dest: fmt.Sprintf("/g/%d", i)})
	}
	for i := range manyGrants {
		spec.Mounts = append(spec.Mounts, Mount{Kind: Symlink, Source: fmt.Sprintf("/g/%d/f", i), Dest: fmt.Sprintf("/l/%d", i)})
	}
	out, code := run(t, spec, `
ls /g | wc -l | sed 's/^ */binds=/'
ls /l | wc -l | sed 's/^ */links=/'
cat /g/0/f; echo; cat /l/999; echo
touch /g/999/new 2>/dev/null && echo LEAK-writable
grep -c ' /g/' /proc/self/mounts | sed 's/^/mounts=/'`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "LEAK") {
		t.Errorf("a read-only bind is writable:\n%s", out)
	}
	mustContain(t, out, fmt.Sprintf("binds=%d\n", manyGrants), fmt.Sprintf("links=%d\n", manyGrants), "0\n999\n", fmt.Sprintf("mounts=%d\n", manyGrants))
}

// TestManyGrantsFailure: the grant that fails among a thousand is named by
// the number of its mount in the spec, whichever round trip it is in.
func TestManyGrantsFailure(t *testing.T) {
	testenv.AlsoAsNobody(t)
	spec := baseSpec()
	for i := range manyGrants {
		spec.Mounts = append(spec.Mounts, Mount{Kind: Symlink, Source: "x", Dest: fmt.Sprintf("/l/%d", i)})
	}
	// A link where a link already is.
	spec.Mounts = append(spec.Mounts, Mount{Kind: Symlink, Source: "y", Dest: "/l/7"})
	_, err := Build(context.Background(), spec)
	if err == nil {
		t.Fatal("a second link at /l/7 was accepted")
	}
	want := fmt.Sprintf("mount %d (symlink y /l/7)", len(spec.Mounts))
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
}

// TestMountErrorWords: a grant that fails is a *MountError with its index
// in Spec.Mounts, and says what failed in words, not by the system call
// and the fd of the process that built the sandbox.
func TestMountErrorWords(t *testing.T) {
	testenv.AlsoAsNobody(t)
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: Dir, Dest: "/d"}, Mount{Kind: Symlink, Source: "x", Dest: "/d"})
	_, err := Build(context.Background(), spec)
	var me *MountError
	if !errors.As(err, &me) || me.Index != len(spec.Mounts)-1 || me.Mount.Dest != "/d" {
		t.Fatalf("Build = %v; want a MountError for mount %d", err, len(spec.Mounts))
	}
	if !errors.Is(err, unix.EEXIST) {
		t.Errorf("%v: the errno is lost", err)
	}
	want := fmt.Sprintf("sandbox: mount %d (symlink x /d): the destination exists and is not a symbolic link", len(spec.Mounts))
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if regexp.MustCompile(`\bfd \d|symlinkat|syscall \d`).MatchString(err.Error()) {
		t.Errorf("error %q names internal calls or fds", err)
	}
}
