package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The script commands of the fallback tests (testdata/script/fallback.txtar),
// each run by testscript in a process of its own, a re-run of the test
// binary, so that what they do to themselves stays there:
//
//	nouserns caplin ARGS...       run caplin in a new user namespace whose
//	                              user.max_user_namespaces is 0, so that
//	                              making another fails with ENOSPC
//	dockerseccomp caplin ARGS...  run caplin under a seccomp filter shaped
//	                              like Docker's default profile for a
//	                              container without CAP_SYS_ADMIN
//	noptrace caplin ARGS...       run caplin under a seccomp filter that
//	                              refuses pidfd_getfd and process_vm_readv
//	escapes FILE [SOCKET]         in a sandbox: try what a sandbox without
//	                              namespaces must still refuse (reading
//	                              FILE, connecting to the host's Unix
//	                              socket SOCKET, ...), print what
//	                              happened, exit 1 if any got through

// envNestedNS marks the re-run of nouserns inside its user namespace.
const envNestedNS = "CAPLIN_TEST_NESTED_USERNS"

// noUserNS is the script command nouserns.
func noUserNS() int {
	if os.Getenv(envNestedNS) == "" {
		// Re-run this command in a new user namespace, as its root
		// (the caller's uid outside): a namespace's root may set its
		// namespace's limits, which bind it and those nested in it only.
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Args[0] = os.Args[0] // testscript runs the command argv[0] names
		cmd.Env = append(os.Environ(), envNestedNS+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
			Pdeathsig:   unix.SIGKILL,
		}
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode()
			}
			fmt.Fprintln(os.Stderr, "nouserns:", err)
			return 99
		}
		return 0
	}
	return underCondition("nouserns", unix.ENOSPC, func() error {
		return os.WriteFile("/proc/sys/user/max_user_namespaces", []byte("0\n"), 0)
	})
}

// underCondition makes the condition of the script command name with
// make, checks that a child in a new user namespace then fails with want,
// and runs caplin's command line os.Args[1:].
func underCondition(name string, want unix.Errno, make func() error) int {
	if err := make(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 99
	}
	if err := startInUserNS(); !errors.Is(err, want) {
		fmt.Fprintf(os.Stderr, "%s: a child in a new user namespace: %v, want %v\n", name, err, unix.ErrnoName(want))
		return 99
	}
	return entry(os.Args[1:])
}

// startInUserNS starts /bin/true in a new user namespace (os/exec's
// clone with CLONE_NEWUSER), as a check of the condition a command made,
// independent of caplin's code.
func startInUserNS() error {
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER}
	if err := cmd.Start(); err != nil {
		return err
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil
}

// dockerSeccomp is the script command dockerseccomp.
func dockerSeccomp() int {
	return underCondition("dockerseccomp", unix.EPERM, func() error { return installFilter(dockerFilter()) })
}

// noPtrace is the script command noptrace: caplin's command line
// os.Args[1:] under a seccomp filter that refuses pidfd_getfd and
// process_vm_readv (EPERM), as a container's profile may without
// CAP_SYS_PTRACE.
func noPtrace() int {
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	if runtime.GOARCH == "arm64" {
		arch = unix.AUDIT_ARCH_AARCH64
	}
	const (
		ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	f := []unix.SockFilter{
		{Code: ldW, K: 4},
		{Code: jeqK, K: arch, Jt: 0, Jf: 3},
		{Code: ldW, K: 0},
		{Code: jeqK, K: unix.SYS_PIDFD_GETFD, Jt: 2, Jf: 0},
		{Code: jeqK, K: unix.SYS_PROCESS_VM_READV, Jt: 1, Jf: 0},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	}
	if err := installFilter(f); err != nil {
		fmt.Fprintln(os.Stderr, "noptrace:", err)
		return 99
	}
	return entry(os.Args[1:])
}

// dockerFilter is a classic BPF seccomp program with the rules of
// Docker's default profile (github.com/moby/profiles/seccomp, v0.3.0,
// default_linux.go) that concern namespaces and mounts, for a container
// without CAP_SYS_ADMIN: clone with any CLONE_NEW* flag, unshare, setns
// and the mount calls fail with EPERM (the profile's default action, since
// only CAP_SYS_ADMIN allows them), clone3 with ENOSYS (so that C
// libraries fall back to clone, whose flags a filter can see). Everything
// else is allowed: the rest of the profile is an allowlist of the calls
// ordinary programs make.
func dockerFilter() []unix.SockFilter {
	const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
		unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	if runtime.GOARCH == "arm64" {
		arch = unix.AUDIT_ARCH_AARCH64
	}
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jeq := func(k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: jt, Jf: jf}
	}
	const (
		ldW    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		ret    = unix.BPF_RET | unix.BPF_K
		allow  = unix.SECCOMP_RET_ALLOW
		eperm  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		enosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	denied := []uint32{unix.SYS_UNSHARE, unix.SYS_SETNS, unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT,
		unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK, unix.SYS_OPEN_TREE,
		unix.SYS_MOVE_MOUNT, unix.SYS_MOUNT_SETATTR}
	// The program, whose jumps count the instructions they skip:
	//	0   load arch; 1 not ours: allow (jump to the end's allow)
	//	2   load nr
	//	3.. one jeq per denied call, to the EPERM return
	//	    jeq clone3 -> ENOSYS; jeq clone -> its flags
	//	    allow; EPERM; ENOSYS
	//	    flags: load args[0] low word; and nsFlags; jeq 0 -> allow, else EPERM
	n := len(denied)
	// Indexes of the returns, relative to the instruction after each jeq.
	var p []unix.SockFilter
	p = append(p, stmt(ldW, 4))
	// if arch != ours: allow. The allow return is at index 3+n+2.
	allowAt := 3 + n + 2
	p = append(p, jeq(arch, 0, uint8(allowAt-2)))
	p = append(p, stmt(ldW, 0))
	for i, nr := range denied {
		at := 3 + i
		p = append(p, jeq(nr, uint8(allowAt+1-at-1), 0))
	}
	at := 3 + n
	p = append(p, jeq(unix.SYS_CLONE3, uint8(allowAt+2-at-1), 0))
	at++
	p = append(p, jeq(unix.SYS_CLONE, uint8(allowAt+3-at-1), uint8(allowAt-at-1)))
	p = append(p, stmt(ret, allow), stmt(ret, eperm), stmt(ret, enosys))
	// args[0] of seccomp_data, its low 32 bits (both arches are
	// little-endian), where every CLONE_NEW* flag is.
	p = append(p, stmt(ldW, 16),
		unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: nsFlags},
		jeq(0, 0, 1),
		stmt(ret, allow), stmt(ret, eperm))
	return p
}

// escapes is the script command escapes FILE: run in a sandbox, it tries
// to read FILE and create a file beside it, to open sockets of every
// family but Unix, to signal and trace its parent (caplin, outside the
// sandbox) and pid 1, and to make a user namespace, and fails if any of
// that works, or if a Unix socket cannot be made.
func escapes() int {
	if len(os.Args) != 2 && len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: escapes FILE [SOCKET]")
		return 2
	}
	escaped := false
	check := func(what string, err error) {
		if err == nil {
			escaped = true
			fmt.Printf("%s: ESCAPED\n", what)
			return
		}
		fmt.Printf("%s: refused: %v\n", what, err)
	}
	_, err := os.ReadFile(os.Args[1])
	check("read "+os.Args[1], err)
	check("create a file beside it", os.WriteFile(os.Args[1]+".escape", nil, 0o600))
	for _, s := range []struct {
		name         string
		domain, kind int
	}{
		{"inet tcp", unix.AF_INET, unix.SOCK_STREAM}, {"inet udp", unix.AF_INET, unix.SOCK_DGRAM},
		{"inet6 tcp", unix.AF_INET6, unix.SOCK_STREAM}, {"netlink", unix.AF_NETLINK, unix.SOCK_RAW},
		{"packet", unix.AF_PACKET, unix.SOCK_RAW},
	} {
		fd, err := unix.Socket(s.domain, s.kind|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		check("socket "+s.name, err)
	}
	// Allowed, unless connects cannot be trapped (noptrace): said, not
	// judged.
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		fmt.Printf("socket unix: refused: %v\n", err)
	} else {
		fmt.Println("socket unix: allowed")
		unix.Close(fd)
	}
	if fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		fmt.Printf("socketpair unix: %v, want it allowed\n", err)
		escaped = true
	} else {
		unix.Close(fds[0])
		unix.Close(fds[1])
	}
	if len(os.Args) == 3 {
		// A Unix socket of the host's, outside the grants: Landlock's
		// file rules do not cover connect.
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: os.Args[2]})
			unix.Close(fd)
		}
		check("connect "+os.Args[2], err)
	}
	for _, pid := range []int{os.Getppid(), 1} {
		a := strconv.Itoa(pid)
		check("signal "+a, unix.Kill(pid, 0))
		check("ptrace "+a, ptraceAttach(pid))
	}
	check("unshare(CLONE_NEWUSER)", unix.Unshare(unix.CLONE_NEWUSER))
	if escaped {
		return 1
	}
	fmt.Println("all refused")
	return 0
}

// ptraceAttach attaches to pid and detaches at once if that worked.
func ptraceAttach(pid int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceAttach(pid); err != nil {
		return err
	}
	unix.PtraceDetach(pid)
	return nil
}
