// Command gorelay is the least a terminal multiplexer written in Go can
// be: the floor for caplin attach's keystroke echo. Its server runs a
// program on a pseudo-terminal and listens on a Unix socket; its client
// connects, puts its terminal in raw mode, and copies keys to the socket
// and the socket to its terminal. Each side is two io.Copy goroutines and
// nothing else: no scrollback, no leases, no protocol. The hops are the
// ones caplin attach and tmux make (terminal, client, socket, server,
// program's terminal, and back).
//
// With -poll, each side is instead one loop on a locked thread that waits
// in poll(2) for either of its two inputs and reads and writes with plain
// system calls, as a C relay would (tmux's, with libevent): the other
// shape a Go relay can take.
//
// Usage:
//
//	gorelay server [-poll] SOCKET CMD [ARGS...]   (stays in the foreground;
//	                                              with -poll, until its client ends)
//	gorelay client [-poll] SOCKET
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	args := os.Args[1:]
	if len(args) < 2 {
		usage()
	}
	mode := args[0]
	args = args[1:]
	poll := args[0] == "-poll"
	if poll {
		args = args[1:]
	}
	switch {
	case mode == "server" && len(args) >= 2:
		server(args[0], args[1:], poll)
	case mode == "client" && len(args) == 1:
		client(args[0], poll)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: gorelay server [-poll] SOCKET CMD [ARGS...] | gorelay client [-poll] SOCKET")
	os.Exit(2)
}

// server runs argv on a new pseudo-terminal and relays it to each
// client that connects, one at a time (with poll, to the first only).
func server(sock string, argv []string, poll bool) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	check(err)
	check(unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0))
	p, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY)
	if errno != 0 {
		check(errno)
	}
	check(unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}))
	peer := os.NewFile(p, "pty")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = peer, peer, peer
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	check(cmd.Start())
	peer.Close()
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	check(err)
	if poll {
		c, err := l.Accept()
		check(err)
		f, err := c.(*net.UnixConn).File() // a blocking duplicate
		check(err)
		check(unix.SetNonblock(m, false))
		pollLoop(int(f.Fd()), m, m, int(f.Fd()))
		return
	}
	pty := os.NewFile(uintptr(m), "ptmx") // non-blocking: Go's poller
	// The program's output goes to the client of the moment.
	var cur atomic.Pointer[net.Conn]
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := pty.Read(buf)
			if c := cur.Load(); n > 0 && c != nil {
				(*c).Write(buf[:n])
			}
			if err != nil {
				os.Exit(0)
			}
		}
	}()
	for {
		c, err := l.Accept()
		check(err)
		if old := cur.Swap(&c); old != nil {
			(*old).Close()
		}
		go io.Copy(pty, c)
	}
}

// client relays its terminal to the server's program.
func client(sock string, poll bool) {
	c, err := net.Dial("unix", sock)
	check(err)
	if old, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		raw := *old
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		check(unix.IoctlSetTermios(0, unix.TCSETS, &raw))
		defer unix.IoctlSetTermios(0, unix.TCSETS, old)
	}
	if poll {
		f, err := c.(*net.UnixConn).File()
		check(err)
		pollLoop(0, int(f.Fd()), int(f.Fd()), 1)
		return
	}
	go io.Copy(os.Stdout, c)
	io.Copy(c, os.Stdin)
}

// pollLoop copies what comes on a to aw, and what comes on b to bw, on
// one locked thread, until either ends. The fds are blocking.
func pollLoop(a, aw, b, bw int) {
	runtime.LockOSThread()
	buf := make([]byte, 32<<10)
	fds := []unix.PollFd{{Fd: int32(a), Events: unix.POLLIN}, {Fd: int32(b), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err == unix.EINTR {
			continue
		} else if err != nil {
			return
		}
		for i, pair := range [2][2]int{{a, aw}, {b, bw}} {
			if fds[i].Revents == 0 {
				continue
			}
			n, err := unix.Read(pair[0], buf)
			if n <= 0 || err != nil {
				return
			}
			if _, err := unix.Write(pair[1], buf[:n]); err != nil {
				return
			}
		}
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "gorelay:", err)
		os.Exit(1)
	}
}
