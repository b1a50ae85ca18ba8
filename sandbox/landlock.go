package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// Landlock access rights by the ABI version that brought them (Linux 5.13
// ABI 1, 5.19 ABI 2, 6.2 ABI 3, 6.7 ABI 4, 6.10 ABI 5, 6.12 ABI 6).
const (
	fsABI1 = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	fsABI2 = fsABI1 | unix.LANDLOCK_ACCESS_FS_REFER
	fsABI3 = fsABI2 | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	fsABI5 = fsABI3 | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV

	netABI4   = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
	scopeABI6 = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL

	// Rights that a rule on a file (not a directory) may carry.
	fsFileRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE |
		unix.LANDLOCK_ACCESS_FS_IOCTL_DEV

	// AccessRead is what a read-only grant allows: read and execute files,
	// list directories.
	AccessRead = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	// AccessWrite is what a read-write grant allows: everything.
	AccessWrite = fsABI5
)

// PathGrant is access to the tree beneath Path (or to the file Path).
type PathGrant struct {
	Path   string
	Access uint64 // LANDLOCK_ACCESS_FS_* bits, e.g. AccessRead
	// Kind says whether Path is a directory or a file, for a Path the
	// caller cannot stat (a path inside a sandbox's root). Zero: stat it.
	Kind PathKind
}

// PathKind is what a PathGrant names.
type PathKind int

const (
	PathStat PathKind = iota // find out with stat(2), in the caller
	PathDir                  // a directory
	PathFile                 // a file
)

// LandlockPolicy is what a process may reach once Landlock restricts it.
// Everything it does not grant is denied: files outside the grants, TCP
// binds and connects (ABI 4), abstract Unix sockets and signals to
// processes outside the sandbox (ABI 6).
type LandlockPolicy struct {
	Paths []PathGrant
	// ConnectTCP and BindTCP list the TCP ports the process may connect to
	// and bind (ABI 4). Nil: none.
	ConnectTCP, BindTCP []uint16
	// AnyTCP leaves TCP unrestricted (ConnectTCP and BindTCP are then
	// ignored): for a process in a network namespace of its own, or one
	// meant to use the host's network.
	AnyTCP bool
	// AnyAbstractUnix leaves abstract Unix sockets unscoped, for a process
	// meant to reach the host's (signals are scoped still).
	AnyAbstractUnix bool
	// BestEffort applies what the kernel supports and reports what it
	// could not in the dropped list that ApplyLandlock and Record return. By default asking for
	// more than the kernel can enforce is an error.
	BestEffort bool
}

// LandlockABI returns the Landlock ABI version of the running kernel: 0
// with an *UnsupportedError saying why when Landlock is unavailable.
func LandlockABI() (int, error) {
	abi, kerr := kernel.LandlockABI()
	if kerr == nil {
		return abi, nil
	}
	err := &UnsupportedError{Feature: "Landlock", MinKernel: kernelForABI(1), Err: kerr}
	switch {
	case errors.Is(kerr, unix.ENOSYS):
		err.Detail = "built with CONFIG_SECURITY_LANDLOCK"
	case errors.Is(kerr, unix.EOPNOTSUPP):
		err.Detail = "enabled at boot: add landlock to lsm="
	default:
		err.Detail = "the check for it failed"
	}
	return 0, err
}

// Record adds to b the calls that restrict the child, for a kernel with
// Landlock ABI abi: create a ruleset, add a rule per grant (opening each
// path in the child), set no_new_privs, restrict. It returns what
// BestEffort dropped; without BestEffort a policy the kernel cannot enforce
// is an *UnsupportedError naming the first Linux release that can, and
// nothing is recorded.
func (p *LandlockPolicy) Record(b *proc.Batch, abi int) (dropped []string, err error) {
	if abi < 1 {
		return nil, &UnsupportedError{Feature: "Landlock", MinKernel: kernelForABI(1), Detail: fmt.Sprintf("have ABI %d", abi), Err: unix.ENOSYS}
	}
	fs := fsHandled(abi)
	var drop []string
	need := abi // the ABI that would enforce all of it
	if abi < 4 && !p.AnyTCP {
		drop = append(drop, fmt.Sprintf("TCP bind/connect restriction (needs Landlock ABI 4, Linux %s; have %d)", kernelForABI(4), abi))
		need = max(need, 4)
	}
	if abi < 6 {
		drop = append(drop, fmt.Sprintf("abstract Unix socket and signal scoping (needs Landlock ABI 6, Linux %s; have %d)", kernelForABI(6), abi))
		need = max(need, 6)
	}
	for _, g := range p.Paths {
		if extra := g.Access &^ fs; extra != 0 {
			drop = append(drop, fmt.Sprintf("rights %#x on %s (not in ABI %d)", extra, g.Path, abi))
			need = max(need, abiOfRights(extra))
		}
	}
	if len(drop) > 0 && !p.BestEffort {
		return nil, &UnsupportedError{Feature: "Landlock ABI " + strconv.Itoa(need), MinKernel: kernelForABI(need),
			Detail: fmt.Sprintf("have ABI %d, which cannot enforce: %s", abi, strings.Join(drop, "; ")), Err: unix.ENOSYS}
	}
	attr := unix.LandlockRulesetAttr{Handled_access_fs: fs}
	if abi >= 4 && !p.AnyTCP {
		attr.Handled_access_net = netABI4
	}
	if abi >= 6 {
		attr.Scoped = scopeABI6
		if p.AnyAbstractUnix {
			attr.Scoped = unix.LANDLOCK_SCOPE_SIGNAL
		}
	}
	rs := b.LandlockCreateRuleset(&attr, 0)
	for _, g := range p.Paths {
		access, err := g.effectiveAccess(fs)
		if err != nil {
			return nil, err
		}
		fd := b.Openat(proc.AtFDCWD(), g.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
		b.LandlockAddPathRule(rs, access, fd)
		b.CloseFD(fd)
	}
	if abi >= 4 && !p.AnyTCP {
		for _, port := range p.ConnectTCP {
			b.LandlockAddNetRule(rs, unix.LANDLOCK_ACCESS_NET_CONNECT_TCP, port)
		}
		for _, port := range p.BindTCP {
			b.LandlockAddNetRule(rs, unix.LANDLOCK_ACCESS_NET_BIND_TCP, port)
		}
	}
	b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
	b.LandlockRestrictSelf(rs, 0)
	b.CloseFD(rs)
	return drop, nil
}

// abiOfRights returns the first Landlock ABI that handles every file-system
// right in access.
func abiOfRights(access uint64) int {
	for abi := 1; abi <= 5; abi++ {
		if access&^fsHandled(abi) == 0 {
			return abi
		}
	}
	return len(landlockKernel) // rights no ABI caplin knows handles
}

// fsHandled returns the file-system rights Landlock ABI abi handles.
func fsHandled(abi int) uint64 {
	switch {
	case abi >= 5:
		return fsABI5
	case abi >= 3:
		return fsABI3
	case abi >= 2:
		return fsABI2
	}
	return fsABI1
}

// ApplyLandlock restricts the child of h with p, in one round trip.
func ApplyLandlock(ctx context.Context, h *proc.Handle, p *LandlockPolicy) (dropped []string, err error) {
	abi, err := LandlockABI()
	if err != nil && !p.BestEffort {
		return nil, err
	}
	if abi < 1 {
		return []string{"Landlock altogether: " + err.Error()}, nil
	}
	var b proc.Batch
	dropped, err = p.Record(&b, abi)
	if err != nil {
		return nil, err
	}
	if _, err := h.Run(ctx, &b); err != nil {
		return nil, fmt.Errorf("sandbox: landlock: %w", err)
	}
	return dropped, nil
}

// effectiveAccess returns the rights g grants on a kernel that handles
// the file-system rights fs: a file (by its kind, or found by stat for
// PathStat) gets only the rights that apply to files.
func (g PathGrant) effectiveAccess(fs uint64) (uint64, error) {
	access := g.Access & fs
	kind := g.Kind
	if kind == PathStat {
		st, err := os.Stat(g.Path)
		if err != nil {
			return 0, fmt.Errorf("sandbox: landlock grant %s: %w", g.Path, err)
		}
		kind = PathDir
		if !st.IsDir() {
			kind = PathFile
		}
	}
	if kind == PathFile {
		access &= fsFileRights
	}
	return access, nil
}
