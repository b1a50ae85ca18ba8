package launcher

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/rpctest"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// envHelper makes the test binary a product that makes a pipe of its
// own, says "ready" and sleeps; with the value "memfds", a product that
// makes a memfd named "\xff" and manyMemfds with long names.
const envHelper = "CAPLIN_LAUNCHER_HELPER"

const manyMemfds = 200

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) == "memfds" {
		// A memfd named "\xff", then many whose names, long and of
		// two-byte characters, are cut in a character in the report.
		if _, err := unix.MemfdCreate("\xff", 0); err != nil {
			os.Exit(3)
		}
		for i := range manyMemfds {
			// Half begin with an "x": the texts that quote them are cut
			// in a character whatever the digits of the fd number.
			if _, err := unix.MemfdCreate(strings.Repeat("x", i%2)+strings.Repeat("é", 124), 0); err != nil {
				os.Exit(3)
			}
		}
		os.Stdout.WriteString("ready\n")
		for {
			time.Sleep(time.Hour)
		}
	}
	if os.Getenv(envHelper) != "" {
		var p [2]int
		if err := unix.Pipe2(p[:], 0); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("ready\n")
		for {
			time.Sleep(time.Hour)
		}
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// The test binaries AlsoAsNobody starts need not sleep a
		// second at exit under -race.
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

// testSpec is a profile that runs the system's programs and nothing else.
func testSpec() *sandbox.Spec {
	spec := &sandbox.Spec{Env: []string{"PATH=/usr/bin:/bin"}, BestEffort: true}
	for _, d := range []string{"/usr", "/bin", "/lib", "/lib64", "/sbin"} {
		spec.Mounts = append(spec.Mounts, sandbox.Mount{Kind: sandbox.ROBind, Source: d, Dest: d, Try: true})
	}
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Kind: sandbox.Proc, Dest: "/proc"}, sandbox.Mount{Kind: sandbox.Dev, Dest: "/dev"})
	return spec
}

// serve serves a Launcher of spec on one end of a socket pair and returns
// a Client for the other end; the object ends when the test does, if not
// before.
func serve(t *testing.T, spec *sandbox.Spec, opts Options) Client {
	t.Helper()
	h, err := New(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := rpctest.Pair(t, h)
	return Client{c}
}

// closeProduct lets go of what Launch returned.
func closeProduct(pr *Product) {
	pr.Process.Close()
	for _, f := range []*os.File{pr.Stdin, pr.Stdout, pr.Stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// waitAsleep waits until the process pid sleeps in (clock_)nanosleep:
// sleep(1) has started, its dynamic loader done with the files it opens.
func waitAsleep(t *testing.T, pid int) {
	t.Helper()
	want := map[string]bool{}
	for _, name := range []string{"clock_nanosleep", "nanosleep"} {
		if nr, ok := sandbox.SyscallNumber(name); ok {
			want[strconv.Itoa(int(nr))] = true
		}
	}
	path := "/proc/" + strconv.Itoa(pid) + "/syscall"
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if nr, _, _ := strings.Cut(string(b), " "); want[nr] {
			return
		}
	}
	t.Fatalf("process %d did not go to sleep within 10s", pid)
}

func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestLaunch launches products with pipes for their streams, reads what
// they write, waits for them and reports on one.
func TestLaunch(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	l := serve(t, testSpec(), Options{})

	pr, err := l.Launch(ctx, []string{"cat"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeProduct(pr)
	if pr.ID != 1 || pr.Stdin == nil || pr.Stdout == nil || pr.Stderr == nil || pr.Process.Pid() <= 0 {
		t.Fatalf("product %+v", pr)
	}
	if _, err := io.WriteString(pr.Stdin, "through the sandbox\n"); err != nil {
		t.Fatal(err)
	}
	pr.Stdin.Close()
	if out, err := io.ReadAll(pr.Stdout); err != nil || string(out) != "through the sandbox\n" {
		t.Errorf("cat wrote %q, %v", out, err)
	}
	if st, err := l.Wait(ctx, pr.ID); err != nil || st.Code != 0 || st.Signal != 0 {
		t.Errorf("wait: %+v, %v", st, err)
	}
	if _, err := l.Report(ctx, pr.ID); !errors.Is(err, syscall.ESRCH) || !strings.Contains(err.Error(), "report 1: the process has exited") {
		t.Errorf("report of an exited product: %v", err)
	}

	sh, err := l.Launch(ctx, []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeProduct(sh)
	out, _ := io.ReadAll(sh.Stdout)
	errOut, _ := io.ReadAll(sh.Stderr)
	if string(out) != "out\n" || string(errOut) != "err\n" || sh.ID != 2 {
		t.Errorf("product %d wrote %q and %q", sh.ID, out, errOut)
	}
	if st, err := l.Wait(ctx, sh.ID); err != nil || st.Code != 3 {
		t.Errorf("wait: %+v, %v", st, err)
	}

	sl, err := l.Launch(ctx, []string{"sleep", "1000"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeProduct(sl)
	waitAsleep(t, sl.Process.Pid())
	res, err := l.Report(ctx, sl.ID)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	if res.ID != sl.ID || len(res.Findings) != 0 {
		t.Errorf("report %d: findings %v; want none", res.ID, res.Findings)
	}
	want := []struct {
		access string
		end    *os.File
	}{{"r", sl.Stdin}, {"w", sl.Stdout}, {"w", sl.Stderr}}
	if len(r.FDs) != 3 {
		t.Fatalf("fds %+v; want 0, 1, 2", r.FDs)
	}
	for i, w := range want {
		fd := r.FDs[i]
		if fd.FD != i || fd.Kind != "pipe" || fd.Access != w.access || fd.Ino != inode(t, w.end) {
			t.Errorf("fd %d: %+v; want the other end of the pipe we hold (inode %d), %s", i, fd, inode(t, w.end), w.access)
		}
	}
	if !r.NoNewPrivs || r.Seccomp != "filter" || r.Caps.Effective != 0 || r.Caps.Bounding != 0 || r.Pid != sl.Process.Pid() {
		t.Errorf("report %+v", r)
	}
	if r.Landlock == nil || r.Landlock.Source != "launcher" {
		t.Errorf("landlock %+v; want the launcher's record", r.Landlock)
	}
	for _, ns := range r.Namespaces {
		if ns.Shared && ns.Name != "time" && ns.Name != "time_for_children" {
			t.Errorf("namespace %s is the launcher's", ns.Name)
		}
	}

	for _, m := range []string{"report", "wait"} {
		if err := l.Call(ctx, m, uint64(99), nil); !errors.Is(err, rpc.ErrInvalid) || !strings.Contains(err.Error(), m+" 99: not a process this launcher object built") {
			t.Errorf("%s 99: %v", m, err)
		}
	}
	if err := l.Call(ctx, "kill", uint64(1), nil); !errors.Is(err, rpc.ErrUnknownMethod) {
		t.Errorf("kill: %v", err)
	}
}

// TestLaunchGivenStreams gives a product the caller's own files for its
// streams: no pipes come back, and the report shows those files.
func TestLaunchGivenStreams(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	l := serve(t, testSpec(), Options{})
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pr, err := l.Launch(ctx, []string{"sh", "-c", "echo to the file; exec sleep 1000"}, null, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeProduct(pr)
	if pr.Stdin != nil || pr.Stdout != nil || pr.Stderr == nil {
		t.Errorf("product %+v: want only a stderr pipe back", pr)
	}
	waitAsleep(t, pr.Process.Pid())
	res, err := l.Report(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	fds := res.Report.FDs
	if len(fds) != 3 || fds[0].Target != os.DevNull || fds[0].Kind != "device" ||
		fds[1].Target != out.Name() || fds[1].Kind != "file" || fds[1].Access != "rw" || len(res.Findings) != 0 {
		t.Errorf("fds %+v, findings %v", fds, res.Findings)
	}
	if b, _ := os.ReadFile(out.Name()); string(b) != "to the file\n" {
		t.Errorf("the file holds %q", b)
	}
}

// TestLaunchProgram: Options.Program fixes the program; the caller only
// adds arguments.
func TestLaunchProgram(t *testing.T) {
	ctx := context.Background()
	l := serve(t, testSpec(), Options{Program: []string{"echo", "fixed"}})
	for _, c := range []struct {
		args []string
		want string
	}{{nil, "fixed\n"}, {[]string{"sh", "-c", "x"}, "fixed sh -c x\n"}} {
		pr, err := l.Launch(ctx, c.args, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(pr.Stdout)
		closeProduct(pr)
		if string(out) != c.want {
			t.Errorf("launch %q wrote %q; want %q", c.args, out, c.want)
		}
	}
	free := serve(t, testSpec(), Options{})
	if _, err := free.Launch(ctx, nil, nil, nil, nil); !errors.Is(err, rpc.ErrInvalid) {
		t.Errorf("launch with no program: %v", err)
	}
	for _, bad := range []struct {
		spec *sandbox.Spec
		opts Options
	}{
		{nil, Options{}},
		{&sandbox.Spec{Files: map[int]*os.File{1: os.Stdout}}, Options{}},
		{testSpec(), Options{Program: []string{""}}},
		{testSpec(), Options{MaxRunning: -1}},
	} {
		if _, err := New(bad.spec, bad.opts); err == nil {
			t.Errorf("New(%+v, %+v) succeeded", bad.spec, bad.opts)
		}
	}
}

// openFDs counts this process's descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestLaunchLimits: a failed launch leaves nothing behind and takes no
// slot; beyond MaxRunning, launch is refused until a product ends.
func TestLaunchLimits(t *testing.T) {
	ctx := context.Background()
	l := serve(t, testSpec(), Options{MaxRunning: 1})
	before := openFDs(t)
	for i := 0; i < 3; i++ {
		_, err := l.Launch(ctx, []string{"no-such-program"}, nil, nil, nil)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no-such-program") {
			t.Fatalf("launch of a missing program: %v", err)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d fds open after failed launches, %d before", after, before)
	}
	pr, err := l.Launch(ctx, []string{"sleep", "1000"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeProduct(pr)
	if _, err := l.Launch(ctx, []string{"true"}, nil, nil, nil); !errors.Is(err, rpc.ErrDenied) || !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("a launch beyond MaxRunning: %v", err)
	}
	if err := pr.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Wait(ctx, pr.ID); err != nil || st.Signal != int(syscall.SIGKILL) || st.Code != -1 {
		t.Errorf("wait for the killed product: %+v, %v", st, err)
	}
	again, err := l.Launch(ctx, []string{"true"}, nil, nil, nil)
	if err != nil {
		t.Fatalf("a launch once the product ended: %v", err)
	}
	closeProduct(again)
}

// TestProductsDieWithObject: closing the Launcher object kills the
// products it built.
func TestProductsDieWithObject(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	l := serve(t, testSpec(), Options{})
	var prs []*Product
	for i := 0; i < 3; i++ {
		pr, err := l.Launch(ctx, []string{"sleep", "1000"}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Process.Release()
		prs = append(prs, pr)
	}
	l.Close()
	for _, pr := range prs {
		deadline := time.Now().Add(10 * time.Second)
		for !pr.Process.Exited() {
			if time.Now().After(deadline) {
				t.Fatalf("product %d (pid %d) still runs 10s after its launcher object closed", pr.ID, pr.Process.Pid())
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Its stdout pipe has no writer left.
		if n, err := pr.Stdout.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("product %d's stdout: %d, %v; want EOF", pr.ID, n, err)
		}
	}
}

// TestLaunchConcurrent launches from many goroutines on one object.
func TestLaunchConcurrent(t *testing.T) {
	ctx := context.Background()
	l := serve(t, testSpec(), Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[uint64]bool{}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, err := l.Launch(ctx, []string{"echo", strconv.Itoa(i)}, nil, nil, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer closeProduct(pr)
			out, _ := io.ReadAll(pr.Stdout)
			if string(out) != strconv.Itoa(i)+"\n" {
				t.Errorf("product %d wrote %q", pr.ID, out)
			}
			if _, err := l.Wait(ctx, pr.ID); err != nil {
				t.Error(err)
			}
			mu.Lock()
			ids[pr.ID] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(ids) != 8 {
		t.Errorf("ids %v; want 8 distinct", ids)
	}
}

// reportOfHelper launches the test binary as a product in helper mode
// (envHelper), waits until it says it is ready, and returns its report.
func reportOfHelper(t *testing.T, mode string) *ReportResult {
	t.Helper()
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec := testSpec()
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Kind: sandbox.ROBind, Source: exe, Dest: "/helper"})
	spec.Env = append(spec.Env, envHelper+"="+mode)
	l := serve(t, spec, Options{})
	pr, err := l.Launch(ctx, []string{"/helper"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeProduct(pr) })
	if line, err := bufio.NewReader(pr.Stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("the helper said %q, %v", line, err)
	}
	res, err := l.Report(ctx, pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestReportFindings launches a product that makes a pipe of its own
// once it runs: the report shows it, and the findings say it is not
// granted (the kernel does not tell who made a pipe).
func TestReportFindings(t *testing.T) {
	testenv.AlsoAsNobody(t)
	res := reportOfHelper(t, "1")
	var pipes []string
	for _, f := range res.Findings {
		if f.Area == "fd" && strings.Contains(f.Text, "(pipe pipe:[") && strings.HasSuffix(f.Text, "not granted by the spec") {
			pipes = append(pipes, f.Text)
		}
	}
	if len(pipes) != 2 {
		t.Errorf("findings %q; want the pipe's two ends", res.Findings)
	}
}

// TestReportUnruly launches a product that makes a memfd named "\xff"
// (not UTF-8) and 200 more whose names, of two-byte characters, are longer
// than a report keeps: the report must still come back (it did not: the
// name could not be decoded, and the report was larger than a message),
// show the "\xff" memfd, cut the long names between characters, and
// count what it left out.
func TestReportUnruly(t *testing.T) {
	res := reportOfHelper(t, "memfds")
	ff := false
	for _, fd := range res.Report.FDs {
		switch {
		case strings.Contains(fd.Target, "memfd:\xff"):
			ff = true
		case !utf8.ValidString(fd.Target):
			t.Errorf("fd %d: target %q is not UTF-8", fd.FD, fd.Target)
		}
	}
	if !ff {
		t.Errorf("no memfd named \"\\xff\" among the descriptors %+v", res.Report.FDs)
	}
	for _, f := range res.Findings {
		if strings.Contains(f.Text, "é") && (!utf8.ValidString(f.Text) || !strings.HasSuffix(f.Text, "é…")) {
			t.Errorf("finding %q; want it cut, after an é", f.Text)
		}
	}
	if n := len(res.Report.FDs) + res.FDsOmitted; n < manyMemfds+4 || len(res.Report.FDs) > maxFDs {
		t.Errorf("%d descriptors and %d omitted; want at most %d and %d in all", len(res.Report.FDs), res.FDsOmitted, maxFDs, manyMemfds+4)
	}
	if res.FindingsOmitted == 0 || len(res.Findings) == 0 {
		t.Errorf("%d findings and %d omitted; want some of each", len(res.Findings), res.FindingsOmitted)
	}
}

// TestTrimWorstCase trims a report of the longest descriptors and
// findings a product can make: what is left fits in a message, and the
// counts say what is not.
func TestTrimWorstCase(t *testing.T) {
	long := strings.Repeat("\xff€", 1500)
	r := &sandbox.Report{}
	for i := range 1000 {
		r.FDs = append(r.FDs, sandbox.FDInfo{FD: i, Kind: "socket", Target: long, Access: "rw", Flags: "O_RDWR|O_APPEND|O_CLOEXEC|O_NONBLOCK",
			Dev: 1 << 60, Ino: 1 << 60, MountID: 1 << 30, Socket: &sandbox.SocketInfo{Domain: "unix", Type: "seqpacket", Local: long, Peer: long, NetNS: 1 << 60}})
	}
	res := &ReportResult{ID: 1, Report: r}
	for range 1000 {
		res.Findings = append(res.Findings, sandbox.Finding{Area: "fd", Text: long})
	}
	if err := trim(res); err != nil {
		t.Fatal(err)
	}
	b, err := cbor.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > rpc.DefaultMaxMessage-512 {
		t.Errorf("the report is %d bytes; want well within a message (%d)", len(b), rpc.DefaultMaxMessage)
	}
	if len(r.FDs)+res.FDsOmitted != 1000 || len(res.Findings)+res.FindingsOmitted != 1000 {
		t.Errorf("%d+%d descriptors, %d+%d findings; want 1000 of each", len(r.FDs), res.FDsOmitted, len(res.Findings), res.FindingsOmitted)
	}
	if len(res.Findings) == 0 || len(r.FDs) == 0 {
		t.Errorf("%d findings and %d descriptors kept; want some of each", len(res.Findings), len(r.FDs))
	}
	for _, s := range []string{r.FDs[0].Target, r.FDs[0].Socket.Peer, res.Findings[0].Text} {
		if len(s) > maxText+len("…") || !strings.HasSuffix(s, "€…") {
			t.Errorf("%q: want it cut to %d bytes, after a €", s, maxText)
		}
	}
}

// TestLogger: the products launched and ended are logged to the Logger
// given, and with none nowhere, not to slog.Default (nor what the
// sandboxes built have to say).
func TestLogger(t *testing.T) {
	def := testenv.DefaultLog(t)
	var own testenv.LogBuffer
	ctx := context.Background()
	for _, opts := range []Options{{Logger: own.Logger()}, {}} {
		l := serve(t, testSpec(), opts)
		pr, err := l.Launch(ctx, []string{"true"}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := l.Wait(ctx, pr.ID)
		closeProduct(pr)
		if err != nil || st.Code != 0 {
			t.Fatalf("wait: %+v, %v", st, err)
		}
	}
	if !strings.Contains(own.String(), "launcher: launched") {
		t.Errorf("the given logger got %q, want the product launched", own.String())
	}
	if d := def.String(); d != "" {
		t.Errorf("slog.Default got %q, want nothing", d)
	}
}
