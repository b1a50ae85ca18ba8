// Command attachbench measures keystroke echo through a terminal
// multiplexer's client: it runs CMD (caplin attach JOB, tmux attach -t
// SESSION) on a pseudo-terminal of its own, as a person's terminal would,
// types one key at a time into it, and times each until the key comes
// back in CMD's output (echoed by the program the multiplexer runs:
// "stty raw -echo; cat"). It prints the median and the 90th percentile.
//
// Usage: attachbench N CMD [ARGS...]
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: attachbench N CMD [ARGS...]")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "attachbench: N must be a positive number")
		os.Exit(2)
	}
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	check(err)
	check(unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0))
	p, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY)
	if errno != 0 {
		check(errno)
	}
	check(unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}))
	peer := os.NewFile(p, "pty")
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = peer, peer, peer
	cmd.Env = append(os.Environ(), "TERM=xterm")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	check(cmd.Start())
	peer.Close()
	defer cmd.Process.Kill()

	out := make(chan []byte, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := unix.Read(m, buf)
			if k > 0 {
				out <- bytes.Clone(buf[:k])
			}
			if err != nil && err != unix.EINTR {
				close(out)
				return
			}
		}
	}()
	// Let the client draw its first screen.
	quiet(out, 300*time.Millisecond, 10*time.Second)
	var ds []time.Duration
	for i := range n {
		key := byte('a' + i%26)
		start := time.Now()
		_, err := unix.Write(m, []byte{key})
		check(err)
		for seen := false; !seen; {
			select {
			case b, ok := <-out:
				if !ok {
					fmt.Fprintln(os.Stderr, "attachbench: the client ended")
					os.Exit(1)
				}
				seen = bytes.IndexByte(b, key) >= 0
			case <-time.After(5 * time.Second):
				fmt.Fprintf(os.Stderr, "attachbench: key %q not echoed within 5s\n", key)
				os.Exit(1)
			}
		}
		ds = append(ds, time.Since(start))
		// Whatever else the client draws for this key (a status line).
		quiet(out, 2*time.Millisecond, time.Second)
		if i%60 == 59 {
			unix.Write(m, []byte("\r"))
			quiet(out, 20*time.Millisecond, time.Second)
		}
	}
	slices.Sort(ds)
	fmt.Printf("%.3f %.3f\n", ms(ds[len(ds)/2]), ms(ds[len(ds)*9/10]))
}

// quiet reads out until nothing came for idle, or max passed.
func quiet(out <-chan []byte, idle, max time.Duration) {
	end := time.After(max)
	for {
		select {
		case _, ok := <-out:
			if !ok {
				return
			}
		case <-time.After(idle):
			return
		case <-end:
			return
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "attachbench:", err)
		os.Exit(1)
	}
}
