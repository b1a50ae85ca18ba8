package sandbox

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// TestSandboxConcurrent calls Exec, Handle, Pid, Kill and Close of one
// sandbox at once, from many goroutines, for a sandbox of Build's and one
// of a Template's (whose program's process Exec spawns): run it under
// -race. Every Exec either starts the program or fails, nothing blocks,
// and after Close an Exec fails with os.ErrClosed, Handle is nil and
// Kill does nothing.
func TestSandboxConcurrent(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := baseSpec()
	spec.Env = []string{"PATH=/usr/bin:/bin"}
	tmpl, err := NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	for _, how := range []string{"Build", "Template"} {
		for round := 0; round < 5; round++ {
			var sb *Sandbox
			var err error
			_, w, _ := os.Pipe()
			if how == "Build" {
				s := spec.Clone()
				s.Files = map[int]*os.File{1: w}
				sb, err = Build(ctx, s)
			} else {
				sb, err = tmpl.NewSandbox(ctx, map[int]*os.File{1: w}, nil)
			}
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i == 0 {
						sb.Handle()
					}
					p, err := sb.Exec(ctx, "sleep", []string{"sleep", "10"})
					if err == nil {
						p.Kill()
						p.Wait(ctx)
						p.Close()
					}
					sb.Pid()
				}()
			}
			wg.Add(2)
			go func() { defer wg.Done(); sb.Kill() }()
			go func() { defer wg.Done(); time.Sleep(time.Duration(round) * time.Millisecond); sb.Close() }()
			wg.Wait()
			if _, err := sb.Exec(ctx, "sleep", []string{"sleep", "10"}); !errors.Is(err, os.ErrClosed) {
				t.Errorf("%s: Exec after Close: %v, want os.ErrClosed", how, err)
			}
			if h := sb.Handle(); h != nil {
				t.Errorf("%s: Handle after Close: %v, want nil", how, h)
			}
			if err := sb.Kill(); err != nil {
				t.Errorf("%s: Kill after Close: %v, want nil", how, err)
			}
			if err := sb.Close(); err != nil && round == 0 {
				t.Logf("%s: Close again: %v", how, err)
			}
		}
	}
}

// TestRun: Run builds, runs, waits and closes; its State says how the
// program ended, a program it cannot exec is an error, and a cancelled
// ctx kills the sandbox.
func TestRun(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	st, err := Run(ctx, spec, "/bin/sh", []string{"sh", "-c", "exit 3"})
	if err != nil || st.ExitCode() != 3 {
		t.Errorf("Run of exit 3: %v %v", st, err)
	}
	if _, err := Run(ctx, spec, "/no/such/program", []string{"x"}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Run of a missing program: %v, want ENOENT", err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Run(short, spec, "/bin/sleep", []string{"sleep", "100"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run past its deadline returned after %v", d)
	}
}
