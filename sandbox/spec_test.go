package sandbox

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// run builds a sandbox from spec, runs sh -c script in it with stdout and
// stderr captured, and returns the output and exit code.
func run(t *testing.T, spec *Spec, script string) (string, int) {
	t.Helper()
	ctx := context.Background()
	h, err := Build(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r, w, _ := os.Pipe()
	defer r.Close()
	if _, err := h.PutFile(ctx, w, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := h.PutFile(ctx, w, 2); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p, err := h.ExecPath(ctx, "/bin/sh", []string{"sh", "-c", script}, []string{"PATH=/usr/bin:/bin"})
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
	for _, want := range []string{"uid=0", "host=caplin", "pid=1", "tmp-writable", "outside-procs=0\n", "up=0\n", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
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

// zombieCount counts zombie processes on the machine.
func zombieCount() int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i:]), ") Z") {
			n++
		}
	}
	return n
}

// TestBuildKeepCaps is the control for the capability check: with KeepCaps
// uid 0 inside has capabilities (in its own user namespace).
func TestBuildKeepCaps(t *testing.T) {
	spec := baseSpec()
	spec.KeepCaps = true
	out, code := run(t, spec, "grep '^CapEff' /proc/self/status")
	if code != 0 || strings.Contains(out, "0000000000000000") {
		t.Errorf("KeepCaps: %q (exit %d), want capabilities", out, code)
	}
}

// TestBuildLandlockLayer shows Landlock under the mounts: /dev is a
// writable tmpfs to the mount table, but its grant has no right to make
// directories, so mkdir there fails; /tmp's grant has it.
func TestBuildLandlockLayer(t *testing.T) {
	testenv.AlsoAsNobody(t)
	if _, err := LandlockABI(); err != nil {
		t.Skip(err)
	}
	out, code := run(t, baseSpec(), "mkdir /dev/x 2>&1; echo dev=$?; mkdir /tmp/x && echo tmp=$?")
	if code != 0 || !strings.Contains(out, "dev=1") || !strings.Contains(out, "Permission denied") || !strings.Contains(out, "tmp=0") {
		t.Errorf("mkdir under Landlock: exit %d\n%s", code, out)
	}
}
