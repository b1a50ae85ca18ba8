package sandbox

import (
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestAllowMounts builds a sandbox inside a sandbox: with
// AllowUserNamespaces and AllowMounts the program makes a user and a mount
// namespace of its own and mounts a tmpfs there. What the outer sandbox
// covers stays covered: the nested namespace's copies of its mounts are
// locked together, so the read-only cover of /proc/sys cannot be
// unmounted, and core_pattern stays unwritable. In the sandbox's own
// namespaces the program, holding no capability there, cannot mount. The
// control: without AllowMounts the nested mount is refused.
func TestAllowMounts(t *testing.T) {
	testenv.AlsoAsNobody(t)
	const script = `
unshare -Urm sh -c '
  mount -t tmpfs none /tmp && echo nested-mount
  umount /proc/sys 2>/dev/null && echo LEAK-uncovered
  echo x 2>/dev/null > /proc/sys/kernel/core_pattern && echo LEAK-core-pattern
  umount -l /usr 2>/dev/null && echo LEAK-usr-unmounted
  true'
mount -t tmpfs none /tmp 2>/dev/null && echo LEAK-outer-mount
true`
	spec := baseSpec()
	// Not uid 0 inside: the kernel lets a process that holds no
	// CAP_SETFCAP map its parent namespace's uid 0 in a namespace of its
	// own only if it had that capability when it made it.
	spec.UID, spec.GID = 1000, 1000
	spec.Seccomp.AllowUserNamespaces = true
	spec.Seccomp.AllowMounts = true
	out, code := run(t, spec, script)
	if code != 0 || !strings.Contains(out, "nested-mount\n") || strings.Contains(out, "LEAK") {
		t.Errorf("with AllowMounts: exit %d:\n%s", code, out)
	}

	spec.Seccomp.AllowMounts = false
	out, _ = run(t, spec, script)
	if strings.Contains(out, "nested-mount") || strings.Contains(out, "LEAK") {
		t.Errorf("control, without AllowMounts:\n%s", out)
	}
}

// TestInheritCaps checks that InheritCaps puts Caps in the inheritable set
// of a program of uid 0, and that it is empty otherwise.
func TestInheritCaps(t *testing.T) {
	testenv.AlsoAsNobody(t)
	for _, inherit := range []bool{false, true} {
		spec := baseSpec()
		spec.Caps, spec.InheritCaps = []int{unix.CAP_CHOWN, unix.CAP_KILL}, inherit
		out, code := run(t, spec, `grep -E '^Cap(Inh|Eff):' /proc/self/status`)
		want := "CapInh:\t0000000000000000\nCapEff:\t0000000000000021\n"
		if inherit {
			want = "CapInh:\t0000000000000021\nCapEff:\t0000000000000021\n"
		}
		if code != 0 || out != want {
			t.Errorf("InheritCaps %v: exit %d\n%s\nwant\n%s", inherit, code, out, want)
		}
	}
}
