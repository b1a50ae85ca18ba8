package sandbox

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// The tests of FUSE mounts that need a server to answer are in
// sandbox/internal/fusetest, apart from this binary (see there why).

// stubServer is a FUSEServer that counts its Serve calls and serves
// nothing.
type stubServer struct{ served int }

func (s *stubServer) MountOptions() string { return "" }

func (s *stubServer) Serve(_ context.Context, dev *os.File, _, _ []proc.IDMap) error {
	s.served++
	dev.Close()
	return errors.New("stubServer serves nothing")
}

// TestFUSEUnavailable builds a sandbox with a FUSE mount whose user may
// not open /dev/fuse (mode 0600 root's on this kind of machine): the
// build fails with one FUSEUnavailableError that names /dev/fuse and the
// fix, in the MountError of that mount, matching EACCES and
// ErrUnenforceable; the server is never called, and nothing is left
// open.
func TestFUSEUnavailable(t *testing.T) {
	testenv.AlsoAsNobody(t)
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil || st.Mode&0o006 == 0o006 {
		t.Skipf("/dev/fuse is missing or usable by all (%v)", err)
	}
	spec := baseSpec()
	if os.Getuid() == 0 {
		spec.HostIDs = NobodyIDs()
	}
	srv := &stubServer{}
	spec.Mounts = append(spec.Mounts, Mount{Kind: FUSE, Dest: "/served", Server: srv})
	sb0, err := Build(context.Background(), baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	sb0.Close() // what a first build keeps open for good, opened
	fds := testenv.OpenFDs(t)
	sb, err := Build(context.Background(), spec)
	if err == nil {
		sb.Close()
		t.Fatal("built")
	}
	var fe *FUSEUnavailableError
	var me *MountError
	if !errors.As(err, &fe) || !errors.As(err, &me) || me.Index != len(spec.Mounts)-1 ||
		!errors.Is(err, unix.EACCES) || !errors.Is(err, ErrUnenforceable) ||
		!strings.Contains(err.Error(), "/dev/fuse") || !strings.Contains(err.Error(), "chmod 0666 /dev/fuse") {
		t.Errorf("err = %v, want a FUSEUnavailableError, EACCES, naming /dev/fuse and the fix", err)
	}
	if srv.served != 0 {
		t.Errorf("Serve was called %d times", srv.served)
	}
	testenv.WaitFDs(t, fds)
}

// TestFUSEMountChecks: what a FUSE mount takes, and where it is refused.
func TestFUSEMountChecks(t *testing.T) {
	srv := &stubServer{}
	for _, c := range []struct {
		name string
		spec *Spec
		want string
	}{
		{"no server", &Spec{Mounts: []Mount{{Kind: FUSE, Dest: "/s"}}}, "no server"},
		{"a server elsewhere", &Spec{Mounts: []Mount{{Kind: Tmpfs, Dest: "/s", Server: srv}}}, "for FUSE mounts only"},
		{"Landlock-only", &Spec{LandlockOnly: true, Mounts: []Mount{{Kind: FUSE, Dest: "/s", Server: srv}}}, "needs a mount namespace"},
	} {
		sb, err := Build(context.Background(), c.spec)
		if err == nil {
			sb.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if _, err := NewTemplate(context.Background(), &Spec{Mounts: []Mount{{Kind: FUSE, Dest: "/s", Server: srv}}}); err == nil || !strings.Contains(err.Error(), "serves one sandbox") {
		t.Errorf("a template: %v", err)
	}
	if _, err := ParseProfile("p.toml", []byte("[[mount]]\ntype = \"fuse\"\ndest = \"/s\"\n")); err == nil || !strings.Contains(err.Error(), "needs a server") {
		t.Errorf("a profile: %v", err)
	}
	if srv.served != 0 {
		t.Errorf("Serve was called")
	}
}
