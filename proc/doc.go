// Package proc builds processes from empty: Fork returns a Handle to a
// fresh, single-threaded child that runs system calls for its parent
// (openat, dup3, unshare, setresuid, mount, landlock, seccomp, ...) until the
// parent execs it. The child's state is set up with the ordinary system
// calls, run in the child, rather than with a fixed list of spawn options.
//
//	h, _ := proc.Fork(ctx, &proc.Options{NewUser: true, NewNet: true})
//	defer h.Close()
//	var b proc.Batch
//	b.PutFile(os.Stdin, 0)
//	b.PutFile(os.Stdout, 1)
//	fd := b.Openat(proc.AtFDCWD(), "/data", unix.O_RDONLY|unix.O_DIRECTORY, 0)
//	b.Fchdir(fd)
//	b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
//	h.Run(ctx, &b)                    // one round trip
//	p, _ := h.ExecPath(ctx, "/bin/ls", []string{"ls"}, nil)
//	st, _ := p.Wait(ctx)
//
// To start a program, Spawn does the same in one round trip and at about
// the cost of os/exec: the setup batch runs in a child that shares its
// parent's memory until it execs, as after vfork(2), so no fork copies
// anything.
//
//	var b proc.Batch
//	b.PutFile(os.Stdout, 1)
//	b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
//	p, _ := proc.Spawn(ctx, &proc.Options{NewNet: true}, &b, exe, []string{"ls"}, nil)
//
// SpawnPath does the same with a path, looked up in the child after its
// setup. The environment given to Spawn and Exec is the program's whole
// environment: nil is an empty one, not the caller's as in os/exec.
//
// # The child
//
// A child is forked in pure Go, between the runtime's BeforeFork and
// AfterFork hooks, like os/exec's, but without CLONE_VM: it is a copy of one
// thread of the caller, running allocation-free, nosplit code that reads
// requests from a SOCK_SEQPACKET control socket and answers each with one
// reply. Because it is single-threaded it can unshare(CLONE_NEWUSER), which
// a Go program cannot. It holds no fd of the caller's but its control
// socket, which is close-on-exec, so after Exec the program holds exactly
// the fds set up in the child without close-on-exec.
//
// Children are not forked from the caller itself but from a zygote, a child
// forked once that drops the caller's Go heap. Forking from it costs the
// same whether the caller has 20 MiB or 20 GiB resident, and the caller's
// own memory is never write-protected for copy-on-write by a fork. The
// zygote is made by the first Fork or Spawn that needs it, or ahead of
// time by Prepare; it is made apart from that caller's context, so a
// caller that gives up gets its context's error and the zygote is made
// all the same. Options.From chooses where a child comes from: the tree
// zygote (the zero value, InTree), the plain zygote (Detached) or the
// caller itself (Direct).
//
// # The Go runtime
//
// The child runs Go code with no runtime under it, which relies on
// runtime internals no release promises to keep: the fork hooks the
// runtime gives package syscall, the goroutine's g kept in the thread's
// TLS slot (amd64), and where /proc/self/maps shows the heap, the
// binary's data and its bss. The first fork checks each of them that can
// be checked and fails with an error that names the Go version and what
// changed, rather than let a child crash; the checks test the assumptions
// themselves, not a list of known Go versions.
//
// # Calls and batches
//
// Each call is defined once, by a Batch method that records it. The Handle
// method of the same name is generated from it (go generate; see
// docs/proc.md): it runs that one call in one round trip and returns the
// child's result, or an *os.PathError or *os.SyscallError that names the
// call, its path or fd, and the errno. (close(2) is CloseFD in both forms;
// Handle.Close ends the handle itself.) A Batch records many calls, whose
// arguments may be the results of earlier ones (openat → dup3 of its result
// → close), and Handle.Run sends them in one message (in parts, one round
// trip each, when they outgrow one: docs/proc.md); it stops at the first
// failure and returns a *BatchError with its index. Calls before it took
// effect. Arguments that live in memory (paths, structs, argv arrays,
// seccomp programs) are placed in a child-side arena by the call itself;
// Alloc, WriteMem and ReadMem manage child memory for raw calls. No ptrace
// access is needed: everything moves over the control socket.
//
// Fds cross both ways: Batch.PutFile sends a parent file to the child and
// installs it at a chosen number; Batch.TakeFile brings a child fd back as
// an *os.File.
//
// # Concurrency and cancellation
//
// A Handle is safe for concurrent use; calls are serialized, one round trip
// at a time. A cancelled context kills the child (SIGKILL), since a system
// call blocked in it cannot be interrupted otherwise, and the handle is then
// dead (ErrDead).
//
// # States
//
// A Handle is live until Exec succeeds (then its calls return ErrExeced and
// the returned Process is the caller's), Close is called (fs.ErrClosed), or
// the child dies (ErrDead). A failed Exec leaves the handle live, with the
// calls made before it in effect. Close kills and reaps a child that has not
// exec'd; so does the garbage collector, at a time of its choosing, for a
// Handle dropped without Close. Handle.Pid is the child's pid in the
// caller's pid namespace; the Getpid call returns the child's own view,
// in its pid namespace (2 for a child of the tree zygote, say).
//
// # Kill-on-close
//
// A Process (package pidfd) is killed when it is closed. When the Go
// process that built children dies — SIGKILL included — they die too: by
// default every child is made inside the pid namespace of a "tree zygote"
// that has PR_SET_PDEATHSIG(SIGKILL), set from a thread that never exits.
// When the owner dies the zygote is killed, and the kernel kills every
// process in its pid namespace: all the processes built and everything they
// forked, double-forked daemons included. No helper process runs per child.
// Without CAP_SYS_ADMIN the tree zygote is made in a user namespace of its
// own that maps the caller's uid and gid to themselves, so this needs
// unprivileged user namespaces; where the kernel refuses them, Fork fails
// with an error that says so, and Options.From = Detached does without.
//
// The limits: the processes built share that pid namespace, so one of them
// can signal the others (kill -9 -1 kills its siblings), though not the
// zygote, which as the namespace's init gets no signal it has no handler
// for; confinement that separates them is the sandbox package's job.
// Unprivileged, a child holds the capabilities of the zygote's user
// namespace until it execs (it is a copy of the namespace's creator); a
// program exec'd with a non-zero uid there drops them, as exec always does.
// Children see their own pid numbering (they run in a pid
// namespace; getppid returns 1, the zygote) and, unprivileged, a
// user namespace (set-user-ID programs cannot gain privilege). A child
// from Detached or Direct is in the caller's namespaces and dies with its
// owner through the parent-death signal alone: processes it forks can
// outlive the owner, and a set-user-ID or file-capability program clears
// the signal at exec (no_new_privs prevents that). Kernels older than 5.3
// lack pidfd_open and CLONE_PIDFD, which caplin needs; it targets 5.10 and
// later.
//
// # Unprivileged use
//
// Everything here works without privilege where the kernel allows
// unprivileged user namespaces (`caplin doctor` tells): new user namespaces
// with the caller's IDs mapped to 0 inside, and, inside them, new mount,
// pid, net, ipc, uts and cgroup namespaces.
package proc
