package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/remote"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/supervisor"
	"golang.org/x/sys/unix"
)

const agentHelp = `NAME
	caplin agent - the far end of caplin's connections to other hosts

SYNOPSIS
	caplin agent

DESCRIPTION
	Speaks caplin's protocol on its standard input and output, for a
	caplin on another machine that started it there over ssh (caplin run
	--host, caplin remote, caplin call ssh://...): that caplin uploads
	itself into the user's cache (~/.cache/caplin/agent-SHA256) once per
	version, checks the copy's hash before each start, and runs it as
	"caplin agent". It is not run by hand. It serves until the connection
	ends, and then every process it built dies with it (docs/remote.md).

EXIT STATUS
	0 when the connection ended, 1 when it could not be set up.
`

const remoteHelp = `NAME
	caplin remote - ask another host's caplin about that host

SYNOPSIS
	caplin remote [--agent PATH] [--timeout D] HOST doctor|info

DESCRIPTION
	Connects to HOST (an ssh destination: host, user@host or an alias
	of ~/.ssh/config) with the user's own ssh, or the command line in
	$CAPLIN_SSH (as git's GIT_SSH_COMMAND: CAPLIN_SSH="ssh -F ./config"),
	starting caplin's agent there (uploaded once per caplin version, to
	~/.cache/caplin on the host), and:

	doctor
		prints caplin doctor's report of HOST's kernel;
	info
		prints, as JSON, the agent's version, the host's architecture,
		kernel and name, the user there, and whether the agent was
		uploaded.

	ssh runs with -T, -e none and BatchMode=yes: a host key it does not
	know, or a password it would ask for, fails at once rather than wait
	for an answer; use ssh-agent or a key without a passphrase.

OPTIONS
	--agent PATH
		Upload PATH as the agent instead of this caplin: a caplin built
		for HOST's architecture when it differs from this one's
		(GOARCH=arm64 CGO_ENABLED=0 go build ./cmd/caplin).
	--timeout D
		Give up connecting after D (default 1m).

EXIT STATUS
	0 on success, 1 when HOST could not be reached or asked, 2 for a
	usage error.
`

const remoteSynopsis = "caplin remote [--agent PATH] [--timeout D] HOST doctor|info"

// cmdAgent serves caplin's protocol on the standard input and output.
func cmdAgent(args []string) int {
	fs := newFlags("agent")
	if code := parse(fs, args, agentHelp, "caplin agent"); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		usageError("caplin agent", "caplin agent", "unexpected argument "+fs.Arg(0))
		return exitUsage
	}
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		fmt.Fprintln(os.Stderr, "caplin agent: it speaks caplin's protocol on its standard input and output, for a caplin that starts it over ssh; it is not run by hand")
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	err := remote.Serve(ctx, os.Stdin, os.Stdout, &remote.ServeOptions{Doctor: doctorText, Logger: log})
	if err != nil {
		fmt.Fprintf(os.Stderr, "caplin agent: %v\n", err)
		return 1
	}
	return exitOK
}

// cmdRemote runs caplin remote.
func cmdRemote(args []string) int {
	const name = "caplin remote"
	fs := newFlags("remote")
	agent := fs.String("agent", "", "")
	timeout := fs.Duration("timeout", time.Minute, "")
	if code := parse(fs, args, remoteHelp, remoteSynopsis); code >= 0 {
		return code
	}
	if fs.NArg() != 2 {
		usageError(name, remoteSynopsis, "want HOST and doctor or info")
		return exitUsage
	}
	dest, what := fs.Arg(0), fs.Arg(1)
	if what != "doctor" && what != "info" {
		usageError(name, remoteSynopsis, unknownWord("request", what))
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	h, err := dialHost(ctx, dest, *agent, *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	defer h.Close()
	switch what {
	case "doctor":
		text, err := h.Doctor(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			return 1
		}
		fmt.Print(text)
	case "info":
		info := h.Info()
		info.Env = nil
		b, _ := json.MarshalIndent(info, "", "  ")
		fmt.Printf("%s\n", b)
	}
	return exitOK
}

// dialHost connects to dest, giving up after timeout; the agent's
// standard error comes to ours.
func dialHost(ctx context.Context, dest, agent string, timeout time.Duration) (*remote.Host, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return remote.Dial(dctx, dest, &remote.Options{Agent: agent, Stderr: os.Stderr})
}

// remoteHosts are the connections this command opened for objects named
// ssh://HOST/PATH: each stays open (and its relay running) until caplin
// exits.
var remoteHosts struct {
	sync.Mutex
	m map[string]*remote.Host
}

// sshObject connects to the object an ssh://[USER@]HOST/PATH names: the
// socket PATH on HOST, reached through caplin's agent there.
func sshObject(ctx context.Context, object string) (*os.File, error) {
	rest, _ := strings.CutPrefix(object, "ssh://")
	dest, path, ok := strings.Cut(rest, "/")
	if !ok || dest == "" || path == "" {
		return nil, usagef("%q: want ssh://[USER@]HOST/PATH", object)
	}
	path = "/" + path
	remoteHosts.Lock()
	h := remoteHosts.m[dest]
	remoteHosts.Unlock()
	if h == nil {
		var err error
		if h, err = dialHost(ctx, dest, os.Getenv("CAPLIN_AGENT"), time.Minute); err != nil {
			return nil, err
		}
		remoteHosts.Lock()
		if remoteHosts.m == nil {
			remoteHosts.m = map[string]*remote.Host{}
		}
		remoteHosts.m[dest] = h
		remoteHosts.Unlock()
	}
	return h.Object(ctx, path)
}

// hostFlag takes caplin run's --host HOST and --agent PATH out of its
// options (those before "--").
func hostFlag(args []string) (rest []string, host, agent string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		switch a {
		case "--host", "--agent":
			if i+1 >= len(args) {
				return nil, "", "", usagef("%s takes an argument", a)
			}
			if a == "--host" {
				host = args[i+1]
			} else {
				agent = args[i+1]
			}
			i++
			continue
		}
		rest = append(rest, a)
	}
	if agent != "" && host == "" {
		return nil, "", "", usagef("--agent needs --host")
	}
	return rest, host, agent, nil
}

// runRemote runs caplin run's command line args on host, in a sandbox
// built there by the agent's supervisor from the same options: this
// process's standard fds are forwarded (a terminal as a pseudo-terminal
// there, which becomes the program's controlling terminal, this one
// raw meanwhile, its size changes following), the signals caplin gets
// are relayed, and caplin exits as the program did.
func runRemote(args []string, host, agent string) int {
	const name = "caplin run"
	sigs := make(chan os.Signal, 8)
	notifyForwarded(sigs)
	defer signal.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Interrupted while connecting: give up.
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	h, err := dialHost(ctx, host, agent, time.Minute)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: --host: %v\n", name, err)
		return exitFailure
	}
	defer h.Close()
	c, err := h.Supervisor(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: --host: %v\n", name, err)
		return exitFailure
	}
	defer c.Close()
	cancel()
	info := h.Info()
	env := info.Env
	terminal := false
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		terminal = true
		if t := os.Getenv("TERM"); t != "" {
			env = append(env, "TERM="+t)
		}
	}
	ra := supervisor.RunArgs{
		CommandLine: supervisor.CommandLine{Args: args, Env: env, Dir: info.Home},
		Terminal:    terminal,
	}
	for n, dst := range []*rpc.FD{&ra.Stdin, &ra.Stdout, &ra.Stderr} {
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err == nil {
			*dst = rpc.NewFD([]*os.File{os.Stdin, os.Stdout, os.Stderr}[n])
		}
	}
	var restore func()
	if terminal {
		// Keys go to the terminal there as typed (^C included, which
		// its line discipline turns into SIGINT for the program).
		restore = rawMode(0)
	}
	res, err := runOn(c, ra, sigs)
	if restore != nil {
		restore()
	}
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: --host %s: %s\n", name, host, jobErr(err))
		return exitFailure
	case res.Local != "":
		fmt.Fprintf(os.Stderr, "%s: --host %s: this cannot be done on another host: %s\n", name, host, res.Local)
		return exitFailure
	case res.Error != "":
		fmt.Fprintf(os.Stderr, "%s: --host %s: %s\n", name, host, res.Error)
		return res.Code
	}
	h.Close()
	dieOf(syscall.Signal(res.Relayed))
	return res.Code
}
