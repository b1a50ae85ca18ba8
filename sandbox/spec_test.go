package sandbox

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// run builds a sandbox from spec, runs sh -c script in it with stdout and
// stderr captured, and returns the output and exit code.
func run(t *testing.T, spec *Spec, script string) (string, int) {
	t.Helper()
	ctx := context.Background()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := *spec
	s.Files = map[int]*os.File{1: w, 2: w}
	for n, f := range spec.Files {
		s.Files[n] = f
	}
	if s.Env == nil {
		s.Env = []string{"PATH=/usr/bin:/bin"}
	}
	sb, err := Build(ctx, &s)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", script})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	st, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), st.ExitCode()
}

func baseSpec() *Spec {
	spec := &Spec{Mounts: []Mount{{Kind: ROBind, Source: "/usr", Dest: "/usr"}}}
	for _, d := range []string{"/bin", "/lib", "/lib64", "/sbin"} {
		if _, err := os.Stat(d); err == nil {
			spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: d, Dest: d})
		}
	}
	spec.Mounts = append(spec.Mounts, Mount{Kind: Proc, Dest: "/proc"}, Mount{Kind: Dev, Dest: "/dev"}, Mount{Kind: Tmpfs, Dest: "/tmp"})
	return spec
}

// TestBuildIsolates runs a shell in a sandbox and tries to reach what it
// was not given.
func TestBuildIsolates(t *testing.T) {
	testenv.AlsoAsNobody(t)
	secret := testenv.SharedTempDir(t)
	os.WriteFile(filepath.Join(secret, "s"), []byte("secret"), 0o644)
	spec := baseSpec()
	out, code := run(t, spec, `
echo uid=$(id -u)
grep '^CapEff' /proc/self/status
grep '^CapBnd' /proc/self/status
echo host=$(hostname)
echo pid=$$
ls / | tr '\n' ' '; echo
cat `+filepath.Join(secret, "s")+` 2>/dev/null && echo LEAK-secret
cat /etc/passwd 2>/dev/null && echo LEAK-etc
touch /usr/x 2>/dev/null && echo LEAK-usr-writable
touch /newfile 2>/dev/null && echo LEAK-root-writable
touch /tmp/ok && echo tmp-writable
for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline; echo; done | grep -c 'sandbox[.]test' | sed 's/^/outside-procs=/'
cat /proc/self/root/`+filepath.Join(secret, "s")+` 2>/dev/null && echo LEAK-proc-root
cd /; cd ../../..; ls | tr '\n' ' '; echo
ip link 2>/dev/null | grep -c UP | sed 's/^/up=/'
`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "LEAK") {
		t.Errorf("escape from the sandbox:\n%s", out)
	}
	for _, want := range []string{"uid=0", "host=caplin", "pid=2", "tmp-writable", "outside-procs=0\n", "up=0\n", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}

func TestBuildBadInput(t *testing.T) {
	ctx := context.Background()
	before := zombieCount()
	for _, spec := range []*Spec{
		{Mounts: []Mount{{Kind: ROBind, Source: "/no/such/dir", Dest: "/x"}}},
		{Mounts: []Mount{{Kind: Tmpfs, Dest: "relative"}}},
		{Mounts: []Mount{{Kind: MountKind(99), Dest: "/x"}}},
		{Seccomp: FilterPolicy{Deny: []string{"no_such_call"}}},
	} {
		h, err := Build(ctx, spec)
		if err == nil {
			h.Close()
			t.Errorf("Build(%+v) succeeded", spec)
			continue
		}
		if !strings.HasPrefix(err.Error(), "sandbox: ") {
			t.Errorf("error does not say where it comes from: %v", err)
		}
	}
	if after := zombieCount(); after > before {
		t.Errorf("zombies after failed builds: %d, before %d", after, before)
	}
}

// zombieCount counts zombie processes whose parent is this process or one
// of its children (proc's zygote): the ones a leak here would leave.
func zombieCount() int {
	type stat struct {
		state string
		ppid  int
	}
	all := map[int]stat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		all[pid] = stat{f[0], ppid}
	}
	me := os.Getpid()
	n := 0
	for _, st := range all {
		if st.state == "Z" && (st.ppid == me || all[st.ppid].ppid == me) {
			n++
		}
	}
	return n
}

// TestMountKinds builds a root with every kind of Mount and checks, from
// inside, what each one made.
func TestMountKinds(t *testing.T) {
	testenv.AlsoAsNobody(t)
	host := testenv.SharedTempDir(t)
	os.MkdirAll(filepath.Join(host, "tree", "hidden"), 0o755)
	os.WriteFile(filepath.Join(host, "tree", "hidden", "secret"), []byte("secret"), 0o644)
	os.WriteFile(filepath.Join(host, "tree", "visible"), []byte("visible"), 0o644)
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts,
		Mount{Kind: Bind, Source: filepath.Join(host, "tree"), Dest: "/tree"},
		Mount{Kind: Tmpfs, Dest: "/tree/hidden", Perms: Perms(0o700), Size: 1 << 20},
		Mount{Kind: ROBind, Source: "/no/such/path", Dest: "/opt/missing", Try: true},
		Mount{Kind: Symlink, Source: "usr/bin", Dest: "/sbin2"},
		Mount{Kind: Dir, Dest: "/a/b/c", Perms: Perms(0o711)},
		Mount{Kind: File, Dest: "/etc/motd", Data: []byte("hello\n"), Perms: Perms(0o640)},
		Mount{Kind: BindData, Dest: "/etc/rw", Data: []byte("rw-data\n")},
		Mount{Kind: ROBindData, Dest: "/etc/ro", Data: []byte("ro-data\n")},
		Mount{Kind: Chmod, Dest: "/a/b", Perms: Perms(0o700)},
		Mount{Kind: Mqueue, Dest: "/dev/mqueue"},
		Mount{Kind: Bind, Source: filepath.Join(host, "tree"), Dest: "/tree2"},
		Mount{Kind: RemountRO, Dest: "/tree2"},
	)
	out, code := run(t, spec, `
cat /tree/visible; echo
ls -A /tree/hidden | wc -l | sed 's/^ */hidden-entries=/'
stat -c 'hidden-mode=%a' /tree/hidden
grep ' /tree/hidden ' /proc/self/mounts | grep -o 'size=[0-9]*k' | sed 's/^/hidden-/'
test -e /opt/missing && echo LEAK-try || echo try-skipped
readlink /sbin2 | sed 's/^/link=/'
ls /sbin2/sh >/dev/null && echo link-works
stat -c 'c=%a' /a/b/c; stat -c 'b=%a' /a/b
cat /etc/motd; stat -c 'motd=%a' /etc/motd
echo more >> /etc/rw && cat /etc/rw
echo more >> /etc/ro 2>/dev/null && echo LEAK-ro-data-writable; cat /etc/ro
grep -q ' /dev/mqueue mqueue ' /proc/self/mounts && echo mqueue
touch /tree/new && echo tree-writable
touch /tree2/new2 2>/dev/null && echo LEAK-remount-ro-writable
touch /newfile 2>/dev/null && echo LEAK-root-writable
true`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "LEAK") {
		t.Errorf("a grant gave more than asked:\n%s", out)
	}
	for _, want := range []string{"visible\n", "hidden-entries=0\n", "hidden-mode=700\n", "hidden-size=1024k\n",
		"try-skipped\n", "link=usr/bin\n", "link-works\n", "c=711\n", "b=700\n", "hello\nmotd=640\n",
		"rw-data\nmore\n", "ro-data\n", "mqueue\n", "tree-writable\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(host, "tree", "new")); err != nil {
		t.Errorf("a file made in a writable bind is not on the host: %v", err)
	}
}

// TestSpecProcess checks the spec's process fields: fds, environment,
// working directory, pid 1, loopback network, writable root, kept
// capabilities.
func TestSpecProcess(t *testing.T) {
	testenv.AlsoAsNobody(t)
	extra, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	spec := baseSpec()
	spec.Files = map[int]*os.File{7: extra}
	spec.Env = []string{"PATH=/usr/bin:/bin", "ONLY=this"}
	spec.Dir = "/tmp"
	spec.AsPID1 = true
	spec.Net = NetLoopback
	spec.WritableRoot = true
	spec.Caps = []int{10} // CAP_NET_BIND_SERVICE
	out, code := run(t, spec, `
ls /proc/self/fd | tr '\n' ' '; echo
env | sort | tr '\n' ' '; echo
pwd
echo pid=$$
ip -o link show lo 2>/dev/null | grep -q 'UP' && echo lo-up
cat /sys/class/net/lo/operstate 2>/dev/null
touch /newfile && echo root-writable
grep '^CapBnd' /proc/self/status
`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"0 1 2 7 \n", "/tmp\n", "pid=1\n", "root-writable\n", "CapBnd:\t0000000000000400\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "ONLY=this PATH=/usr/bin:/bin PWD=/tmp SHLVL=1 _=/usr/bin/env \n") && !strings.Contains(out, "ONLY=this PATH=/usr/bin:/bin PWD=/tmp") {
		t.Errorf("environment is not exactly the spec's:\n%s", out)
	}
	if !strings.Contains(out, "lo-up") && !strings.Contains(out, "unknown\n") {
		t.Errorf("loopback is not up:\n%s", out)
	}
}

// TestLandlockOnly confines a shell without namespaces and checks what it
// reaches, and that what Landlock alone cannot do is refused.
func TestLandlockOnly(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if _, err := LandlockABI(); err != nil {
		t.Skip(err)
	}
	host := testenv.SharedTempDir(t)
	work := filepath.Join(host, "work")
	os.Mkdir(work, 0o777)
	os.WriteFile(filepath.Join(host, "secret"), []byte("secret"), 0o644)
	spec := &Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid(), Dir: work,
		Mounts: []Mount{{Kind: Bind, Source: work, Dest: work}, {Kind: Dev, Dest: "/dev"}}}
	for _, d := range []string{"/usr", "/bin", "/lib", "/lib64"} {
		spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: d, Dest: d, Try: true})
	}
	out, code := run(t, spec, `
cat `+filepath.Join(host, "secret")+` 2>/dev/null && echo LEAK-secret
ls / >/dev/null 2>&1 && echo LEAK-root-listable
touch /usr/x 2>/dev/null && echo LEAK-usr-writable
echo ok > out && cat out
echo devnull > /dev/null && echo dev-ok
python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM)' 2>/dev/null && echo LEAK-inet-socket
python3 -c 'import socket; socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); print("unix-ok")' 2>/dev/null
kill -0 1 2>/dev/null && echo LEAK-signal-init
true`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "LEAK") {
		t.Errorf("escape from a Landlock-only sandbox:\n%s", out)
	}
	for _, want := range []string{"ok\n", "dev-ok\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if _, err := os.Stat("/usr/bin/python3"); err == nil && !strings.Contains(out, "unix-ok\n") {
		t.Errorf("Unix sockets should work:\n%s", out)
	}
	// What needs namespaces is refused, naming it.
	for _, m := range []Mount{{Kind: Tmpfs, Dest: "/var/tmp"}, {Kind: ROBind, Source: "/usr", Dest: "/opt/usr"}, {Kind: Proc, Dest: "/mnt"}} {
		bad := &Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid(), Mounts: []Mount{m}}
		sb, err := Build(context.Background(), bad)
		if err == nil {
			sb.Close()
			t.Errorf("LandlockOnly with %v %s: no error", m.Kind, m.Dest)
		} else if le := (*LandlockOnlyError)(nil); !errors.Is(err, ErrUnenforceable) || !errors.As(err, &le) ||
			len(le.Cannot) != 1 || !strings.Contains(le.Cannot[0], m.Dest) {
			t.Errorf("LandlockOnly with %v %s: %v, want a LandlockOnlyError naming it", m.Kind, m.Dest, err)
		}
	}
}

// TestRelativeDir: a relative working directory is taken from the
// sandbox's root, never from the directory the sandbox's process
// started in (the caller's, in the host's file system).
func TestRelativeDir(t *testing.T) {
	for dir, want := range map[string]string{"..": "/", ".": "/", "tmp": "/tmp", "usr/../tmp": "/tmp"} {
		spec := baseSpec()
		spec.Dir = dir
		out, code := run(t, spec, `pwd -P`)
		if code != 0 || strings.TrimSpace(out) != want {
			t.Errorf("Dir %q: pwd -P said %q (status %d), want %s", dir, out, code, want)
		}
	}
}
