// Command remotebench measures caplin's remote hosts against ssh's own,
// in one run, alternating the two sides of each pair and printing their
// medians and ratio (bench/remote.sh runs it against a throwaway sshd):
//
//	spawn and wait of /bin/true, the connection open, against
//	  ssh -S CONTROL HOST /bin/true over an open ControlMaster (target:
//	  caplin at least 5x faster)
//	a batch of 32 calls in a remote child against a batch of 1 (target:
//	  about one round trip: a ratio near 1)
//	caplin run --host HOST (a connection of its own, a sandbox there)
//	  against ssh HOST /bin/true (a connection of its own): no target
//	a file read through a remote fd (a program's stdout there, forwarded)
//	  against ssh -S CONTROL HOST cat FILE (target: >= 0.8x ssh's
//	  throughput)
//
// Usage: remotebench [-runs N] [-mib M] [-only spawn,batch,run,cat] -agent CAPLIN HOST FILE
// $CAPLIN_SSH is the ssh command line (split on spaces here); FILE is a
// file on HOST of M MiB.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/remote"
)

func main() {
	runs := flag.Int("runs", 40, "alternating runs per pair")
	mib := flag.Int("mib", 256, "the file's size, MiB")
	agent := flag.String("agent", "", "the caplin to upload as the agent")
	only := flag.String("only", "spawn,batch,run,cat", "the pairs to run, by name")
	flag.Parse()
	want := func(name string) bool { return slices.Contains(strings.Split(*only, ","), name) }
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: remotebench [-runs N] [-mib M] HOST FILE")
		os.Exit(2)
	}
	dest, file := flag.Arg(0), flag.Arg(1)
	ssh := strings.Fields(os.Getenv("CAPLIN_SSH"))
	if len(ssh) == 0 {
		ssh = []string{"ssh"}
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "remotebench-")
	check(err)
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "ctl")
	master := exec.Command(ssh[0], append(ssh[1:], "-M", "-S", ctl, "-o", "ControlPersist=yes", "-fN", dest)...)
	master.Stderr = os.Stderr
	check(master.Run())
	// The master outlives this program unless told to exit: on a
	// failure (check) too.
	atExit = func() { exec.Command(ssh[0], append(ssh[1:], "-S", ctl, "-O", "exit", dest)...).Run() }
	defer atExit()
	viaMaster := func(args ...string) *exec.Cmd {
		return exec.Command(ssh[0], append(append(ssh[1:], "-S", ctl, dest), args...)...)
	}

	h, err := remote.Dial(ctx, dest, &remote.Options{Agent: *agent})
	check(err)
	defer h.Close()
	env := []string{"PATH=/usr/bin:/bin"}

	if want("spawn") {
		pair("spawn+wait /bin/true", *runs,
			func() {
				e, err := h.Run(ctx, &remote.Cmd{Args: []string{"/bin/true"}, Env: env})
				check(err)
				if e.Code != 0 {
					panic(e)
				}
			},
			func() { check(viaMaster("/bin/true").Run()) })
	}

	hd, err := h.Fork(ctx, nil)
	check(err)
	defer hd.Close()
	batch := func(n int) func() {
		return func() {
			var b proc.Batch
			for range n {
				b.Getpid()
			}
			_, err := hd.Run(ctx, &b)
			check(err)
		}
	}
	if want("batch") {
		pair("a batch of 32 calls vs 1", *runs, batch(32), batch(1))
	}

	// The command: a connection each, a sandbox there, against ssh's
	// own connection each (no ControlMaster on either side).
	if *agent != "" && want("run") {
		sandbox := []string{"run", "--host", dest, "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
			"--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--", "/bin/true"}
		pair("caplin run --host vs ssh HOST", max(*runs/4, 3),
			func() {
				if out, err := exec.Command(*agent, sandbox...).CombinedOutput(); err != nil {
					check(fmt.Errorf("caplin run --host: %v: %s", err, out))
				}
			},
			func() { check(exec.Command(ssh[0], append(ssh[1:], dest, "/bin/true")...).Run()) })
	}

	if p := os.Getenv("REMOTEBENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		check(err)
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if !want("cat") {
		return
	}
	size := int64(*mib) << 20
	read := func(r io.Reader) {
		n, err := io.Copy(io.Discard, r)
		check(err)
		if n != size {
			panic(fmt.Sprintf("read %d bytes of %s, want %d", n, file, size))
		}
	}
	tr := *runs / 2
	if tr < 3 {
		tr = 3
	}
	ta, tb := pair(fmt.Sprintf("cat of %d MiB", *mib), tr,
		func() {
			r, w, err := os.Pipe()
			check(err)
			p, err := h.Spawn(ctx, &remote.Cmd{Args: []string{"cat", file}, Env: env, Files: []*os.File{nil, w}})
			w.Close()
			check(err)
			read(r)
			r.Close()
			p.Wait(ctx)
			p.Close()
		},
		func() {
			c := viaMaster("cat", file)
			out, err := c.StdoutPipe()
			check(err)
			check(c.Start())
			read(out)
			check(c.Wait())
		})
	fmt.Printf("  throughput: caplin %.0f MiB/s, ssh %.0f MiB/s: %.2fx ssh's\n",
		float64(*mib)/ta.Seconds(), float64(*mib)/tb.Seconds(), tb.Seconds()/ta.Seconds())
}

// pair runs a and b alternately n times each (after one warm-up run of
// each) and prints their medians and a/b.
func pair(name string, n int, a, b func()) (time.Duration, time.Duration) {
	a()
	b()
	var ta, tb []time.Duration
	for range n {
		t0 := time.Now()
		a()
		ta = append(ta, time.Since(t0))
		t0 = time.Now()
		b()
		tb = append(tb, time.Since(t0))
	}
	ma, mb := median(ta), median(tb)
	fmt.Printf("%-28s caplin %10v  peer %10v  caplin/peer %.3f\n", name, ma.Round(time.Microsecond), mb.Round(time.Microsecond), float64(ma)/float64(mb))
	return ma, mb
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

// atExit ends what must not outlive the program (the ControlMaster).
var atExit = func() {}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "remotebench:", err)
		atExit()
		os.Exit(1)
	}
}
