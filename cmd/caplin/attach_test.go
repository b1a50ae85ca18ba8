package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// ptyReader collects what the terminal's master reads.
type ptyReader struct {
	got chan []byte
	buf bytes.Buffer
}

func readPTY(master int) *ptyReader {
	r := &ptyReader{got: make(chan []byte, 256)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := unix.Read(master, b)
			if n > 0 {
				r.got <- bytes.Clone(b[:n])
			}
			if err != nil && err != unix.EINTR {
				close(r.got)
				return
			}
		}
	}()
	return r
}

// until reads until what was read holds want, for at most 20 s.
func (r *ptyReader) until(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(r.buf.String(), want) {
		select {
		case b, ok := <-r.got:
			if !ok {
				t.Fatalf("the terminal closed before %q; read %q", want, r.buf.String())
			}
			r.buf.Write(b)
		case <-deadline:
			t.Fatalf("no %q within 20 s; read %q", want, r.buf.String())
		}
	}
}

// TestAttachTerminal attaches caplin attach, on a real terminal, to a
// job's terminal: the history is replayed, keys reach the job in raw mode
// and its echo comes back, the detach key detaches and leaves the job
// running, a read-only viewer's keys are dropped, and ^C typed through
// the attachment reaches the job, whose status caplin attach exits with.
func TestAttachTerminal(t *testing.T) {
	testenv.AlsoAsNobody(t)
	sock := filepath.Join(t.TempDir(), "sup", "supervisor.sock")
	t.Setenv("CAPLIN_SUPERVISOR_SOCKET", sock)
	t.Cleanup(func() { stopSupervisor(sock) })
	caplin := func(args ...string) string {
		t.Helper()
		out, err := (&exec.Cmd{Path: os.Args[0], Args: append([]string{"caplin"}, args...)}).CombinedOutput()
		if err != nil {
			t.Fatalf("caplin %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	caplin("start", "--name", "cat", "--tty", "--system", "--", "sh", "-c", "echo started; exec cat")

	master, tty := testenv.OpenPTY(t)
	cmd, _ := startCaplin(t, tty, "attach", "cat")
	r := readPTY(master)
	r.until(t, "[caplin: attached to cat; Ctrl-] detaches]")
	r.until(t, "started") // the history
	unix.Write(master, []byte("hello\r"))
	r.until(t, "hello\r\nhello\r\n") // the job's terminal's echo, then cat's
	unix.Write(master, []byte{0x1d})
	r.until(t, "[caplin: cat: detached]")
	if ws, _ := waitExit(t, cmd, 20*time.Second); ws.ExitStatus() != 0 {
		t.Errorf("caplin attach after the detach key: %v, want status 0", ws)
	}
	if out := caplin("ps"); !strings.Contains(out, "running") {
		t.Fatalf("the job after a detach:\n%s", out)
	}

	// A watcher's keys are dropped; the writer's ^C ends the job.
	master2, tty2 := testenv.OpenPTY(t)
	watcher, _ := startCaplin(t, tty2, "attach", "--read-only", "--replay", "0", "cat")
	r2 := readPTY(master2)
	r2.until(t, "[caplin: attached to cat; Ctrl-] detaches]")
	unix.Write(master2, []byte("from-watcher\r"))

	cmd, _ = startCaplin(t, tty, "attach", "--replay", "0", "cat")
	r.buf.Reset()
	r.until(t, "[caplin: attached to cat")
	unix.Write(master, []byte("from-writer\r"))
	r.until(t, "from-writer\r\nfrom-writer\r\n")
	r2.until(t, "from-writer\r\nfrom-writer\r\n") // the watcher sees it
	if strings.Contains(r.buf.String(), "from-watcher") || strings.Contains(r2.buf.String(), "from-watcher") {
		t.Errorf("the watcher's keys reached the job: %q", r2.buf.String())
	}
	unix.Write(master, []byte{3}) // ^C
	r.until(t, "killed by SIGINT")
	if ws, _ := waitExit(t, cmd, 20*time.Second); ws.ExitStatus() != 130 {
		t.Errorf("caplin attach when ^C ended the job: %v, want status 130", ws)
	}
	if ws, _ := waitExit(t, watcher, 20*time.Second); ws.ExitStatus() != 130 {
		t.Errorf("the watcher when the job ended: %v, want status 130", ws)
	}
}

// TestAttachRestoresTerminal: caplin attach, ending, undoes on its
// terminal the modes the job's output left set there (a full-screen
// program's: the alternate screen, mouse reporting, bracketed paste, a
// hidden cursor), before its note; and a job that set none gets nothing
// written.
func TestAttachRestoresTerminal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sup", "supervisor.sock")
	t.Setenv("CAPLIN_SUPERVISOR_SOCKET", sock)
	t.Cleanup(func() { stopSupervisor(sock) })
	for _, c := range []struct {
		name, modes, want string
	}{
		{"full", `\033[?1049h\033[?1000h\033[?2004h\033[?25l`, "\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?2004l"},
		{"plain", "", ""},
	} {
		out, err := (&exec.Cmd{Path: os.Args[0], Args: []string{"caplin", "start", "--name", c.name, "--tty", "--system", "--",
			"sh", "-c", "printf '" + c.modes + "ready\\n'; exec cat"}}).CombinedOutput()
		if err != nil {
			t.Fatalf("caplin start: %v\n%s", err, out)
		}
		master, tty := testenv.OpenPTY(t)
		cmd, _ := startCaplin(t, tty, "attach", c.name)
		r := readPTY(master)
		r.until(t, "ready")
		r.buf.Reset()
		unix.Write(master, []byte{0x1d})
		r.until(t, "[caplin: "+c.name+": detached]")
		if got, _, _ := strings.Cut(r.buf.String(), "\r\n[caplin:"); got != c.want {
			t.Errorf("%s: written after the detach key: %q, want %q", c.name, got, c.want)
		}
		if ws, _ := waitExit(t, cmd, 20*time.Second); ws.ExitStatus() != 0 {
			t.Errorf("caplin attach after the detach key: %v, want status 0", ws)
		}
	}
}

// TestDetachScan: the detach key waits for the next key: the same key
// again sends it once, any other detaches; a read may end with it
// pending.
func TestDetachScan(t *testing.T) {
	const k = 0x1d
	for _, c := range []struct {
		in           string
		pending      bool
		out          string
		pendingAfter bool
		detach       bool
	}{
		{"abc", false, "abc", false, false},
		{"\x1d", false, "", true, false},
		{"ab\x1d", false, "ab", true, false},
		{"\x1d", true, "\x1d", false, false}, // the second of two reads
		{"x", true, "", false, true},
		{"\x1d\x1d", false, "\x1d", false, false},
		{"a\x1db", false, "a", false, true},
		{"\x1d\x1d\x1d", false, "\x1d", true, false},
	} {
		out, p, d := detachScan([]byte(c.in), k, c.pending)
		if string(out) != c.out || p != c.pendingAfter || d != c.detach {
			t.Errorf("detachScan(%q, pending %v) = %q, %v, %v; want %q, %v, %v", c.in, c.pending, out, p, d, c.out, c.pendingAfter, c.detach)
		}
	}
	if out, p, d := detachScan([]byte("\x1d"), -1, false); string(out) != "\x1d" || p || d {
		t.Errorf("no detach key: %q %v %v", out, p, d)
	}
}

// TestLaunchedSupervisorInheritsNoFD: a supervisor that caplin start
// launches holds none of the descriptors its caller was given (a pipe
// the caller's caller waits on for its end would stay open as long as
// the supervisor runs).
func TestLaunchedSupervisorInheritsNoFD(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sup", "supervisor.sock")
	t.Setenv("CAPLIN_SUPERVISOR_SOCKET", sock)
	t.Cleanup(func() { stopSupervisor(sock) })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := &exec.Cmd{Path: os.Args[0], Args: []string{"caplin", "start", "--system", "--", "true"}, ExtraFiles: []*os.File{w}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caplin start: %v\n%s", err, out)
	}
	w.Close()
	// Every writer gone: the read end sees the end at once.
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("the pipe given to caplin start: read %d, %v; want its end (the supervisor holds it)", n, err)
	}
}
