package sandbox

import (
	"cmp"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// DefaultKillAfter is how long a relayed program has to stop after a
// request to (SIGTERM, SIGHUP) before Relay kills its sandbox.
const DefaultKillAfter = 10 * time.Second

// RelayedSignals are the signals Relay delivers: a launcher asks to be
// notified of them (those it was not started ignoring).
func RelayedSignals() []os.Signal {
	return []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT}
}

// Relay delivers the signals a launcher receives to the program it runs
// in a sandbox, the way a terminal delivers its own to the programs in its
// foreground, and ends the sandbox when the program will not stop:
//
//   - A program in a session of its own (the default; not
//     Spec.SameSession) gets them in its whole process group, which its
//     children share unless they make groups of their own: ^C stops a
//     shell script and the command it is waiting for, as at a terminal.
//   - A program in the caller's session (SameSession) is in the caller's
//     process group: when that is the terminal's foreground group, the
//     terminal delivers SIGINT and SIGQUIT to it itself, and Relay does
//     not deliver them again; other signals go to the program's process
//     alone.
//   - A program that is pid 1 of its namespace (Spec.AsPID1) gets only the
//     signals it handles or ignores, as the kernel shields a pid 1 from
//     the rest; for the others Relay kills the sandbox, as the signal
//     would have killed any other process.
//   - SIGTERM and SIGHUP are requests to stop: if the program has not
//     exited KillAfter later, or when any further signal comes, Relay kills
//     the whole sandbox (SIGKILL): the program and its process group
//     first, then, once the program's end is known, everything else in
//     the sandbox (Sandbox.Kill). SIGINT and SIGQUIT alone never
//     escalate: interactive programs (shells, editors, interpreters) handle
//     ^C and go on.
type Relay struct {
	// KillAfter is how long after the first request to stop the sandbox
	// is killed. Zero: DefaultKillAfter; negative: at once.
	KillAfter time.Duration
}

// Ending is how a relayed program ended.
type Ending struct {
	// State is how its process ended.
	State *pidfd.State
	// Code is its exit status as a shell reports it: N for exit(N),
	// 128+N for signal N. A pid 1 killed for a signal it did not handle
	// counts as killed by that signal.
	Code int
	// Relayed is the signal the program died of, when it is one Relay
	// delivered to it (or killed a pid 1 for), and 0 otherwise. A
	// launcher that wants its own caller to see what a shell expects (a
	// script stops at a command that died of ^C) then dies of it too.
	Relayed syscall.Signal
	// Killed reports that Relay killed the sandbox because the program
	// had not stopped KillAfter after a request to, or a second signal
	// came.
	Killed bool
}

// Wait waits for the program p of sandbox sb to exit, relaying the
// signals on sigs to it as the Relay says, and returns how it ended. When
// ctx is done first it returns ctx's error and leaves the program running.
func (r Relay) Wait(ctx context.Context, sb *Sandbox, p *pidfd.Process, sigs <-chan os.Signal) (*Ending, error) {
	wait := make(chan struct{})
	var st *pidfd.State
	var werr error
	go func() {
		defer close(wait)
		st, werr = p.Wait(ctx)
	}()
	spec := sb.spec
	pid1 := spec.AsPID1 && !spec.SharePID && !spec.LandlockOnly
	ownGroup := !spec.SameSession
	var (
		relayed  = map[syscall.Signal]bool{}
		killedAs syscall.Signal // a pid 1 killed for this signal
		killed   bool
		stopping bool
		deadline <-chan time.Time
	)
	// The program and its group are killed first, and the rest of the
	// sandbox once the program's end is known: its init, which reaps it,
	// must outlive it.
	kill := func() {
		if ownGroup {
			p.SignalGroup(unix.SIGKILL)
		}
		p.Kill()
	}
	for {
		select {
		case <-wait:
			if killed || killedAs != 0 {
				sb.Kill()
			}
			if werr != nil {
				return nil, werr
			}
			e := &Ending{State: st, Code: st.ExitCode(), Killed: killed}
			switch {
			case killedAs != 0 && st.Signal == unix.SIGKILL:
				e.Code, e.Relayed = 128+int(killedAs), killedAs
			case relayed[st.Signal] && !killed:
				e.Relayed = st.Signal
			}
			return e, nil
		case <-deadline:
			killed = true
			kill()
			deadline = nil
		case s := <-sigs:
			sig, ok := s.(syscall.Signal)
			if !ok || killed || killedAs != 0 {
				continue
			}
			if stopping {
				killed = true
				kill()
				continue
			}
			if sig == unix.SIGTERM || sig == unix.SIGHUP {
				stopping = true
				if r.KillAfter < 0 {
					deadline = time.After(0)
				} else {
					deadline = time.After(cmp.Or(r.KillAfter, DefaultKillAfter))
				}
			}
			relayed[sig] = true
			switch {
			case pid1 && !handles(p.Pid(), sig):
				killedAs = sig
				kill()
			case ownGroup:
				if err := p.SignalGroup(sig); err != nil {
					p.Signal(sig)
				}
			case (sig == unix.SIGINT || sig == unix.SIGQUIT) && inForeground():
				// The terminal sent it to the program too.
			default:
				p.Signal(sig)
			}
		}
	}
}

// handles reports whether process pid has a handler for sig or ignores
// it, from the SigCgt and SigIgn masks of /proc/PID/status. It says yes
// when it cannot tell.
func handles(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return true
	}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != "SigCgt" && k != "SigIgn" {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil || mask&(1<<(uint(sig)-1)) != 0 {
			return true
		}
		found++
	}
	return found < 2
}

// inForeground reports whether the caller's process group is the
// foreground process group of the terminal on its standard input, output
// or error, so that the keyboard's signals reach every process in it.
func inForeground() bool {
	for fd := 0; fd <= 2; fd++ {
		if pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil {
			return pgrp == unix.Getpgrp()
		}
	}
	return false
}
