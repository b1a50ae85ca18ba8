package proc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// Build a child from empty: give it a stdout, exec a program, wait for it.
func ExampleFork() {
	ctx := context.Background()
	h, err := proc.Fork(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()

	r, w, _ := os.Pipe()
	defer r.Close()
	var b proc.Batch
	b.PutFile(w, 1) // the child's stdout; it has no other fd
	if _, err := h.Run(ctx, &b); err != nil {
		fmt.Println(err)
		return
	}
	w.Close()

	p, err := h.ExecPath(ctx, "/bin/echo", []string{"echo", "hello from an empty child"}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := io.ReadAll(r)
	st, _ := p.Wait(ctx)
	fmt.Print(string(out))
	fmt.Println(st)
	// Output:
	// hello from an empty child
	// exit status 0
}

// A batch runs many calls in one round trip; later calls use earlier
// results, and a failure names its call.
func ExampleBatch() {
	ctx := context.Background()
	h, err := proc.Fork(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()

	var b proc.Batch
	fd := b.Openat(proc.AtFDCWD(), "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	dup := b.Dup3(fd, 10, 0) // the result of openat, at fd 10
	b.CloseFD(fd)
	res, err := h.Run(ctx, &b)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("dup3 returned", res.Int(dup))

	var bad proc.Batch
	bad.Getpid()
	bad.Openat(proc.AtFDCWD(), "/no/such/file", unix.O_RDONLY, 0)
	_, err = h.Run(ctx, &bad)
	fmt.Println(err)
	fmt.Println(errors.Is(err, fs.ErrNotExist))
	// Output:
	// dup3 returned 10
	// openat /no/such/file: no such file or directory (call 2 of 2)
	// true
}

// forkat: a child made inside another child's new user namespace is root
// there.
func ExampleHandle_Fork() {
	ctx := context.Background()
	h, err := proc.Fork(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	g, err := h.Fork(ctx, &proc.Options{NewUser: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Close()
	uid, err := g.Syscall(ctx, unix.SYS_GETEUID)
	fmt.Println(uid, err)
	// Output:
	// 0 <nil>
}

// Start a program in one round trip: set up its fds and exec it, as
// os/exec does, but with any system calls in between.
func ExampleSpawn() {
	ctx := context.Background()
	exe, err := os.Open("/bin/echo")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer exe.Close()

	r, w, _ := os.Pipe()
	defer r.Close()
	var b proc.Batch
	b.PutFile(w, 1)
	b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
	p, err := proc.Spawn(ctx, nil, &b, exe, []string{"echo", "spawned"}, nil)
	w.Close()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	out, _ := io.ReadAll(r)
	st, _ := p.Wait(ctx)
	fmt.Print(string(out))
	fmt.Println(st)
	// Output:
	// spawned
	// exit status 0
}
