package bwrap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExecStatus maps a failure of sandbox.Sandbox.Exec of path to the exit
// status a shell (and caplin run) gives it, and a message that says why:
// 127 for a program not found, 126 for one that cannot be executed, 125
// for anything else (the process gone, say: not the program's failure).
func ExecStatus(path string, err error) (int, string) {
	// execveat's own failure is an *os.PathError; anything else is
	// caplin's.
	var pe *os.PathError
	var errno syscall.Errno
	if !errors.As(err, &pe) || !errors.As(pe.Err, &errno) {
		return 125, err.Error()
	}
	if errno == unix.ENOENT {
		if !strings.Contains(path, "/") {
			return 127, fmt.Sprintf("%s: command not found in the sandbox's PATH", path)
		}
		return 127, fmt.Sprintf("%s: no such file or directory in the sandbox (or its #! interpreter or dynamic loader is missing there)", path)
	}
	return 126, fmt.Sprintf("cannot execute %s: %v", path, errno)
}

// Lookup returns the resolver of the sandbox's --connect rules and
// resolver (sandbox.WithConnectLookup): --add-host's names first, then
// the host's resolver; nil without --add-host.
func (c *Command) Lookup() func(ctx context.Context, name string) ([]netip.Addr, error) {
	if len(c.Hosts) == 0 {
		return nil
	}
	hosts := c.Hosts
	return func(ctx context.Context, name string) ([]netip.Addr, error) {
		if as, ok := hosts[strings.ToLower(strings.TrimSuffix(name, "."))]; ok {
			return as, nil
		}
		return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	}
}
