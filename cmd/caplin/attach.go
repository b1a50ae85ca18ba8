package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/termmode"
	"github.com/caplin-dev/caplin/supervisor"
	"golang.org/x/sys/unix"
)

const attachHelp = `usage: caplin attach [--read-only] [--replay BYTES|all] [--detach-key KEY] JOB

Attach this terminal to a job of the supervisor (caplin start): its
recent output is replayed first, then what it writes comes as it comes,
and what is typed here goes to it. JOB is a job's name, or fd:N for a
job object this process inherited (caplin handle).

Several viewers may be attached at once: the first that asks for it
holds the writer lease, and only its keys reach the job, and only its
terminal size; the others watch (their keys are dropped), and get the
lease when its holder detaches. A viewer too slow to keep up does not
hold the job back: it is told how much output it missed.

Detach with the detach key, Ctrl-] by default: it detaches at the next
key, or half a second later; typed twice, it is sent to the job once.
Ending caplin attach otherwise (closing the terminal, SIGTERM) detaches
too; the job goes on. On this terminal, ^C, ^Z and the
other keys go to the job, as they would at its own terminal. When
caplin attach ends, it puts this terminal back out of the modes the
job's output left set (a full-screen program's alternate screen, mouse
reporting, bracketed paste, hidden cursor, keypad and keyboard modes,
scrolling region, colours), as tmux does.

Flags:

	--read-only       watch only: do not ask for the writer lease
	--replay N        replay the last N bytes of output first, or all
	                  that is kept (all, the default), or none (0)
	--detach-key KEY  the detach key: ctrl-X for a letter or one of
	                  [\]^_ (default ctrl-]), or none

Exit status: 0 detached; the job's status when it ended while attached;
1 no such job, or the job went (removed, or this object revoked); 2 bad
command line.
`

const attachSynopsis = "caplin attach [--read-only] [--replay N|all] [--detach-key KEY] JOB"

// cmdAttach runs caplin attach.
func cmdAttach(args []string) int {
	const name = "caplin attach"
	fs := newFlags("attach")
	readOnly := fs.Bool("read-only", false, "")
	replay := fs.String("replay", "all", "")
	detachKey := fs.String("detach-key", "ctrl-]", "")
	if st := parse(fs, args, attachHelp, attachSynopsis); st >= 0 {
		return st
	}
	if fs.NArg() != 1 {
		usageError(name, attachSynopsis, "want one JOB")
		return exitUsage
	}
	key, err := parseDetachKey(*detachKey)
	if err != nil {
		usageError(name, attachSynopsis, err.Error())
		return exitUsage
	}
	back := int64(-1)
	if *replay != "all" {
		n, err := strconv.ParseInt(*replay, 10, 64)
		if err != nil || n < 0 {
			usageError(name, attachSynopsis, fmt.Sprintf("--replay %q: want a number of bytes or all", *replay))
			return exitUsage
		}
		back = n
	}
	job := fs.Arg(0)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGWINCH, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	defer signal.Stop(sigs)

	h, err := jobHandle(ctx, job)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	defer h.Close()
	in := int(os.Stdin.Fd())
	a, err := h.Attach(ctx, supervisor.AttachArgs{Size: termSize(in), Write: !*readOnly, Replay: back})
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s: %s\n", name, job, jobErr(err))
		return 1
	}
	defer a.Close()

	restore := rawMode(in)
	if restore != nil {
		defer restore()
	}
	nl := "\n"
	if restore != nil {
		nl = "\r\n"
	}
	note := fmt.Sprintf("[caplin: attached to %s", job)
	if key >= 0 {
		note += fmt.Sprintf("; %s detaches", keyName(key))
	}
	if !a.Writer && !*readOnly {
		note += "; watching: another viewer holds the input"
	}
	fmt.Fprint(os.Stderr, note+"]"+nl)

	type ending struct {
		code int
		msg  string
	}
	end := make(chan ending, 4)
	// The job's output, until its end: the job ended for good (its
	// status is then the one to exit with), or went.
	var out io.Writer = os.Stdout
	scr := &screen{}
	if _, err := unix.IoctlGetTermios(int(os.Stdout.Fd()), unix.TCGETS); err == nil {
		out = scr
	}
	go func() {
		io.Copy(out, a.Stream)
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if ex, err := h.Wait(wctx); err == nil {
			end <- ending{ex.Code, describeExit(ex)}
			return
		}
		end <- ending{1, "the job went (removed, or this object revoked)"}
	}()
	// The keys typed here. The detach key detaches at the next key, or
	// half a second after it if none comes; typed twice, it is sent once.
	go func() {
		buf := make([]byte, 4096)
		pending := false
		var timer *time.Timer
		for {
			n, err := os.Stdin.Read(buf)
			if timer != nil {
				if !timer.Stop() {
					return // it detached
				}
				timer = nil
			}
			var out []byte
			var detach bool
			out, pending, detach = detachScan(buf[:n], key, pending)
			if len(out) > 0 {
				if _, err := a.Stream.Write(out); err != nil {
					return
				}
			}
			if detach {
				end <- ending{0, "detached"}
				return
			}
			if pending {
				timer = time.AfterFunc(detachWait, func() { end <- ending{0, "detached"} })
			}
			if err != nil {
				// The end of this input: the viewer keeps watching.
				return
			}
		}
	}()
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGWINCH {
				a.Resize(ctx, termSize(in))
				continue
			}
			scr.restore()
			fmt.Fprint(os.Stderr, nl+"[caplin: detached from "+job+"]"+nl)
			return exitOK
		case e := <-end:
			scr.restore()
			fmt.Fprint(os.Stderr, nl+"[caplin: "+job+": "+e.msg+"]"+nl)
			return e.code
		}
	}
}

// screen is standard output when it is a terminal: the job's output goes
// to it through a termmode.Tracker, so that restore, when caplin attach
// ends, can put the terminal back out of the modes the job's output left
// set (an alternate screen, mouse reporting, bracketed paste, a hidden
// cursor: a full-screen program's), as tmux does when its client
// detaches. Nothing is written after restore.
type screen struct {
	mu    sync.Mutex
	t     termmode.Tracker
	ended atomic.Bool
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended.Load() {
		return 0, errScreenEnded
	}
	s.t.Scan(p)
	return os.Stdout.Write(p)
}

var errScreenEnded = errors.New("caplin attach: ended")

// restore writes what undoes the modes the job's output left set, once;
// the job's output then goes nowhere. A write the terminal holds up (its
// output stopped, a slow link) is waited for half a second only: then
// nothing is restored, and nothing more of the job's is written.
func (s *screen) restore() {
	if s.ended.Swap(true) {
		return
	}
	for i := 0; !s.mu.TryLock(); i++ {
		if i == 100 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer s.mu.Unlock()
	if b := s.t.Restore(); len(b) > 0 {
		os.Stdout.Write(b)
	}
}

// parseDetachKey reads a detach key: ctrl-X, or none (-1).
func parseDetachKey(s string) (int, error) {
	if s == "none" {
		return -1, nil
	}
	rest, ok := strings.CutPrefix(strings.ToLower(s), "ctrl-")
	if ok && len(rest) == 1 {
		c := rest[0]
		switch {
		case 'a' <= c && c <= 'z':
			return int(c-'a') + 1, nil
		case strings.IndexByte(`[\]^_`, c) >= 0:
			return int(c-'@') & 0x1f, nil
		}
	}
	return 0, fmt.Errorf("--detach-key %q: want ctrl-X (a letter, or one of [\\]^_) or none", s)
}

// keyName names a control key.
func keyName(key int) string {
	return "Ctrl-" + string(rune('@'+key))
}

// rawMode puts the terminal fd in raw mode, as a terminal emulator's
// program sees keys, and returns what restores it; nil when fd is not a
// terminal.
func rawMode(fd int) func() {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}

// detachWait is how long a detach key waits for a second one, which
// would send it to the job, before it detaches.
const detachWait = 500 * time.Millisecond

// detachScan returns what of the keys in p goes to the job, whether a
// detach key waits at the end for the next key (pending), and whether to
// detach. pending says whether one waited from the previous read: a
// second key right after it sends one to the job; any other key detaches
// (and is dropped with what follows).
func detachScan(p []byte, key int, pending bool) (out []byte, stillPending, detach bool) {
	if key < 0 {
		return p, false, false
	}
	out = p[:0:0]
	for _, c := range p {
		switch {
		case pending && int(c) == key:
			pending = false
			out = append(out, c)
		case pending:
			return out, false, true
		case int(c) == key:
			pending = true
		default:
			out = append(out, c)
		}
	}
	return out, pending, false
}
