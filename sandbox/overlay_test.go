package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// overlayLayers makes, in a directory uid 65534 can use too, two lower
// layers and an upper and a work directory whose names have the
// characters overlayfs's options treat as their own (":", ",", "\\").
func overlayLayers(t *testing.T) (low1, low2, upper, work string) {
	t.Helper()
	dir := testenv.SharedTempDir(t)
	mk := func(name string, files map[string]string) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, data := range files {
			if err := os.WriteFile(filepath.Join(p, f), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	low1 = mk(`low:1,a\b`, map[string]string{"a": "low1\n", "b": "low1\n"})
	low2 = mk(`low 2,:`, map[string]string{"b": "low2\n"})
	upper = mk(`up:per,\`, nil)
	work = mk(`wo,rk:`, nil)
	return
}

// TestOverlay mounts each kind of overlay in a real sandbox and checks what
// the program sees and where its writes go.
func TestOverlay(t *testing.T) {
	testenv.AlsoAsNobody(t)
	low1, low2, upper, work := overlayLayers(t)
	lower := []string{low1, low2} // low2 on top
	script := `cat /o/a /o/b; echo new > /o/c && echo wrote; cat /o/c; rm /o/a && echo removed; ls /o | tr '\n' ' '; echo`

	t.Run("overlay", func(t *testing.T) {
		spec := baseSpec()
		spec.Mounts = append(spec.Mounts, Mount{Kind: Overlay, Source: upper, Work: work, Lower: lower, Dest: "/o"})
		out, code := run(t, spec, script)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		mustContain(t, out, "low1\nlow2\nwrote\nnew\nremoved\nb c \n")
		if b, err := os.ReadFile(filepath.Join(upper, "c")); err != nil || string(b) != "new\n" {
			t.Errorf("the upper directory's c: %q, %v; want the sandbox's write", b, err)
		}
		if _, err := os.Stat(filepath.Join(low1, "a")); err != nil {
			t.Errorf("the lower layer lost a: %v", err)
		}
	})
	t.Run("tmp-overlay", func(t *testing.T) {
		spec := baseSpec()
		spec.Mounts = append(spec.Mounts, Mount{Kind: TmpOverlay, Lower: lower, Dest: "/o"})
		out, code := run(t, spec, script)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		mustContain(t, out, "low1\nlow2\nwrote\nnew\nremoved\nb c \n")
		for _, d := range []string{low1, low2} {
			if _, err := os.Stat(filepath.Join(d, "c")); err == nil {
				t.Errorf("the write reached the host's %s", d)
			}
		}
	})
	t.Run("ro-overlay", func(t *testing.T) {
		spec := baseSpec()
		spec.Mounts = append(spec.Mounts, Mount{Kind: ROOverlay, Lower: lower, Dest: "/o"})
		out, code := run(t, spec, `cat /o/a /o/b; echo new > /o/c || echo refused`)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		mustContain(t, out, "low1\nlow2\n", "Read-only file system", "refused\n")
	})
}

// TestOverlayChecks: what Build refuses of an overlay before making
// anything, and what a Template refuses.
func TestOverlayChecks(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		m    Mount
		want string
	}{
		{Mount{Kind: ROOverlay, Lower: []string{"/usr"}, Dest: "/o"}, "1 lower layers, want at least 2"},
		{Mount{Kind: TmpOverlay, Dest: "/o"}, "0 lower layers, want at least 1"},
		{Mount{Kind: Overlay, Source: "/tmp", Lower: []string{"/usr"}, Dest: "/o"}, "a work directory goes with"},
		{Mount{Kind: TmpOverlay, Work: "/w", Lower: []string{"/usr"}, Dest: "/o"}, "a work directory goes with"},
		{Mount{Kind: TmpOverlay, Lower: []string{"usr"}, Dest: "/o"}, "is not an absolute path"},
		{Mount{Kind: Overlay, Work: "/w", Lower: []string{"/usr"}, Dest: "/o"}, "source missing"},
		{Mount{Kind: Tmpfs, Lower: []string{"/usr"}, Dest: "/o"}, "are for overlays"},
	} {
		_, err := Build(ctx, &Spec{Mounts: []Mount{c.m}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.m, err, c.want)
		}
	}
	_, err := NewTemplate(ctx, &Spec{Mounts: []Mount{{Kind: TmpOverlay, Lower: []string{"/usr"}, Dest: "/o"}}})
	if err == nil || !strings.Contains(err.Error(), "tmp-overlay") {
		t.Errorf("NewTemplate with a TmpOverlay: %v, want it refused", err)
	}
}

// TestLockFiles: the sandbox holds a shared lock on each lock file while it
// lives, so a write lock of the caller's fails, and holds none once closed;
// a lock file another holds a write lock on fails the build.
func TestLockFiles(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	lock := filepath.Join(dir, "lock")
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Whether a write lock could be taken now, as F_GETLK says.
	free := func() bool {
		f, err := os.OpenFile(lock, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		l := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &l); err != nil {
			t.Fatal(err)
		}
		return l.Type == unix.F_UNLCK
	}
	ctx := context.Background()
	for _, mode := range []struct {
		name string
		set  func(*Spec)
	}{
		{"init", func(*Spec) {}},
		{"as-pid-1", func(s *Spec) { s.AsPID1 = true }},
		{"share-pid", func(s *Spec) {
			s.SharePID = true
			// No proc of its own: it has no pid namespace of its own.
			s.Mounts = slices.DeleteFunc(s.Mounts, func(m Mount) bool { return m.Kind == Proc })
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			spec := baseSpec()
			spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: dir, Dest: "/locks"})
			spec.LockFiles = []string{"/locks/lock"}
			mode.set(spec)
			sb, err := Build(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if free() {
				t.Error("no lock held while the sandbox lives")
			}
			sb.Close()
			if !free() {
				t.Error("the lock is still held once the sandbox is closed")
			}
		})
	}

	f, err := os.OpenFile(lock, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}); err != nil {
		t.Fatal(err)
	}
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: dir, Dest: "/locks"})
	spec.LockFiles = []string{"/locks/lock"}
	_, err = Build(ctx, spec)
	if err == nil || !strings.Contains(err.Error(), "lock file /locks/lock") || !(errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES)) {
		t.Errorf("a lock file locked elsewhere: %v, want the build to fail on it", err)
	}
}

// TestAssertNoUserNamespaces: Build fails unless the program cannot make a
// user namespace.
func TestAssertNoUserNamespaces(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.AssertNoUserNamespaces = true
	sb, err := Build(ctx, spec)
	if err != nil {
		t.Fatalf("with the default filter: %v", err)
	}
	sb.Close()
	spec.Seccomp.AllowUserNamespaces = true
	if sb, err := Build(ctx, spec); err == nil || !strings.Contains(err.Error(), "creation of new user namespaces was not disabled as requested") {
		if sb != nil {
			sb.Close()
		}
		t.Errorf("with user namespaces allowed: %v, want the assertion to fail", err)
	}
}

// TestEscapeOverlay: what overlayfs's option parsing takes as its own is
// escaped: "\" always, ":" in a list of layers.
func TestEscapeOverlay(t *testing.T) {
	if got, want := escapeOverlay(`a:b\c,d`, true), `a\:b\\c,d`; got != want {
		t.Errorf("in a list: %q, want %q", got, want)
	}
	if got, want := escapeOverlay(`a:b\c,d`, false), `a:b\\c,d`; got != want {
		t.Errorf("alone: %q, want %q", got, want)
	}
}

// TestLandlockOnlyRefusesNamespaceOptions: what needs namespaces of the
// sandbox's own is refused without them, not dropped unseen.
func TestLandlockOnlyRefusesNamespaceOptions(t *testing.T) {
	if _, err := LandlockABI(); err != nil {
		t.Skipf("no Landlock: %v", err)
	}
	self, err := os.Open("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	for want, set := range map[string]func(*Spec){
		"UserNS":     func(s *Spec) { s.UserNS = self },
		"lock files": func(s *Spec) { s.LockFiles = []string{"/l"} },
		"AssertNoUserNamespaces": func(s *Spec) {
			s.AssertNoUserNamespaces, s.Seccomp.AllowUserNamespaces = true, true
		},
	} {
		spec := &Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid(), Net: NetHost}
		set(spec)
		sb, err := Build(context.Background(), spec)
		if err == nil {
			sb.Close()
		}
		if !errors.Is(err, ErrUnenforceable) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it refused", want, err)
		}
	}
}
