package sandbox

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// BenchmarkSandboxTrue builds a fully isolated sandbox (user, mount, pid,
// net, ipc, uts namespaces; read-only /usr; /proc; /dev; tmpfs /tmp;
// seccomp; no_new_privs) and runs /bin/true in it, from a long-running Go
// program. Compare BenchmarkBwrapTrue (the same with bubblewrap) and
// BenchmarkOSExecTrue (no isolation). bench/sandbox.sh runs all three.
func BenchmarkSandboxTrue(b *testing.B) {
	ctx := context.Background()
	spec := baseSpec()
	for i := 0; i < b.N; i++ {
		h, err := Build(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		p, err := h.Exec(ctx, "/bin/true", []string{"true"})
		if err != nil {
			b.Fatal(err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			b.Fatal(st, err)
		}
		p.Close()
		h.Close()
	}
}

// BenchmarkTemplateTrue is BenchmarkSandboxTrue with the sandboxes built
// from a Template: the user and network namespaces and the root are made
// once; each sandbox gets new mount, pid, ipc, uts and cgroup namespaces,
// a fresh /proc, /tmp and /dev/shm, Landlock, seccomp.
func BenchmarkTemplateTrue(b *testing.B) { benchTemplate(b, false) }

// BenchmarkTemplatePID1True is BenchmarkTemplateTrue with the program as
// pid 1 of its namespace (AsPID1): no init of caplin's; compare
// BenchmarkBwrapPID1True (bwrap --as-pid-1).
func BenchmarkTemplatePID1True(b *testing.B) { benchTemplate(b, true) }

func benchTemplate(b *testing.B, pid1 bool) {
	ctx := context.Background()
	spec := baseSpec()
	spec.AsPID1 = pid1
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	defer tmpl.Close()
	for i := 0; i < b.N; i++ {
		sb, err := tmpl.NewSandbox(ctx, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		p, err := sb.Exec(ctx, "/bin/true", []string{"true"})
		if err != nil {
			b.Fatal(err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			b.Fatal(st, err)
		}
		p.Close()
		sb.Close()
	}
}

func BenchmarkBwrapTrue(b *testing.B) { benchBwrap(b) }

// BenchmarkBwrapPID1True is BenchmarkBwrapTrue with --as-pid-1.
func BenchmarkBwrapPID1True(b *testing.B) { benchBwrap(b, "--as-pid-1") }

func benchBwrap(b *testing.B, extra ...string) {
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		b.Skip("bubblewrap is not installed (apt-get install bubblewrap)")
	}
	args := append([]string{"--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"}, extra...)
	for _, d := range []string{"/bin", "/lib", "/lib64", "/sbin"} {
		if _, err := os.Stat(d); err == nil {
			args = append(args, "--ro-bind", d, d)
		}
	}
	args = append(args, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--new-session", "/bin/true")
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(bwrap, args...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

func BenchmarkOSExecTrue(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
