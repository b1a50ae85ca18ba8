package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/supervisor"
	"github.com/caplin-dev/caplin/supervisor/jobfs"
	"golang.org/x/sys/unix"
)

const supervisorHelp = `usage: caplin supervisor [--socket PATH] [--files DIR] [--grace D] [--max-jobs N] [--scrollback BYTES] [--debug]

Run the user's supervisor: the daemon that keeps the jobs of caplin
start, each a program in a sandbox of its own, until they are stopped. It
serves the user who runs it only: the socket is made mode 0600 in a
directory of mode 0700, and a connection from any other uid is refused
(SO_PEERCRED).

caplin start launches one by itself when none is running, so this
command is for running it under a service manager. With systemd socket
activation (LISTEN_FDS) it serves the socket it is given: for instance,
~/.config/systemd/user/caplin-supervisor.socket with
ListenSequentialPacket=%t/caplin/supervisor.sock and SocketMode=0600,
and a caplin-supervisor.service whose ExecStart is
"caplin supervisor".

Every process of every job dies with the supervisor, however it ends
(SIGKILL included). SIGTERM and SIGINT stop the jobs (SIGTERM to every
process of each, SIGKILL after --grace) and end it; the table of jobs is
not kept across its life.

Flags:

	--socket PATH       where to listen (default:
	                    $CAPLIN_SUPERVISOR_SOCKET if set, else
	                    $XDG_RUNTIME_DIR/caplin/supervisor.sock, or
	                    $TMPDIR/caplin-UID/supervisor.sock; the other
	                    commands look for it there too)
	--files DIR         serve the table of jobs as files at DIR (FUSE;
	                    a user other than root needs fusermount3):
	                    DIR/NAME/ holds status (JSON), pid, argv, env,
	                    exit, stdout (reading follows the output), stdin
	                    (written to the job) and ctl (write "stop
	                    [GRACE]", "kill [SIGNAL]", "signal SIGNAL",
	                    "rm"); mkdir DIR/new/NAME, write argv (one word
	                    per line), env, cwd and sandbox (a profile,
	                    docs/profiles.md; empty: --system's grants),
	                    then "start" to DIR/new/NAME/ctl starts a job
	--grace D           how long jobs have to stop at shutdown, and by
	                    default for caplin stop (default 10s)
	--max-jobs N        jobs kept at once, running or ended (default 4096)
	--scrollback BYTES  output history kept per job (default 256 KiB)
	--debug             log every call, not only jobs starting and ending

It logs one line per job started, restarted and ended to standard error.
`

const supervisorSynopsis = "caplin supervisor [--socket PATH] [--grace D] [--max-jobs N] [--scrollback BYTES]"

// cmdSupervisor runs caplin supervisor.
func cmdSupervisor(args []string) int {
	const name = "caplin supervisor"
	fs := newFlags("supervisor")
	sock := fs.String("socket", "", "")
	grace := fs.Duration("grace", 0, "")
	maxJobs := fs.Int("max-jobs", 0, "")
	scroll := fs.String("scrollback", "", "")
	debugLog := fs.Bool("debug", false, "")
	files := fs.String("files", "", "")
	if st := parse(fs, args, supervisorHelp, supervisorSynopsis); st >= 0 {
		return st
	}
	if fs.NArg() > 0 {
		usageError(name, supervisorSynopsis, "unexpected argument "+fs.Arg(0))
		return exitUsage
	}
	cfg := supervisor.Config{StopGrace: *grace, MaxJobs: *maxJobs}
	if *scroll != "" {
		n, err := sandbox.ParseSize(*scroll)
		if err != nil || n <= 0 || n > 1<<30 {
			usageError(name, supervisorSynopsis, fmt.Sprintf("--scrollback %q: want a size from 1 byte to 1G", *scroll))
			return exitUsage
		}
		cfg.Scrollback = int(n)
	}
	level := slog.LevelInfo
	if *debugLog {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log

	ln, err := supervisor.Activated()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	if ln == nil {
		path := *sock
		if path == "" {
			path = supervisorSocket()
		}
		if ln, err = supervisor.Listen(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			return 1
		}
	}
	defer ln.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// A supervisor started from a terminal goes on when the terminal
	// does (caplin start detaches it anyway). Caught, not ignored: an
	// ignored signal stays ignored in the jobs, through exec.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)

	// A supervisor holds many small things for a long time and makes
	// little garbage: a tighter heap costs it little CPU, and its users
	// a quarter of the memory per job (GOGC still overrides it).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	sup := supervisor.New(cfg)
	srv := &rpc.Server{Logger: log}
	svc := &supervisor.Service{Sup: sup, Server: srv}
	if *files != "" {
		fsrv, err := jobfs.Mount(*files, sup)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: --files: %v\n", name, err)
			return 1
		}
		defer fsrv.Unmount()
		log.Info("supervisor's table mounted", "dir", *files)
	}
	log.Info("supervisor listening", "socket", ln.Path(), "pid", os.Getpid())
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(ctx, ln.UnixListener, svc.NewHandler)
	}()
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	log.Info("supervisor stopping", "jobs", len(sup.Jobs()))
	// No more connections; the lock is kept until the jobs are stopped,
	// so that no other supervisor starts on this socket meanwhile.
	ln.StopAccepting()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.StopGrace+20*time.Second)
	defer cancel()
	sup.Shutdown(sctx, 0)
	srv.Shutdown(sctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	log.Info("supervisor stopped")
	return exitOK
}

// dialSupervisor connects to the user's supervisor (at
// $CAPLIN_SUPERVISOR_SOCKET when that is set to a path, else at
// supervisor.SocketPath), starting one when none runs and start is true.
func dialSupervisor(ctx context.Context, start bool) (*supervisor.Client, error) {
	path := supervisorSocket()
	c, err := supervisor.Dial(ctx, path)
	if err == nil || !start || !(errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)) {
		if err != nil && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)) {
			return nil, fmt.Errorf("no supervisor runs (%s); caplin start starts one", path)
		}
		return c, err
	}
	if err := launchSupervisor(path); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err = supervisor.Dial(ctx, path)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// supervisorSocket is the supervisor's socket path.
func supervisorSocket() string {
	if p := os.Getenv("CAPLIN_SUPERVISOR_SOCKET"); filepath.IsAbs(p) {
		return p
	}
	return supervisor.SocketPath()
}

// launchSupervisor starts a supervisor listening at path, in a session
// of its own (no terminal's hangup reaches it), with its log in
// path's directory (supervisor.log).
func launchSupervisor(path string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting a supervisor: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("starting a supervisor: %w", err)
	}
	// The log goes in the socket's directory: only once it is known to
	// be this user's.
	if err := supervisor.CheckDir(dir); err != nil {
		return fmt.Errorf("starting a supervisor: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "supervisor.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("starting a supervisor: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "supervisor", "--socket", path)
	// Named caplin, whatever the executable's file is called (bwrap,
	// or a test binary that serves as caplin by that name).
	cmd.Args[0] = "caplin"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// None of this process's other descriptors: what its caller left open
	// (a pipe a script waits on for its end, make's jobserver) would stay
	// open for the supervisor's whole life.
	closeOnExecAbove2()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting a supervisor: %w", err)
	}
	// Not waited for: it outlives this command. (Its exit, should it
	// fail at once, is reaped by whoever inherits it.)
	return cmd.Process.Release()
}

// closeOnExecAbove2 marks every descriptor of this process above 2
// close-on-exec (those this process was given open by its caller: its
// own are so already).
func closeOnExecAbove2() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}
