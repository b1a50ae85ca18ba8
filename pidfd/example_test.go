package pidfd_test

import (
	"context"
	"fmt"
	"os/exec"
	"syscall"

	"github.com/caplin-dev/caplin/pidfd"
)

// Hold a process by pidfd: signal it without pid-reuse races and wait for
// it without a thread per process.
func ExampleOpen() {
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		fmt.Println(err)
		return
	}
	p, err := pidfd.Open(cmd.Process.Pid)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close() // kill-on-close

	p.Signal(syscall.SIGTERM)
	st, err := p.Wait(context.Background())
	fmt.Println(st, err)
	// Output:
	// signal: terminated <nil>
}
