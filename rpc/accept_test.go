package rpc_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// envAcceptHelper makes the test binary a server listening on the socket
// it names, with RLIMIT_NOFILE set so that it can hold acceptSlots
// connections and no more.
const envAcceptHelper = "CAPLIN_RPC_ACCEPT_HELPER"

const acceptSlots = 3

// acceptHelper is the server of TestServeOutOfFDs, when the test binary
// is run as it.
func acceptHelper() {
	path := os.Getenv(envAcceptHelper)
	if path == "" {
		return
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	// Fill the holes in the descriptor table, and end it acceptSlots
	// past the highest descriptor in use.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	high := 0
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > high {
			high = n
		}
	}
	for {
		fd, err := unix.Dup(0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if fd > high {
			unix.Close(fd)
			break
		}
	}
	lim := uint64(high + 1 + acceptSlots)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim, Max: lim}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	srv := &rpc.Server{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	os.Stdout.WriteString("ready\n")
	err = srv.Serve(context.Background(), ln, func(*unix.Ucred) rpc.Handler {
		return rpc.Methods{"ping": rpc.Method(func(_ context.Context, n int) (int, error) { return n + 1, nil })}
	})
	fmt.Fprintf(os.Stderr, "Serve returned: %v\n", err)
	os.Exit(1)
}

// TestServeOutOfFDs runs a server that can hold three connections and
// connects five clients: the two beyond what it can hold wait (accept
// fails with EMFILE) rather than end the server, and are served once
// two of the first go. The failures, retried many times, are logged once.
func TestServeOutOfFDs(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sock")
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envAcceptHelper+"="+path)
	var stderr bytes.Buffer
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return stderr.Write(b) })
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("the server said %q, %v", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ping := func(c *rpc.Client, n int) error {
		var r int
		if err := c.Call(ctx, "ping", n, &r); err != nil {
			return err
		}
		if r != n+1 {
			return fmt.Errorf("ping %d = %d", n, r)
		}
		return nil
	}
	var clients []*rpc.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := range acceptSlots + 2 {
		c, err := rpc.Dial(ctx, path, rpc.ClientOptions{})
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	for i, c := range clients[:acceptSlots] {
		if err := ping(c, i); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	// The server is out of descriptors and the last two wait. Long
	// enough for the retries to reach their longest pause.
	time.Sleep(1500 * time.Millisecond)
	select {
	case err := <-exited:
		exited <- err
		mu.Lock()
		t.Fatalf("the server exited (%v) when out of descriptors:\n%s", err, stderr.String())
	default:
	}
	for _, c := range clients[:2] {
		c.Close()
	}
	for i, c := range clients[acceptSlots:] {
		if err := ping(c, i); err != nil {
			mu.Lock()
			t.Fatalf("client %d after two went: %v\nserver:\n%s", acceptSlots+i, err, stderr.String())
		}
	}
	mu.Lock()
	logged := strings.Count(stderr.String(), "accept failed")
	log := stderr.String()
	mu.Unlock()
	// One run of failures, or two if the server accepted one client
	// before the second left; not one line per retry.
	if logged < 1 || logged > 2 {
		t.Errorf("the server logged %d accept failures; want 1 or 2:\n%s", logged, log)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
