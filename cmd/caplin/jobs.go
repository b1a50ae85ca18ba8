package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/supervisor"
	"golang.org/x/sys/unix"
)

// The commands on the supervisor's jobs: ps, logs, stop, kill, wait, rm
// and handle. Each names a job by its name in the supervisor's table, or
// by fd:N, a job object this process inherited (caplin handle passes
// one): the object is the authority, the name only finds the user's own.

const jobsHelp = `usage: caplin ps [--json]
       caplin logs [-f] JOB
       caplin stop [--grace D] JOB...
       caplin kill JOB [SIGNAL]
       caplin wait [--json] JOB
       caplin rm JOB...
       caplin handle [--borrow RIGHTS] [--fd N] JOB -- CMD [ARGS...]

Work with the jobs of the user's supervisor (caplin start). JOB is a
job's name, or fd:N for a job object this process inherited as fd N
(caplin handle passes one, and such objects can be passed on to anyone,
over a Unix socket with caplin call, say).

ps      list the jobs: name, state (running, backoff: waiting to restart,
        exited), pid, start time, CPU time, resident memory, restarts,
        a one-line summary of the sandbox, and the command; --json prints
        them as a JSON array
logs    print the output history the supervisor keeps (256 KiB per job
        by default, the oldest dropped); -f then follows it until the job
        is removed or ^C
stop    stop jobs for good: no more restarts, SIGTERM to every process
        of the job's sandbox, SIGKILL to all of them --grace later
        (default: the supervisor's, 10s); prints how each ended
kill    send SIGNAL (a name, TERM or SIGTERM, or a number; default TERM)
        to every process of the job's sandbox, double-forked daemons
        included; a job that restarts is started again after
wait    wait for the job to end for good and print how: its exit status,
        CPU time and largest resident memory (kept after it ended, until
        caplin rm); --json prints them as JSON; caplin wait exits with
        the job's status
rm      remove ended jobs from the table (a running one is refused)
handle  run CMD with an owner object of the job at fd N (default 3),
        or, with --borrow, one with only RIGHTS (comma-separated:
        status: status and wait; watch: those, logs and attach to
        watch; input: attach and type; signal: signal, stop and kill),
        for scripts to pass on:
        caplin handle web --borrow watch -- caplin logs fd:3
        caplin handle web --borrow status,signal -- some-tool

The methods of job objects, for caplin call: status, wait, logs, attach,
signal {"Signal":N,"All":true}, stop {"Grace":NANOSECONDS}, borrow
{"Rights":["watch"]}, revoke (cuts every object borrowed from this one),
rights.

Exit status: 0 done; 1 the operation failed (no such job, a running job
to rm, no supervisor); 2 bad command line; caplin wait: the job's status.
`

// jobHandle opens the job object arg names: fd:N, inherited, or a name
// the supervisor's table has.
func jobHandle(ctx context.Context, arg string) (*supervisor.Handle, error) {
	f, err := inheritedFD(arg)
	if err != nil {
		return nil, err
	}
	if f != nil {
		return supervisor.NewHandle(f)
	}
	c, err := dialSupervisor(ctx, false)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	h, err := c.Get(ctx, arg)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", arg, jobErr(err))
	}
	return h, nil
}

// jobErr words a supervisor's error for the command line.
func jobErr(err error) string {
	var re *rpc.Error
	if errors.As(err, &re) && re.Text != "" {
		text := strings.TrimPrefix(re.Text, "supervisor: ")
		if re.Errno != 0 {
			// The errno's words are in the text already: its name is
			// added instead.
			text = strings.Replace(text, ": "+re.Errno.Error(), "", 1)
			if n := unix.ErrnoName(re.Errno); n != "" {
				text += " (" + n + ")"
			}
		}
		return text
	}
	return describeErr(err)
}

// jobFlags parses a job command's flags, answering -h.
func jobFlags(cmd string, args []string, setup func(*flag.FlagSet)) ([]string, int) {
	fs := newFlags(cmd)
	setup(fs)
	if st := parse(fs, args, jobsHelp, "caplin "+cmd+" ..."); st >= 0 {
		return nil, st
	}
	return fs.Args(), -1
}

// cmdPs runs caplin ps.
func cmdPs(args []string) int {
	var asJSON *bool
	rest, st := jobFlags("ps", args, func(fs *flag.FlagSet) { asJSON = fs.Bool("json", false, "") })
	if st >= 0 {
		return st
	}
	if len(rest) > 0 {
		usageError("caplin ps", "caplin ps [--json]", "unexpected argument "+rest[0])
		return exitUsage
	}
	ctx := context.Background()
	c, err := dialSupervisor(ctx, false)
	var sts []supervisor.Status
	if err == nil {
		defer c.Close()
		sts, err = c.List(ctx)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "no supervisor runs") {
		fmt.Fprintf(os.Stderr, "caplin ps: %v\n", err)
		return 1
	}
	if *asJSON {
		if sts == nil {
			sts = []supervisor.Status{}
		}
		b, _ := json.MarshalIndent(sts, "", "  ")
		fmt.Printf("%s\n", b)
		return exitOK
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tPID\tSTARTED\tCPU\tMEM\tRESTARTS\tSANDBOX\tCOMMAND")
	for _, s := range sts {
		state := string(s.State)
		if s.State == supervisor.Exited && s.Exit != nil {
			state = fmt.Sprintf("exited(%d)", s.Exit.Code)
		}
		pid, cpu, mem := "-", "-", "-"
		if s.Pid > 0 {
			pid = strconv.Itoa(s.Pid)
			cpu = s.CPU.Round(10 * time.Millisecond).String()
			mem = humanBytes(s.Memory)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, state, pid, s.Started.Format("15:04:05"), cpu, mem, s.Restarts, s.Summary, strings.Join(s.Argv, " "))
	}
	w.Flush()
	return exitOK
}

// humanBytes prints n bytes in K, M or G (1024s).
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%dK", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// cmdLogs runs caplin logs.
func cmdLogs(args []string) int {
	var follow *bool
	rest, st := jobFlags("logs", args, func(fs *flag.FlagSet) { follow = fs.Bool("f", false, "") })
	if st >= 0 {
		return st
	}
	if len(rest) != 1 {
		usageError("caplin logs", "caplin logs [-f] JOB", "want one JOB")
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	h, err := jobHandle(ctx, rest[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin logs: %v\n", err)
		return 1
	}
	defer h.Close()
	r, err := h.Logs(ctx, *follow)
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin logs: %s: %s\n", rest[0], jobErr(err))
		return 1
	}
	defer r.Close()
	go func() {
		<-ctx.Done()
		r.Close() // ^C ends a follow
	}()
	io.Copy(os.Stdout, r)
	return exitOK
}

// cmdStop runs caplin stop.
func cmdStop(args []string) int {
	var grace *time.Duration
	rest, st := jobFlags("stop", args, func(fs *flag.FlagSet) { grace = fs.Duration("grace", 0, "") })
	if st >= 0 {
		return st
	}
	if len(rest) == 0 {
		usageError("caplin stop", "caplin stop [--grace D] JOB...", "want a JOB")
		return exitUsage
	}
	ctx := context.Background()
	code := exitOK
	for _, name := range rest {
		h, err := jobHandle(ctx, name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "caplin stop: %v\n", err)
			code = 1
			continue
		}
		ex, err := h.Stop(ctx, *grace)
		h.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "caplin stop: %s: %s\n", name, jobErr(err))
			code = 1
			continue
		}
		fmt.Printf("%s: %s\n", name, describeExit(ex))
	}
	return code
}

// describeExit says how a job ended, as shells do.
func describeExit(ex *supervisor.Exit) string {
	var s string
	switch {
	case ex.Error != "":
		s = fmt.Sprintf("could not start (status %d): %s", ex.Code, ex.Error)
	case ex.Signal != 0:
		s = fmt.Sprintf("killed by %s (status %d)", unix.SignalName(syscall.Signal(ex.Signal)), ex.Code)
	default:
		s = fmt.Sprintf("exited with status %d", ex.Code)
	}
	if ex.Stopped {
		s += ", stopped"
	}
	return s
}

// cmdKill runs caplin kill.
func cmdKill(args []string) int {
	rest, st := jobFlags("kill", args, func(*flag.FlagSet) {})
	if st >= 0 {
		return st
	}
	if len(rest) < 1 || len(rest) > 2 {
		usageError("caplin kill", "caplin kill JOB [SIGNAL]", "want JOB and at most one SIGNAL")
		return exitUsage
	}
	sig := unix.SIGTERM
	if len(rest) == 2 {
		s, err := parseSignal(rest[1])
		if err != nil {
			usageError("caplin kill", "caplin kill JOB [SIGNAL]", err.Error())
			return exitUsage
		}
		sig = s
	}
	ctx := context.Background()
	h, err := jobHandle(ctx, rest[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin kill: %v\n", err)
		return 1
	}
	defer h.Close()
	if err := h.Signal(ctx, int(sig), true); err != nil {
		fmt.Fprintf(os.Stderr, "caplin kill: %s: %s\n", rest[0], jobErr(err))
		return 1
	}
	return exitOK
}

// parseSignal reads a signal by name (TERM, SIGTERM, term) or number.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 64 {
			return 0, fmt.Errorf("signal %d: want 1 to 64", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// cmdWait runs caplin wait.
func cmdWait(args []string) int {
	var asJSON *bool
	rest, st := jobFlags("wait", args, func(fs *flag.FlagSet) { asJSON = fs.Bool("json", false, "") })
	if st >= 0 {
		return st
	}
	if len(rest) != 1 {
		usageError("caplin wait", "caplin wait [--json] JOB", "want one JOB")
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	h, err := jobHandle(ctx, rest[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin wait: %v\n", err)
		return 1
	}
	defer h.Close()
	ex, err := h.Wait(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin wait: %s: %s\n", rest[0], jobErr(err))
		return 1
	}
	if *asJSON {
		b, _ := json.MarshalIndent(ex, "", "  ")
		fmt.Printf("%s\n", b)
	} else {
		rss := ""
		if ex.MaxRSS > 0 {
			rss = ", max resident " + humanBytes(ex.MaxRSS)
		}
		fmt.Printf("%s: %s (user %v, system %v%s)\n", rest[0], describeExit(ex), ex.UserTime.Round(time.Millisecond), ex.SystemTime.Round(time.Millisecond), rss)
	}
	return ex.Code
}

// cmdRm runs caplin rm.
func cmdRm(args []string) int {
	rest, st := jobFlags("rm", args, func(*flag.FlagSet) {})
	if st >= 0 {
		return st
	}
	if len(rest) == 0 {
		usageError("caplin rm", "caplin rm JOB...", "want a JOB")
		return exitUsage
	}
	ctx := context.Background()
	c, err := dialSupervisor(ctx, false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin rm: %v\n", err)
		return 1
	}
	defer c.Close()
	code := exitOK
	for _, name := range rest {
		if err := c.Remove(ctx, name); err != nil {
			fmt.Fprintf(os.Stderr, "caplin rm: %s: %s\n", name, jobErr(err))
			code = 1
		}
	}
	return code
}

// cmdHandle runs caplin handle.
func cmdHandle(args []string) int {
	const synopsis = "caplin handle [--borrow RIGHTS] [--fd N] JOB -- CMD [ARGS...]"
	var cmd []string
	for i, a := range args {
		if a == "--" {
			args, cmd = args[:i], args[i+1:]
			break
		}
	}
	var borrow *string
	var at *int
	rest, st := jobFlags("handle", args, func(fs *flag.FlagSet) {
		borrow = fs.String("borrow", "", "")
		at = fs.Int("fd", 3, "")
	})
	if st >= 0 {
		return st
	}
	if len(rest) != 1 || len(cmd) == 0 {
		usageError("caplin handle", synopsis, "want JOB -- CMD")
		return exitUsage
	}
	if *at < 3 {
		usageError("caplin handle", synopsis, "--fd must be at least 3")
		return exitUsage
	}
	if *borrow != "" {
		if _, err := supervisor.ParseRights([]string{*borrow}); err != nil {
			usageError("caplin handle", synopsis, "--borrow: "+strings.TrimPrefix(err.Error(), "supervisor: "))
			return exitUsage
		}
	}
	ctx := context.Background()
	f, err := jobFile(ctx, rest[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin handle: %v\n", err)
		return 1
	}
	if *borrow != "" {
		h, err := supervisor.NewHandle(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "caplin handle: %v\n", err)
			return 1
		}
		fd, err := rpc.Invoke[rpc.FD](ctx, h.Client, "borrow", supervisor.BorrowArgs{Rights: strings.Split(*borrow, ",")})
		if err != nil {
			h.Close()
			fmt.Fprintf(os.Stderr, "caplin handle: %s: borrow %s: %s\n", rest[0], *borrow, jobErr(err))
			return 1
		}
		// The object it was borrowed from stays open while the command
		// runs: its end revokes what was lent through it.
		defer h.Close()
		f = fd.File
	}
	return runWithFDs("caplin handle", cmd, []*os.File{f}, *at)
}

// jobFile returns the socket of the job object arg names, to hand on:
// fd:N itself, or an owner object from the supervisor's table.
func jobFile(ctx context.Context, arg string) (*os.File, error) {
	if f, err := inheritedFD(arg); f != nil || err != nil {
		return f, err
	}
	c, err := dialSupervisor(ctx, false)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	fd, err := rpc.Invoke[rpc.FD](ctx, c.Client, "get", supervisor.NameArgs{Name: arg})
	if err != nil {
		return nil, fmt.Errorf("%s: %s", arg, jobErr(err))
	}
	return fd.File, nil
}
