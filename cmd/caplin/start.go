package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/caplin-dev/caplin/supervisor"
	"golang.org/x/sys/unix"
)

const startHelp = `usage: caplin start [--name NAME] [--tty] [--restart no|on-failure|always] [caplin run's flags] -- CMD [ARGS...]

Start CMD as a job of the user's supervisor, in a sandbox built as caplin
run builds one from the same flags, and print the job's name. The job
outlives this command: see it with caplin ps, watch or type into it with
caplin attach, read its output with caplin logs, end it with caplin stop.
A supervisor is started if none runs (see caplin supervisor).

Flags (anywhere among caplin run's):

	--name NAME      the job's name: up to 64 letters, digits, '.', '_'
	                 and '-' (default: CMD's name and a number, "sleep-3")
	--tty            a pseudo-terminal as the program's standard input,
	                 output and error, and its controlling terminal, of
	                 this terminal's size; without, its input is a pipe
	                 that caplin attach writes to, and its output and
	                 errors one pipe
	--restart WHEN   start the program again when it ends: no (default),
	                 on-failure (a status other than 0), always (until
	                 stopped); a program that ends at once is restarted
	                 after 0.1 s, then twice as long each time, up to 30 s

The sandbox flags are caplin run's (caplin help run), read by the
supervisor with this command's environment and working directory: the
sandbox is what caplin run would build, but for what reaches this
process, which the supervisor does not have: fds (--fd N=inherit:M,
--info-fd and kin, --args), served directories (--serve-*, --control,
--events). Each job has a pid namespace of its own, so that stopping it
reaches everything it started: --landlock-only is refused.

Exit status: 0 started; 1 the supervisor refused (a job of that name
exists, too many jobs or starts at once); 2 bad command line; 122 the sandbox cannot be
enforced here; 125 the sandbox could not be built (or no supervisor could
be reached); 126 CMD could not be executed; 127 CMD was not found.
`

const startSynopsis = "caplin start [--name NAME] [--tty] [--restart WHEN] [caplin run's flags] -- CMD [ARGS...]"

// cmdStart runs caplin start.
func cmdStart(args []string) int {
	const name = "caplin start"
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Print(startHelp)
			return exitOK
		}
	}
	if len(args) == 0 {
		usageError(name, startSynopsis, "no command")
		return exitUsage
	}
	wd, _ := os.Getwd()
	cl := &supervisor.CommandLine{Args: args, Env: os.Environ(), Dir: wd, Size: termSize(int(os.Stdout.Fd()))}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c, err := dialSupervisor(ctx, true)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	defer c.Close()
	res, h, err := c.Start(ctx, cl)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, jobErr(err))
		return 1
	}
	if h != nil {
		h.Close()
	}
	if res.Error != "" {
		if res.Code == exitUsage {
			usageError(name, startSynopsis, res.Error)
			return exitUsage
		}
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, res.Error)
		return res.Code
	}
	fmt.Println(res.Name)
	return exitOK
}

// termSize returns the size of the terminal fd, or zeros when fd is not
// one.
func termSize(fd int) supervisor.Winsize {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return supervisor.Winsize{}
	}
	return supervisor.Winsize{Rows: ws.Row, Cols: ws.Col}
}
