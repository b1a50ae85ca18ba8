package probe

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestProbes runs every probe: each returns, names its feature, says what
// it found in one line, and says what caplin does without the feature.
func TestProbes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seen := map[string]bool{}
	for _, p := range Probes() {
		r := p(ctx)
		t.Logf("%-30s ok=%-5v %s", r.Name, r.OK, r.Detail)
		if r.Name == "" {
			t.Errorf("a probe returned no name: %+v", r)
		}
		if seen[r.Name] {
			t.Errorf("two probes are named %q", r.Name)
		}
		seen[r.Name] = true
		if strings.TrimSpace(r.Detail) == "" {
			t.Errorf("%s: empty Detail", r.Name)
		}
		if strings.Contains(r.Detail, "\n") {
			t.Errorf("%s: Detail is more than one line: %q", r.Name, r.Detail)
		}
		if r.MinKernel == "" {
			t.Errorf("%s: empty MinKernel", r.Name)
		}
		if r.Without == "" {
			t.Errorf("%s: empty Without", r.Name)
		}
	}
	if n := len(All(ctx)); n != len(Probes()) {
		t.Errorf("All returned %d results for %d probes", n, len(Probes()))
	}
}

// TestProbesLeakNothing checks that probes close the fds they open. proc
// keeps a few fds that come and go (its zygotes, a spare child made in the
// background), so the test runs the probes many times: a leak grows with
// the runs, proc's fds do not.
func TestProbesLeakNothing(t *testing.T) {
	ctx := context.Background()
	All(ctx) // the first run starts proc's zygotes
	const runs = 20
	before := countFDs(t)
	for range runs {
		All(ctx)
	}
	if after := countFDs(t); after-before >= runs/2 {
		t.Errorf("open fds: %d before %d runs of the probes, %d after", before, runs, after)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestKernelSupported checks the probe against the kernel these tests
// run on, which caplin supports.
func TestKernelSupported(t *testing.T) {
	r := Kernel(context.Background())
	if !r.OK {
		t.Errorf("Kernel: %s", r.Detail)
	}
}
