package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// A server lets clients write to its log through pipes it can take back.
func ExampleRevocableStream() {
	ctx := context.Background()
	logR, logW, err := os.Pipe() // the server reads its log from logR
	if err != nil {
		fmt.Println(err)
		return
	}
	defer logR.Close()
	defer logW.Close()

	var mu sync.Mutex
	var revokes []func()
	methods := rpc.Methods{
		// log returns a writer into the server's log.
		"log": rpc.Method(func(_ context.Context, _ struct{}) (rpc.FD, error) {
			// Not the call's ctx: it ends when the call returns, and
			// would revoke the writer at once.
			end, revoke, err := rpc.RevocableStream(ctx, logW)
			if err != nil {
				return rpc.FD{}, err
			}
			mu.Lock()
			revokes = append(revokes, revoke)
			mu.Unlock()
			return rpc.NewFD(end), nil // closed once sent
		}),
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &rpc.Server{}
	defer srv.Shutdown(ctx)
	if err := srv.ServeFile(ctx, os.NewFile(uintptr(fds[1]), "server"), methods); err != nil {
		fmt.Println(err)
		return
	}
	c, err := rpc.NewClient(os.NewFile(uintptr(fds[0]), "client"), rpc.ClientOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// The client gets a writer and writes a line.
	var w rpc.FD
	if err := c.Call(ctx, "log", struct{}{}, &w); err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	w.File.WriteString("hello\n")
	line := make([]byte, 6)
	io.ReadFull(logR, line)
	fmt.Print(string(line))

	// The server takes every writer back; the client's pipe is dead.
	mu.Lock()
	for _, revoke := range revokes {
		revoke()
	}
	mu.Unlock()
	_, err = w.File.WriteString("more\n")
	fmt.Println(errors.Is(err, syscall.EPIPE))
	// Output:
	// hello
	// true
}
