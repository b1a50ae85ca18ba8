package remote_test

import (
	"context"
	"fmt"
	"os"

	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/remote"
	"golang.org/x/sys/unix"
)

// A child on another host, built from here by system calls as a local
// one is, and a program exec'd in it whose output comes here.
func Example() {
	ctx := context.Background()
	h, err := remote.Dial(ctx, "user@build-box", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close() // everything built there dies with the connection

	hd, err := h.Fork(ctx, &proc.Options{NewUser: true, NewNet: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer hd.Close()
	var b proc.Batch
	b.PutFile(os.Stdout, 1) // forwarded: the program's output comes here
	dir := b.Openat(proc.AtFDCWD(), "/srv/data", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	b.Fchdir(dir)
	b.CloseFD(dir)
	if _, err := hd.Run(ctx, &b); err != nil { // one round trip
		fmt.Println(err)
		return
	}
	p, err := hd.ExecPath(ctx, "/bin/ls", []string{"ls"}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	e, err := p.Wait(ctx)
	fmt.Println(e, err)
}

// A program on the host with its standard output here.
func ExampleHost_Run() {
	ctx := context.Background()
	h, err := remote.Dial(ctx, "build-box", &remote.Options{SSH: "ssh -F ./ssh_config"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	e, err := h.Run(ctx, &remote.Cmd{Args: []string{"uname", "-r"}, Env: []string{"PATH=/usr/bin:/bin"}, Files: []*os.File{nil, os.Stdout}})
	fmt.Println(e, err)
}
