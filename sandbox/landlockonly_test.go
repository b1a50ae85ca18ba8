package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/netgrant"
	"golang.org/x/sys/unix"
)

// landlockOnlySystem returns a LandlockOnly spec with SystemMounts' grants
// and extra ones after them.
func landlockOnlySystem(extra ...Mount) *Spec {
	return &Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid(),
		Mounts: append(SystemMounts(), extra...), Env: []string{"PATH=/usr/bin:/bin"}}
}

// standInsIn returns the stand-in directories left in dir.
func standInsIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), standInPrefix) {
			left = append(left, e.Name())
		}
	}
	return left
}

// privateTempDir points os.TempDir at a directory of the test's own, which
// the user running it can write to, and returns it.
func privateTempDir(t *testing.T) string {
	dir := testenv.SharedTempDir(t)
	t.Setenv("TMPDIR", dir)
	return dir
}

// TestLandlockOnlySystem runs a shell in a LandlockOnly sandbox of
// SystemMounts: its tmpfs at /tmp is a private directory that TMPDIR and
// a working directory of /tmp lead to, removed when the sandbox closes
// with everything in it (directories the program made unwritable too);
// /proc is the host's, read-only; the host's /tmp is not granted.
func TestLandlockOnlySystem(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if _, err := LandlockABI(); err != nil {
		t.Skip(err)
	}
	tmp := privateTempDir(t)
	secret := filepath.Join(tmp, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := landlockOnlySystem()
	spec.Dir = "/tmp"
	out, code := run(t, spec, `
echo TMPDIR=$TMPDIR
echo PWD=$(pwd)
echo data > $TMPDIR/f && cat $TMPDIR/f
mkdir -p $TMPDIR/d/e && touch $TMPDIR/d/e/g && chmod 500 $TMPDIR/d/e $TMPDIR/d && chmod 500 $TMPDIR
ln -s `+secret+` $TMPDIR/link
cat $TMPDIR/link 2>/dev/null && echo LEAK-through-link
grep -q '^Pid:' /proc/self/status && echo proc-ok
grep -q '^Pid:' /proc/1/status && echo host-proc
cat /proc/1/environ >/dev/null 2>&1 && echo LEAK-environ
readlink /proc/1/root >/dev/null 2>&1 && echo LEAK-root
{ echo x > /proc/self/comm; } 2>/dev/null && echo LEAK-proc-writable
ls /tmp >/dev/null 2>&1 && echo LEAK-host-tmp
cat `+secret+` 2>/dev/null && echo LEAK-secret
ls /usr/bin | grep -qx sh && echo usr-ok
true`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "LEAK") {
		t.Errorf("escape from a Landlock-only sandbox:\n%s", out)
	}
	var dir string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "TMPDIR="); ok {
			dir = v
		}
	}
	if filepath.Dir(dir) != tmp || !strings.HasPrefix(filepath.Base(dir), standInPrefix) {
		t.Fatalf("TMPDIR is %q, want a stand-in in %s:\n%s", dir, tmp, out)
	}
	for _, want := range []string{"PWD=" + dir + "\n", "data\n", "proc-ok\n", "host-proc\n", "usr-ok\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if left := standInsIn(t, tmp); len(left) != 0 {
		t.Errorf("stand-ins left after Close: %v", left)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("the link's target went with the stand-in: %v", err)
	}
}

// TestLandlockOnlyStandInRemoved checks that the stand-in goes whatever
// way the sandbox ends: Kill, Close, and a Build that fails after making
// it; and that it is the program's TMPDIR only where that was /tmp or unset.
func TestLandlockOnlyStandInRemoved(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if _, err := LandlockABI(); err != nil {
		t.Skip(err)
	}
	tmp := privateTempDir(t)
	ctx := context.Background()

	sb, err := Build(ctx, landlockOnlySystem())
	if err != nil {
		t.Fatal(err)
	}
	if len(sb.standIns) != 1 {
		t.Fatalf("%d stand-ins, want 1", len(sb.standIns))
	}
	if !slices.Contains(sb.spec.Env, "TMPDIR="+sb.standIns[0].path) {
		t.Errorf("env %q: no TMPDIR=%s", sb.spec.Env, sb.standIns[0].path)
	}
	want := []string{"/proc is the host's read-only", "/dev has only its basic device nodes", "/tmp is a private directory ($TMPDIR)"}
	if netgrant.HostSupported() == nil {
		want = append([]string{"abstract Unix sockets are refused, its own too"}, want...)
	}
	if d := sb.Differences(); !slices.Equal(d, want) {
		t.Errorf("Differences() = %q, want %q", d, want)
	}
	p, err := sb.Exec(ctx, "sleep", []string{"sleep", "60"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	if left := standInsIn(t, tmp); len(left) != 0 {
		t.Errorf("stand-ins left after Kill: %v", left)
	}
	p.Wait(ctx)
	p.Close()
	if err := sb.Close(); err != nil {
		t.Errorf("Close after Kill: %v", err)
	}

	// A working directory that is not there fails the build once the
	// stand-in is made.
	bad := landlockOnlySystem()
	bad.Dir = filepath.Join(tmp, "missing")
	if sb, err := Build(ctx, bad); err == nil {
		sb.Close()
		t.Error("Build with a missing working directory: no error")
	} else if !errors.Is(err, unix.ENOENT) {
		t.Errorf("Build with a missing working directory: %v, want ENOENT", err)
	}
	if left := standInsIn(t, tmp); len(left) != 0 {
		t.Errorf("stand-ins left after a failed Build: %v", left)
	}

	// A TMPDIR of the spec's own elsewhere is kept; /tmp is replaced.
	for _, c := range []struct{ env, want string }{{"/var/tmp", "/var/tmp"}, {"/tmp", ""}} {
		spec := landlockOnlySystem()
		spec.Env = append(spec.Env, "TMPDIR="+c.env)
		sb, err := Build(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		want := c.want
		if want == "" {
			want = sb.standIns[0].path
		}
		var got []string
		for _, kv := range sb.spec.Env {
			if v, ok := strings.CutPrefix(kv, "TMPDIR="); ok {
				got = append(got, v)
			}
		}
		if !slices.Equal(got, []string{want}) {
			t.Errorf("spec TMPDIR=%s: program's TMPDIR %q, want %s", c.env, got, want)
		}
		sb.Close()
	}
	if left := standInsIn(t, tmp); len(left) != 0 {
		t.Errorf("stand-ins left: %v", left)
	}
}

// TestLandlockOnlyOverlaps checks what a LandlockOnly spec grants and
// refuses where its mounts cover each other, as Landlock rules only add
// up: no grant may show more than the namespaced sandbox would.
func TestLandlockOnlyOverlaps(t *testing.T) {
	work := t.TempDir()
	sub := filepath.Join(work, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		mounts []Mount
		cannot string   // in the one thing refused; "" none
		grants []string // the paths granted, in order
	}{
		{"system", SystemMounts(), "", nil},
		{"a read-only root", []Mount{{Kind: ROBind, Source: "/", Dest: "/"}}, "mount 1 (ro-bind / /): would open the host's devices in /dev", nil},
		{"a read-only /dev", []Mount{{Kind: ROBind, Source: "/dev", Dest: "/dev"}}, "would open the host's devices", nil},
		{"a device", []Mount{{Kind: Bind, Source: "/dev/null", Dest: "/dev/null"}}, "would open the host's devices", nil},
		{"a device with device access", []Mount{{Kind: DevBind, Source: "/dev/null", Dest: "/dev/null"}}, "", []string{"/dev/null"}},
		{"proc under a root with devices", []Mount{{Kind: DevBind, Source: "/", Dest: "/"}, {Kind: Proc, Dest: "/proc"}}, "mount 1 (dev-bind / /) grants more there", nil},
		{"proc under a read-only /usr", []Mount{{Kind: ROBind, Source: "/usr", Dest: "/usr"}, {Kind: Proc, Dest: "/usr/proc"}}, "a proc elsewhere than /proc", nil},
		{"tmpfs under a root with devices", []Mount{{Kind: DevBind, Source: "/", Dest: "/"}, {Kind: Tmpfs, Dest: "/tmp"}}, "mount 1 (dev-bind / /) grants the host's /tmp", nil},
		{"dev under a root with devices", []Mount{{Kind: DevBind, Source: "/", Dest: "/"}, {Kind: Dev, Dest: "/dev"}}, "grants the host's /dev", nil},
		{"proc under a read-only tree", []Mount{{Kind: ROBind, Source: work, Dest: work}, {Kind: Proc, Dest: "/proc"}}, "", []string{work, "/proc"}},
		{"tmpfs under a read-only tree", []Mount{{Kind: ROBind, Source: work, Dest: work}, {Kind: Tmpfs, Dest: sub}}, "only a tmpfs at /tmp", nil},
		{"read-only inside writable", []Mount{{Kind: Bind, Source: work, Dest: work}, {Kind: ROBind, Source: sub, Dest: sub}}, "grants more there", nil},
		{"writable inside read-only", []Mount{{Kind: ROBind, Source: work, Dest: work}, {Kind: Bind, Source: sub, Dest: sub}}, "", []string{work, sub}},
		{"a later bind hides an earlier one", []Mount{{Kind: Bind, Source: sub, Dest: sub}, {Kind: ROBind, Source: work, Dest: work}}, "", []string{work}},
		{"a later tmpfs hides a bind", []Mount{{Kind: Bind, Source: "/tmp", Dest: "/tmp"}, {Kind: Tmpfs, Dest: "/tmp"}}, "", []string{"a private directory for /tmp"}},
		{"a bind hides the tmpfs", []Mount{{Kind: Tmpfs, Dest: "/tmp"}, {Kind: ROBind, Source: "/tmp", Dest: "/tmp"}}, "", []string{"/tmp"}},
		{"a bind inside the tmpfs", []Mount{{Kind: Tmpfs, Dest: "/tmp"}, {Kind: Bind, Source: work, Dest: work}}, "", nil},
		{"tmpfs elsewhere", []Mount{{Kind: Tmpfs, Dest: "/var/tmp"}}, "only a tmpfs at /tmp has a stand-in", nil},
		{"tmpfs with a size", []Mount{{Kind: Tmpfs, Dest: "/tmp", Size: 1 << 20}}, "a size limit needs a tmpfs", nil},
		{"proc elsewhere", []Mount{{Kind: Proc, Dest: "/mnt"}}, "a proc elsewhere than /proc", nil},
		{"dev elsewhere", []Mount{{Kind: Dev, Dest: "/srv/x"}}, "a dev elsewhere than /dev", nil},
	} {
		spec := &Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid(), Mounts: c.mounts}
		p, err := landlockOnlyPolicy(spec, 6)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		switch {
		case c.cannot == "" && len(p.cannot) > 0:
			t.Errorf("%s: refused %q", c.name, p.cannot)
		case c.cannot != "" && (len(p.cannot) != 1 || !strings.Contains(p.cannot[0], c.cannot)):
			t.Errorf("%s: refused %q, want one thing saying %q", c.name, p.cannot, c.cannot)
		}
		if c.grants != nil {
			var got []string
			for _, g := range p.ll.Paths {
				got = append(got, g.Path)
			}
			if !slices.Equal(got, c.grants) {
				t.Errorf("%s: grants %q, want %q", c.name, got, c.grants)
			}
		}
	}
}

// TestLandlockOnlyManyMounts checks that the overlap checks stay cheap
// for a command line with a thousand binds.
func TestLandlockOnlyManyMounts(t *testing.T) {
	spec := landlockOnlySystem()
	for range 1000 {
		spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: "/usr/bin", Dest: "/usr/bin"})
	}
	start := time.Now()
	p, err := landlockOnlyPolicy(spec, 6)
	if err != nil || len(p.cannot) > 0 {
		t.Fatalf("%v %q", err, p.cannot)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("planning 1000 binds took %v", d)
	}
}

// TestStandInOwner checks that a stand-in made for another user, as root
// can, is that user's, and goes all the same.
func TestStandInOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	tmp := privateTempDir(t)
	si, err := newStandIn(65534, 65534)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(si.path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Gid != 65534 || st.Mode&0o7777 != 0o700 {
		t.Errorf("stand-in owned by %d:%d mode %o, want 65534:65534 700", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if err := si.remove(); err != nil {
		t.Fatal(err)
	}
	if left := standInsIn(t, tmp); len(left) != 0 {
		t.Errorf("stand-ins left: %v", left)
	}
}

// TestOnlyNewerLandlock: what an older Landlock ABI alone cannot enforce
// is told apart from what needs namespaces, for caplin run's fallback.
func TestOnlyNewerLandlock(t *testing.T) {
	for _, c := range []struct {
		name   string
		mounts []Mount
		abi    int
		want   bool
	}{
		{"ABI 4, nothing else", nil, 4, true},
		{"ABI 4 and a tmpfs elsewhere", []Mount{{Kind: Tmpfs, Dest: "/var/tmp"}}, 4, false},
		{"ABI 6, a tmpfs elsewhere", []Mount{{Kind: Tmpfs, Dest: "/var/tmp"}}, 6, false},
	} {
		spec := &Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid(), Mounts: c.mounts}
		p, err := landlockOnlyPolicy(spec, c.abi)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		e := &LandlockOnlyError{Cannot: p.cannot, newerLandlock: p.newerLandlock}
		if got := e.OnlyNewerLandlock(); got != c.want {
			t.Errorf("%s: OnlyNewerLandlock() = %v (%q), want %v", c.name, got, p.cannot, c.want)
		}
	}
}
