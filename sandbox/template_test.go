package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// TestTemplate builds sandboxes from one template and checks that what
// each gets afresh is its own: /tmp, /dev/shm, /dev/pts, data binds, /proc and the
// pid namespace, the IPC namespace; and that the fds and environment are
// each one's.
func TestTemplate(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: BindData, Dest: "/etc/data", Data: []byte("fresh\n")})
	spec.Env = []string{"PATH=/usr/bin:/bin", "FROM=template"}
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	script := `
ls -A /tmp /dev/shm | tr '\n' ' '; echo
cat /etc/data
echo $$ $FROM
ls /dev/pts | tr '\n' ' ' | sed 's/^/pts=/'; echo
exec 3<>/dev/ptmx
for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline; echo; done | grep -c '^sleep 1000 $' | sed 's/^/sleepers=/'
sleep 1000 >/dev/null 2>&1 &
sleep 0.05
for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 1000 $' | sed 's/^/own-sleepers=/'
ipcs -m 2>/dev/null | grep -c '^0x' | sed 's/^/shm=/'
echo x > /tmp/left; echo x > /dev/shm/left; echo changed > /etc/data
ipcmk -M 4096 >/dev/null 2>&1
`
	var ns []map[string]uint64
	for i, env := range [][]string{nil, {"PATH=/usr/bin:/bin", "FROM=run"}} {
		r, w, _ := os.Pipe()
		sb, err := tmpl.NewSandbox(ctx, map[int]*os.File{1: w, 2: w}, env)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		p, err := sb.Exec(ctx, "sh", []string{"sh", "-c", script})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(r)
		r.Close()
		st, err := p.Wait(ctx)
		if err != nil || st.ExitCode() != 0 {
			t.Fatalf("sandbox %d: %v %v:\n%s", i, st, err, out)
		}
		ns = append(ns, sb.Namespaces())
		defer sb.Close() // alive until the end, so no namespace number is reused
		from := "template"
		if env != nil {
			from = "run"
		}
		// The sleep an earlier sandbox left running is not in this one's
		// /proc.
		for _, want := range []string{" \nfresh\n", "2 " + from + "\n", "sleepers=0\n", "own-sleepers=1\n", "pts=ptmx \n"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("sandbox %d: want %q in:\n%s", i, want, out)
			}
		}
		if strings.Contains(string(out), "shm=1") {
			t.Errorf("sandbox %d sees the shared memory of an earlier one:\n%s", i, out)
		}
	}
	for _, name := range []string{"mnt", "pid", "ipc"} {
		if ns[0][name] == ns[1][name] || ns[0][name] == 0 {
			t.Errorf("two sandboxes of a template share the %s namespace %d", name, ns[0][name])
		}
	}
	if ns[0]["net"] != ns[1]["net"] || ns[0]["user"] != ns[1]["user"] || ns[0]["uts"] != ns[1]["uts"] {
		t.Errorf("the user, net and uts namespaces are the template's: %v, %v", ns[0], ns[1])
	}
}

// TestTemplateRefusesShared: a template whose sandboxes could change what
// they all share is refused, with the field named: a writable root (one
// tmpfs for all), KeepCaps, CAP_SYS_ADMIN (the UTS namespace's hostname),
// and CAP_NET_ADMIN or CAP_NET_RAW over the template's own network. The
// network capabilities with the host's network (where the sandboxes'
// user namespace gives no power) and harmless ones are accepted.
func TestTemplateRefusesShared(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		spec Spec
		want string // "" to accept
	}{
		{Spec{WritableRoot: true}, "Spec.WritableRoot"},
		{Spec{SharePID: true}, "Spec.SharePID"},
		{Spec{KeepCaps: true}, "Spec.KeepCaps"},
		{Spec{Caps: []int{unix.CAP_SYS_ADMIN}}, "CAP_SYS_ADMIN"},
		{Spec{Caps: []int{unix.CAP_SYS_ADMIN}, Net: NetHost, ShareUTS: true}, "CAP_SYS_ADMIN"},
		{Spec{Caps: []int{unix.CAP_NET_ADMIN}}, "CAP_NET_ADMIN"},
		{Spec{Caps: []int{unix.CAP_CHOWN, unix.CAP_NET_RAW}, Net: NetLoopback}, "CAP_NET_RAW"},
		{Spec{Caps: []int{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW}, Net: NetHost}, ""},
		{Spec{Caps: []int{unix.CAP_NET_BIND_SERVICE, unix.CAP_CHOWN}}, ""},
	} {
		tmpl, err := NewTemplate(ctx, &c.spec)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.spec, err)
		case c.want != "" && err == nil:
			t.Errorf("%+v: made a template, want an error naming %s", c.spec, c.want)
		case c.want != "" && !strings.Contains(err.Error(), c.want):
			t.Errorf("%+v: %v, want an error naming %s", c.spec, err, c.want)
		}
		if tmpl != nil {
			tmpl.Close()
		}
	}
}

// TestEscapeTemplateShared: a sandbox of a template (uid 0 inside, no
// capabilities) tries to change what the template's sandboxes share: the
// hostname (sethostname, /proc/sys), the root directory, the loopback
// interface; each attempt must fail, and a sandbox built after it must see
// none of it. The control: a sandbox built alone, with the writable root
// and the capabilities a template refuses, makes each change (in
// namespaces of its own).
func TestEscapeTemplateShared(t *testing.T) {
	testenv.AlsoAsNobody(t)
	spec := probeSpec(t)
	spec.Net = NetLoopback

	ctl := *spec
	ctl.WritableRoot = true
	ctl.Caps = []int{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN}
	c := runIn(t, &ctl, "shared", nil, "CHANGE=1")
	c.where = "alone, with a writable root, CAP_SYS_ADMIN and CAP_NET_ADMIN (control)"
	for _, k := range []string{"sethostname", "rootfile", "lodown"} {
		c.want(t, k, "ok")
	}
	c.want(t, "hostname", "escaped")
	c.want(t, "loup", "false")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	a := runInTemplate(t, tmpl, "in the first sandbox", "shared", "CHANGE=1")
	for _, k := range []string{"sethostname", "prochostname", "rootfile", "lodown"} {
		a.want(t, k, denied...)
	}
	b := runInTemplate(t, tmpl, "in the next sandbox", "shared")
	b.want(t, "hostname", "caplin")
	b.want(t, "shared", "ENOENT")
	b.want(t, "loup", "true")
}

// TestTemplateSpawnsProgram: a template's sandbox under caplin's init
// makes the program's process only at Exec, spawned from the init and
// confined in the same round trip. It must be as confined as a forked
// one, find programs along PATH past missing directories, survive a
// failed exec, and still give a Handle (forked then) to who asks.
func TestTemplateSpawnsProgram(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.Env = []string{"PATH=/nonexistent:/usr/nonexistent/bin:/usr/bin:/bin"}
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()

	r, w, _ := os.Pipe()
	sb, err := tmpl.NewSandbox(ctx, map[int]*os.File{1: w}, nil)
	w.Close() // Build keeps its own copy until Exec
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if sb.Pid() != 0 {
		t.Errorf("Pid before Exec = %d, want 0: the program's process is made by Exec", sb.Pid())
	}
	if _, err := sb.Exec(ctx, "no-such-program", []string{"x"}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("exec of a missing program: %v, want ENOENT", err)
	}
	p, err := sb.Exec(ctx, "sh", []string{"sh", "-c", `grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd)' /proc/self/status; echo pid=$$ ppid=$PPID; ls /proc/self/fd`})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	r.Close()
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatalf("%v %v:\n%s", st, err, out)
	}
	for _, want := range []string{"NoNewPrivs:\t1\n", "Seccomp:\t2\n", "CapEff:\t0000000000000000\n", "CapBnd:\t0000000000000000\n", "pid=2 ppid=1\n0\n1\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if _, err := sb.Exec(ctx, "/bin/true", []string{"true"}); !errors.Is(err, proc.ErrExeced) {
		t.Errorf("a second Exec: %v, want ErrExeced", err)
	}
	if strings.Contains(string(out), "\n2\n") {
		t.Errorf("the program has more fds than it was given (1, and 0 for ls's directory):\n%s", out)
	}

	// Handle makes the process first, by a fork; Exec then execs it.
	sb2, err := tmpl.NewSandbox(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	h := sb2.Handle()
	if h == nil || sb2.Pid() <= 0 {
		t.Fatalf("Handle of a template's sandbox: %v, pid %d: %v", h, sb2.Pid(), sb2.matErr)
	}
	if pid, err := h.Getpid(ctx); err != nil || pid != 2 {
		t.Errorf("the program's process made by Handle: pid %d %v, want 2", pid, err)
	}
	p2, err := sb2.Exec(ctx, "/bin/sh", []string{"sh", "-c", "exit 4"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p2.Wait(ctx); err != nil || st.ExitCode() != 4 {
		t.Errorf("exec after Handle: %v %v, want exit 4", st, err)
	}
}

// templateShell makes a template of spec, runs sh -c script in a sandbox
// of it with stdout and stderr captured, and returns the output and how
// the shell ended.
func templateShell(t *testing.T, spec *Spec, script string) (string, *pidfd.State) {
	t.Helper()
	ctx := context.Background()
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	r, w, _ := os.Pipe()
	defer r.Close()
	sb, err := tmpl.NewSandbox(ctx, map[int]*os.File{1: w, 2: w}, nil)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", script})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, _ := io.ReadAll(r)
	st, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), st
}

// TestTemplateSpawnKeepsOwnFilter: a spec whose seccomp policy denies more
// than the default keeps its filter on the program alone (the init, which
// still spawns, does not take it on), and the program is refused what it
// denies.
func TestTemplateSpawnKeepsOwnFilter(t *testing.T) {
	testenv.AlsoAsNobody(t)
	spec := baseSpec()
	spec.Seccomp.Deny = []string{"chmod", "fchmodat", "fchmodat2", "setsid"}
	spec.SameSession = false
	out, _ := templateShell(t, spec, `touch /tmp/f; chmod 600 /tmp/f && echo CHMOD-ALLOWED; grep ^Seccomp: /proc/self/status`)
	if strings.Contains(out, "CHMOD-ALLOWED") || !strings.Contains(out, "Seccomp:\t2") {
		t.Errorf("a program whose spec denies chmod:\n%s", out)
	}
}

// TestTemplateSpawnSetup: everything a program's setup does when Exec
// spawns it from a template's init (fds, session, rlimits, capabilities
// kept as ambient ones for a uid other than 0, no_new_privs, a seccomp
// filter of the spec's own) is on the list of what a spawn's setup may
// do, and takes effect.
func TestTemplateSpawnSetup(t *testing.T) {
	testenv.AlsoAsNobody(t)
	spec := baseSpec()
	spec.UID, spec.GID = 1000, 1000
	spec.Caps = []int{unix.CAP_NET_BIND_SERVICE}
	spec.Limits.NoFile = 64
	spec.Seccomp.Deny = []string{"chmod"}
	out, st := templateShell(t, spec, `grep -E '^(NoNewPrivs|Seccomp|CapAmb|Uid)' /proc/self/status; ulimit -n`)
	if !st.Success() {
		t.Fatalf("%v:\n%s", st, out)
	}
	for _, want := range []string{"NoNewPrivs:\t1\n", "Seccomp:\t2\n", "CapAmb:\t0000000000000400\n", "Uid:\t1000\t1000\t1000\t1000\n", "\n64\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}

// TestTemplateWithoutProc: a template whose sandboxes have no /proc
// makes them (their namespaces are looked up from outside), and says
// which namespaces each has.
func TestTemplateWithoutProc(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := &Spec{Mounts: []Mount{
		{Kind: ROBind, Source: "/usr", Dest: "/usr"},
		{Kind: Symlink, Source: "usr/bin", Dest: "/bin"},
		{Kind: Symlink, Source: "usr/lib", Dest: "/lib"},
		{Kind: Symlink, Source: "usr/lib64", Dest: "/lib64"},
	}}
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	sb, err := tmpl.NewSandbox(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/bin/sleep", []string{"sleep", "100"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var mnt unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", p.Pid()), &mnt); err != nil {
		t.Fatal(err)
	}
	if got := sb.Namespaces()["mnt"]; got != mnt.Ino {
		t.Errorf("the sandbox's mount namespace is %d, its program's %d", got, mnt.Ino)
	}
}

// TestTemplateRefillsAfterStart checks when a template makes its next
// sandbox ahead: not while the one handed over starts its program, but
// once Exec has started it (or the sandbox is closed without a program).
func TestTemplateRefillsAfterStart(t *testing.T) {
	ctx := context.Background()
	tmpl, err := NewTemplate(ctx, baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	making := func() bool {
		tmpl.mu.Lock()
		defer tmpl.mu.Unlock()
		return tmpl.spare != nil
	}
	if !making() {
		t.Fatal("NewTemplate made no sandbox ahead")
	}
	sb, err := tmpl.NewSandbox(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if making() {
		t.Fatal("a sandbox is being made ahead while the one handed over has no program yet")
	}
	p, err := sb.Exec(ctx, "/bin/true", []string{"true"})
	if err != nil {
		t.Fatal(err)
	}
	if !making() {
		t.Error("no sandbox made ahead once the program started")
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// One closed without a program lets the next be made too.
	sb2, err := tmpl.NewSandbox(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if making() {
		t.Fatal("a sandbox is being made ahead while the one handed over has no program yet")
	}
	sb2.Close()
	if !making() {
		t.Error("no sandbox made ahead once the one handed over was closed")
	}
}

// TestTemplateDevRenewedUnderBinds: a mount elsewhere under /dev (a bind
// of a device directory, say) leaves each sandbox its own /dev/shm and
// /dev/pts: only a mount inside those would stop their renewal.
func TestTemplateDevRenewedUnderBinds(t *testing.T) {
	ctx := context.Background()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: "/usr/share", Dest: "/dev/extra"})
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	var outs []string
	for i := range 2 {
		r, w, _ := os.Pipe()
		sb, err := tmpl.NewSandbox(ctx, map[int]*os.File{1: w, 2: w}, []string{"PATH=/usr/bin:/bin"})
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		p, err := sb.Exec(ctx, "sh", []string{"sh", "-c", `ls -A /dev/shm | tr '\n' ' '; echo; stat -c %d /dev/pts; echo x > /dev/shm/left`})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(r)
		r.Close()
		if st, err := p.Wait(ctx); err != nil || st.ExitCode() != 0 {
			t.Fatalf("sandbox %d: %v %v:\n%s", i, st, err, out)
		}
		outs = append(outs, string(out))
	}
	if !strings.HasPrefix(outs[1], " \n") && !strings.HasPrefix(outs[1], "\n") {
		t.Errorf("the second sandbox sees the first's /dev/shm:\n%s", outs[1])
	}
	if l0, l1 := strings.Split(outs[0], "\n"), strings.Split(outs[1], "\n"); len(l0) > 1 && len(l1) > 1 && l0[1] == l1[1] {
		t.Errorf("the two sandboxes share one devpts (device %s)", l0[1])
	}
}
