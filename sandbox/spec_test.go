package sandbox

import (
	"context"
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
