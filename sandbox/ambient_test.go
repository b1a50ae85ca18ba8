package sandbox

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// envAmbient marks the re-run of TestLandlockOnlyDropsAmbientCaps that
// has an ambient capability.
const envAmbient = "CAPLIN_TEST_AMBIENT"

// capLines returns the Cap* lines of a /proc/PID/status.
func capLines(status string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.HasPrefix(k, "Cap") {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// TestLandlockOnlyDropsAmbientCaps runs, as uid 65534 with the ambient
// capability CAP_NET_BIND_SERVICE (as a service unit's
// AmbientCapabilities= would give it), a Landlock-only sandbox, and checks
// that the program has no capability at all: exec would otherwise pass
// the ambient one on.
func TestLandlockOnlyDropsAmbientCaps(t *testing.T) {
	if os.Getenv(envAmbient) == "" {
		if os.Getuid() != 0 {
			t.Skip("only root can start a process with an ambient capability")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := testenv.NobodyCommand(ctx, t, "TestLandlockOnlyDropsAmbientCaps")
		cmd.Env = append(cmd.Env, envAmbient+"=1")
		cmd.SysProcAttr.AmbientCaps = []uintptr{unix.CAP_NET_BIND_SERVICE}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestLandlockOnlyDropsAmbientCaps") {
			t.Fatalf("with an ambient capability: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "--- SKIP") {
			t.Skipf("%s", out)
		}
		return
	}
	if _, err := LandlockABI(); err != nil {
		t.Skip(err)
	}
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if c := capLines(string(self)); c["CapAmb"] == "0000000000000000" || c["CapAmb"] == "" {
		t.Fatalf("the control has no ambient capability: %v", c)
	}
	spec := &Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid()}
	for _, d := range []string{"/usr", "/bin", "/lib", "/lib64", "/proc"} {
		spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: d, Dest: d, Try: true})
	}
	out, code := run(t, spec, `grep ^Cap /proc/self/status`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	caps := capLines(out)
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
		if caps[k] != "0000000000000000" {
			t.Errorf("%s = %q in the sandbox; want none:\n%s", k, caps[k], out)
		}
	}
}
