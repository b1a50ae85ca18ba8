package dir

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func init() {
	workers["replacer"] = replacerWorker
	workers["cas-writer"] = casWriterWorker
}

// crashContent is the seq'th contents the replacer writes: a header with
// the length and SHA-256 of the payload, then the payload, so a reader can
// tell a complete file from a torn one. Sizes vary up to 256 KiB, so a
// torn write would be likely to show.
func crashContent(seq int) []byte {
	n := 1 + (seq*7919)%(256<<10)
	payload := bytes.Repeat([]byte{byte('a' + seq%26)}, n)
	copy(payload, strconv.Itoa(seq))
	sum := sha256.Sum256(payload)
	return append(fmt.Appendf(nil, "caplin-crash %d %d %s\n", seq, n, hex.EncodeToString(sum[:])), payload...)
}

// checkContent reports whether b is one complete crashContent.
func checkContent(b []byte) error {
	header, payload, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return fmt.Errorf("no header in %d bytes", len(b))
	}
	var seq, n int
	var sum string
	if _, err := fmt.Sscanf(string(header), "caplin-crash %d %d %s", &seq, &n, &sum); err != nil {
		return fmt.Errorf("bad header %q: %v", header, err)
	}
	if len(payload) != n {
		return fmt.Errorf("seq %d: %d bytes of payload, header says %d", seq, len(payload), n)
	}
	got := sha256.Sum256(payload)
	if hex.EncodeToString(got[:]) != sum {
		return fmt.Errorf("seq %d: payload does not match its checksum", seq)
	}
	return nil
}

// replacerWorker Replaces "data" in envRoot with successive crashContents
// until it is killed, saying "ready" after the first.
func replacerWorker() error {
	d, err := Open(os.Getenv(envRoot))
	if err != nil {
		return err
	}
	// Made beforehand, so that the process spends its time in Replace and
	// a kill lands inside one.
	start := rand.IntN(1 << 20)
	contents := make([][]byte, 32)
	for i := range contents {
		contents[i] = crashContent(start + i)
	}
	for i := 0; ; i++ {
		if err := d.Replace("data", contents[i%len(contents)], 0o644); err != nil {
			return err
		}
		if i == 0 {
			fmt.Println("ready")
		}
	}
}

// casWriterWorker increments the counter "n" in envRoot with Read and
// CompareAndSwap until it is killed, saying "ready" after the first.
func casWriterWorker() error {
	d, err := Open(os.Getenv(envRoot))
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		if err := increment(d, "n"); err != nil {
			return err
		}
		if i == 0 {
			fmt.Println("ready")
		}
	}
}

// startKillable starts worker w and waits until it says "ready".
func startKillable(t *testing.T, w string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append(env, envWorker+"="+w)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("worker said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("worker did not start")
	}
	return cmd
}

// afterKill runs write, the operation op, after a writer was killed, and
// fails the test if it fails or does not return within 30 seconds: a dead
// writer's lock must go with it.
func afterKill(t *testing.T, op string, write func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- write() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal(op + " blocked after the writer was killed")
	}
}

// TestCrashReplace SIGKILLs a process in the middle of a stream of Replace
// calls, again and again, while this process reads the file: every read,
// before, during and after the kill, sees one complete version.
func TestCrashReplace(t *testing.T) {
	alsoAsNobody(t)
	rounds := 8
	if testing.Short() {
		rounds = 4
	}
	root := tempDir(t)
	d := mustOpen(t, root)
	if err := d.Replace("data", crashContent(0), 0o644); err != nil {
		t.Fatal(err)
	}
	var reads, versions atomic.Int64
	for round := range rounds {
		cmd := startKillable(t, "replacer", envRoot+"="+root)
		var stop atomic.Bool
		var wg sync.WaitGroup
		seen := map[Version]bool{}
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				var b []byte
				var err error
				switch i % 3 {
				case 0:
					b, err = d.ReadFile("data")
				case 1:
					var v Version
					b, v, err = d.Read("data")
					if err == nil && !seen[v] {
						seen[v] = true
						versions.Add(1)
					}
				case 2:
					b, err = os.ReadFile(filepath.Join(root, "data"))
				}
				if err != nil {
					t.Errorf("round %d: read: %v", round, err)
					return
				}
				if err := checkContent(b); err != nil {
					t.Errorf("round %d: torn read: %v", round, err)
					return
				}
				reads.Add(1)
			}
		})
		time.Sleep(time.Duration(20+rand.IntN(80)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		time.Sleep(20 * time.Millisecond) // keep reading after the crash
		stop.Store(true)
		wg.Wait()
		if ws, ok := err.(*exec.ExitError); !ok || ws.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: worker ended with %v, not by SIGKILL", round, err)
		}
		b, err := d.ReadFile("data")
		if err != nil {
			t.Fatal(err)
		}
		if err := checkContent(b); err != nil {
			t.Fatalf("round %d: after the crash: %v", round, err)
		}
		// The dead writer's lock went with it: this writer is not blocked.
		afterKill(t, "Replace", func() error { return d.Replace("data", crashContent(round+1), 0o644) })
	}
	// A kill can leave at most one temporary file per round, each a
	// complete or partial write that nobody reads as "data".
	tmps := tempLeftovers(t, root)
	if len(tmps) > rounds {
		t.Fatalf("%d temporary files after %d kills", len(tmps), rounds)
	}
	for _, n := range tmps {
		if !strings.HasPrefix(n, ".data.caplin-tmp-") {
			t.Fatalf("unexpected leftover %q", n)
		}
	}
	if reads.Load() < int64(rounds) || versions.Load() < int64(rounds) {
		t.Fatalf("only %d reads of %d versions", reads.Load(), versions.Load())
	}
	t.Logf("%d kills; %d reads of %d distinct versions, all complete; %d temporary files left", rounds, reads.Load(), versions.Load(), len(tmps))
}

// TestCrashCompareAndSwap SIGKILLs a process that increments a counter
// with CompareAndSwap (possibly while it holds the directory's lock): the
// counter stays a whole number, and the next CompareAndSwap is not blocked.
func TestCrashCompareAndSwap(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	d := mustOpen(t, root)
	if err := d.Replace("n", []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	last := 0
	for round := range 4 {
		cmd := startKillable(t, "cas-writer", envRoot+"="+root)
		time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		b, err := d.ReadFile("n")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(string(b))
		if err != nil || n <= last {
			t.Fatalf("round %d: counter %q after %d", round, b, last)
		}
		afterKill(t, "CompareAndSwap", func() error { return increment(d, "n") })
		b, _ = d.ReadFile("n")
		if got, _ := strconv.Atoi(string(b)); got != n+1 {
			t.Fatalf("round %d: counter %s after incrementing %d", round, b, n)
		}
		last = n + 1
	}
}
