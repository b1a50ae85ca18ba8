package sandbox_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/caplin-dev/caplin/sandbox"
)

// Run a shell in a sandbox that has the system's programs, read-only, and
// nothing else: not the caller's files, network or processes.
func ExampleBuild() {
	ctx := context.Background()
	r, w, _ := os.Pipe()
	defer r.Close()
	sb, err := sandbox.Build(ctx, &sandbox.Spec{
		Mounts: sandbox.SystemMounts(),
		Files:  map[int]*os.File{1: w}, // its stdout; it gets no other fd
		Env:    []string{"PATH=/usr/bin:/bin"},
	})
	w.Close()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "sh", []string{"sh", "-c", "echo pid $$; ls /home 2>/dev/null || echo no /home"})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := io.ReadAll(r)
	st, _ := p.Wait(ctx)
	fmt.Print(string(out))
	fmt.Println(st)
	// Output:
	// pid 2
	// no /home
	// exit status 0
}

// Run a program in a sandbox and wait for it, in one call: the sandbox is
// built from the spec, and gone when Run returns.
func ExampleRun() {
	ctx := context.Background()
	st, err := sandbox.Run(ctx, &sandbox.Spec{
		Mounts: sandbox.SystemMounts(),
		Files:  map[int]*os.File{1: os.Stdout},
		Env:    []string{"PATH=/usr/bin:/bin"},
	}, "echo", []string{"echo", "hello from a sandbox"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.Success())
	// Output:
	// hello from a sandbox
	// true
}

// A launcher that starts many sandboxes from one spec makes the costly
// part once.
func ExampleTemplate() {
	ctx := context.Background()
	tmpl, err := sandbox.NewTemplate(ctx, &sandbox.Spec{Mounts: sandbox.SystemMounts()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tmpl.Close()
	for i := 0; i < 3; i++ {
		sb, err := tmpl.NewSandbox(ctx, nil, nil)
		if err != nil {
			fmt.Println(err)
			return
		}
		p, err := sb.Exec(ctx, "/bin/true", []string{"true"})
		if err != nil {
			fmt.Println(err)
			return
		}
		st, _ := p.Wait(ctx)
		sb.Close()
		fmt.Println(st)
	}
	// Output:
	// exit status 0
	// exit status 0
	// exit status 0
}
