package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/supervisor"
	"golang.org/x/sys/unix"
)

// supervisorFlag takes caplin run's --supervisor out of its options (those
// before "--").
func supervisorFlag(args []string) ([]string, bool) {
	for i, a := range args {
		if a == "--" {
			break
		}
		if a == "--supervisor" || a == "-supervisor" {
			return append(args[:i:i], args[i+1:]...), true
		}
	}
	return args, false
}

// runSupervised runs caplin run's command line args through the user's
// supervisor (starting one if none runs), from a sandbox template it
// keeps warm: this process's standard fds become the program's, the
// signals it gets and its terminal's size changes are relayed, and it
// returns the program's status as caplin run would (dying of a relayed
// signal the program died of). It returns false when the supervisor
// cannot run this command line (it reaches this process: fds, served
// directories; or needs what only caplin run here can do): caplin run
// then runs it itself, and says so in a line if --supervisor asked.
func runSupervised(args []string, asked bool) (int, bool) {
	local := func(why string) (int, bool) {
		if asked {
			fmt.Fprintf(os.Stderr, "caplin run: warning: --supervisor: running here instead: %s\n", why)
		}
		return 0, false
	}
	sigs := make(chan os.Signal, 8)
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		notifyForwarded(sigs)
		signal.Notify(sigs, syscall.SIGWINCH)
	}()
	ctx := context.Background()
	c, err := dialSupervisor(ctx, true)
	if err != nil {
		<-notified
		signal.Reset()
		return local(err.Error())
	}
	defer c.Close()
	wd, _ := os.Getwd()
	ra := supervisor.RunArgs{CommandLine: supervisor.CommandLine{Args: args, Env: os.Environ(), Dir: wd}}
	for n, dst := range []*rpc.FD{&ra.Stdin, &ra.Stdout, &ra.Stderr} {
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err == nil {
			*dst = rpc.NewFD([]*os.File{os.Stdin, os.Stdout, os.Stderr}[n])
		}
	}
	<-notified
	res, err := runOn(c, ra, sigs)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "caplin run: supervisor: %s\n", jobErr(err))
		return exitFailure, true
	case res.Local != "":
		signal.Reset()
		return local(res.Local)
	case res.Error != "":
		fmt.Fprintf(os.Stderr, "caplin run: %s\n", res.Error)
		return res.Code, true
	}
	dieOf(syscall.Signal(res.Relayed))
	return res.Code, true
}

// runOn runs ra through the supervisor c, relaying the signals that come
// on sigs to the program (through a control object pipelined with the
// call), and returns how the run ended.
func runOn(c *supervisor.Client, ra supervisor.RunArgs, sigs <-chan os.Signal) (supervisor.RunResult, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return supervisor.RunResult{}, &os.SyscallError{Syscall: "socketpair", Err: err}
	}
	theirs := os.NewFile(uintptr(fds[1]), "control")
	ctl, err := rpc.NewClient(os.NewFile(uintptr(fds[0]), "control"), rpc.ClientOptions{})
	if err != nil {
		theirs.Close()
		return supervisor.RunResult{}, err
	}
	defer ctl.Close()
	ra.Control = rpc.NewFD(theirs)
	type result struct {
		res supervisor.RunResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = c.Call(context.Background(), "run", ra, &r.res)
		theirs.Close()
		done <- r
	}()
	for {
		select {
		case sig := <-sigs:
			// A supervisor that reads nothing must not stop this loop
			// from seeing the run end.
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			ctl.SendContext(sctx, "signal", supervisor.SignalRunArgs{Signal: int(sig.(syscall.Signal))})
			cancel()
		case r := <-done:
			return r.res, r.err
		}
	}
}
