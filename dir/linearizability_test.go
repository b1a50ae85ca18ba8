package dir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"golang.org/x/sys/unix"
)

func init() {
	workers["cas-history"] = casHistoryWorker
}

// Environment of worker processes.
const (
	envRoot   = "CAPLIN_DIR_ROOT"
	envClient = "CAPLIN_DIR_CLIENT"
	envOps    = "CAPLIN_DIR_OPS"
)

// monotonic is CLOCK_MONOTONIC in nanoseconds: one clock for every process
// on the machine, so histories from several processes can be merged.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// histOp is one operation of a worker's history, as it reports it.
type histOp struct {
	Client int    `json:"c"`
	Kind   string `json:"k"` // "read", "cas", "write"
	Expect string `json:"e,omitempty"`
	Value  string `json:"v,omitempty"` // read: the value read; cas, write: the value written
	OK     bool   `json:"ok"`
	Call   int64  `json:"call"`
	Return int64  `json:"ret"`
}

// casHistoryWorker reads and compare-and-swaps the register "reg" in the
// directory envRoot, envOps times, and prints its history as JSON lines.
// Every value it writes is unique ("client-i"), so a value names one state.
// One round in ten is a blind Replace instead of a CompareAndSwap.
func casHistoryWorker() error {
	d, err := Open(os.Getenv(envRoot))
	if err != nil {
		return err
	}
	client, _ := strconv.Atoi(os.Getenv(envClient))
	ops, _ := strconv.Atoi(os.Getenv(envOps))
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	waitReady()
	for i := range ops {
		call := monotonic()
		b, v, err := d.Read("reg")
		ret := monotonic()
		if err != nil {
			return err
		}
		enc.Encode(histOp{Client: client, Kind: "read", Value: string(b), OK: true, Call: call, Return: ret})

		val := fmt.Sprintf("%d-%d", client, i)
		if i%10 == 9 {
			call = monotonic()
			err = d.Replace("reg", []byte(val), 0o644)
			ret = monotonic()
			if err != nil {
				return err
			}
			enc.Encode(histOp{Client: client, Kind: "write", Value: val, OK: true, Call: call, Return: ret})
			continue
		}
		call = monotonic()
		_, err = d.CompareAndSwap("reg", v, []byte(val))
		ret = monotonic()
		if err != nil && !errors.Is(err, ErrVersionMismatch) {
			return err
		}
		enc.Encode(histOp{Client: client, Kind: "cas", Expect: string(b), Value: val, OK: err == nil, Call: call, Return: ret})
	}
	return out.Flush()
}

// registerModel is a register with read, write and compare-and-swap, over
// string values; the initial value is "init".
var registerModel = porcupine.Model{
	Init: func() any { return "init" },
	Step: func(state, input, output any) (bool, any) {
		s := state.(string)
		in := input.(histOp)
		ok := output.(bool)
		switch in.Kind {
		case "read":
			return in.Value == s, s
		case "write":
			return true, in.Value
		case "cas":
			if s == in.Expect {
				return ok, in.Value
			}
			return !ok, s
		}
		return false, s
	},
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output any) string {
		in := input.(histOp)
		switch in.Kind {
		case "read":
			return "read() -> " + in.Value
		case "write":
			return "write(" + in.Value + ")"
		}
		return fmt.Sprintf("cas(%s, %s) -> %v", in.Expect, in.Value, output)
	},
	DescribeState: func(state any) string { return state.(string) },
}

// workerProc is a worker process started by startWorkers.
type workerProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startWorkers starts n copies of the test binary as worker w, with the
// extra environment, and waits until each has said "ready" (after which
// it waits for a byte on its standard input, so that all start at once).
func startWorkers(t testing.TB, w string, n int, env ...string) []workerProc {
	t.Helper()
	ps := make([]workerProc, n)
	for i := range ps {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), append(env, envWorker+"="+w, envClient+"="+strconv.Itoa(i))...)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		ps[i] = workerProc{cmd, in, bufio.NewReader(out)}
	}
	for i, p := range ps {
		if line, err := p.out.ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("worker %d: %q, %v", i, line, err)
		}
	}
	return ps
}

// waitReady is the worker's side of startWorkers: say ready, wait for go.
func waitReady() {
	fmt.Println("ready")
	io.ReadFull(os.Stdin, make([]byte, 1))
}

// goAndWait lets the workers go and returns the rest of their standard
// outputs once all exit.
func goAndWait(t testing.TB, ps []workerProc) [][]byte {
	t.Helper()
	for _, p := range ps {
		p.in.Write([]byte{1})
	}
	res := make([][]byte, len(ps))
	for i, p := range ps {
		b, err := io.ReadAll(p.out)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		res[i] = b
	}
	return res
}

// TestCompareAndSwapLinearizable runs Read/CompareAndSwap/Replace from four
// processes at once on one file, over 10,000 operations in all, and checks
// the merged history with porcupine against a register.
func TestCompareAndSwapLinearizable(t *testing.T) {
	alsoAsNobody(t)
	const procs, rounds = 4, 1300 // 2 operations a round: 10,400
	root := tempDir(t)
	d := mustOpen(t, root)
	if err := d.Replace("reg", []byte("init"), 0o644); err != nil {
		t.Fatal(err)
	}
	ps := startWorkers(t, "cas-history", procs, envRoot+"="+root, envOps+"="+strconv.Itoa(rounds))
	start := time.Now()
	outs := goAndWait(t, ps)
	elapsed := time.Since(start)

	var history []porcupine.Operation
	okCAS, failedCAS := 0, 0
	for _, out := range outs {
		dec := json.NewDecoder(bytes.NewReader(out))
		for dec.More() {
			var op histOp
			if err := dec.Decode(&op); err != nil {
				t.Fatal(err)
			}
			if op.Kind == "cas" {
				if op.OK {
					okCAS++
				} else {
					failedCAS++
				}
			}
			history = append(history, porcupine.Operation{
				ClientId: op.Client, Input: op, Output: op.OK, Call: op.Call, Return: op.Return,
			})
		}
	}
	if len(history) < 10000 {
		t.Fatalf("only %d operations", len(history))
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 2*time.Minute)
	if res != porcupine.Ok {
		if f, err := os.CreateTemp("", "caplin-cas-*.html"); err == nil {
			porcupine.Visualize(registerModel, info, f)
			f.Close()
			t.Logf("visualization: %s", f.Name())
		}
		if f, err := os.CreateTemp("", "caplin-cas-*.json"); err == nil {
			for _, out := range outs {
				f.Write(out)
			}
			f.Close()
			t.Logf("history: %s", f.Name())
		}
		t.Fatalf("history of %d operations: %v", len(history), res)
	}
	if okCAS == 0 || failedCAS == 0 {
		t.Fatalf("no contention: %d CompareAndSwaps won, %d lost", okCAS, failedCAS)
	}
	t.Logf("%d operations from %d processes in %v: linearizable; %d CompareAndSwaps won, %d lost", len(history), procs, elapsed, okCAS, failedCAS)
	if tmps := tempLeftovers(t, root); len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

// TestRegisterModelRejects checks the checker: histories that are not
// linearizable are found out.
func TestRegisterModelRejects(t *testing.T) {
	op := func(c int, kind, expect, value string, ok bool, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: histOp{Kind: kind, Expect: expect, Value: value}, Output: ok, Call: call, Return: ret}
	}
	bad := map[string][]porcupine.Operation{
		"two CAS from one state both win": {
			op(0, "cas", "init", "a", true, 0, 10),
			op(1, "cas", "init", "b", true, 20, 30),
		},
		"lost update seen by a read": {
			op(0, "cas", "init", "a", true, 0, 10),
			op(1, "read", "", "init", true, 20, 30),
		},
		"CAS fails with nothing in the way": {
			op(0, "cas", "init", "a", false, 0, 10),
			op(1, "read", "", "a", true, 20, 30),
		},
	}
	for name, h := range bad {
		if porcupine.CheckOperations(registerModel, h) {
			t.Errorf("%s: accepted", name)
		}
	}
	good := []porcupine.Operation{
		op(0, "cas", "init", "a", true, 0, 10),
		op(1, "cas", "init", "b", false, 5, 15),
		op(1, "read", "", "a", true, 20, 30),
	}
	if !porcupine.CheckOperations(registerModel, good) {
		t.Error("a linearizable history was rejected")
	}
}
