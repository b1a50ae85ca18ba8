// Package served serves directory capabilities to unmodified programs, as
// FUSE file systems: a host directory through a dir.Dir, an rpc Directory
// held by another process, or a union of several, mounted inside a
// sandbox's own user namespace, with rights the kernel cannot express
// (create but not delete, append-only, no rename), revocation while the
// program runs, and a report of what was refused.
//
// A Server serves one FS over one FUSE connection: the caller (package
// sandbox, for a Mount of kind FUSE) opens /dev/fuse inside the sandbox's
// user namespace, mounts it there with the options MountOptions returns,
// and hands the descriptor to Serve with the namespace's ID maps. The
// FUSE protocol is github.com/hanwen/go-fuse/v2's, at its raw level: the
// Server answers requests by node ID itself (see docs/served.md).
//
// # Guarantees
//
//   - Every request passes the Server's Rights before the FS is asked. A
//     refused request fails with EACCES (as Landlock refuses) and, if
//     Options.Events is set, is reported as an Event with the caller's
//     thread ID, the operation, the path in the mount and the missing
//     right. The FS's own checks still apply after (Host: the dir.Dir's
//     rights, then the host kernel's permissions for the server's user).
//   - Host never resolves a name outside its directory: every lookup is
//     dir's openat2 with RESOLVE_BENEATH or RESOLVE_IN_ROOT, and no final
//     symbolic link is followed. Symbolic links inside the mount are
//     followed by the program's kernel, in the program's own view of the
//     file system, never by the server.
//   - Append-only (RightAppend without RightWrite): existing files open for
//     writing only with O_APPEND, and are opened O_APPEND on the host, so
//     every write lands at the end whatever offset the kernel sends;
//     O_TRUNC, truncate and ftruncate are refused. New files (RightCreate)
//     may be written anywhere.
//   - After Revoke, every request fails with EIO, reads and writes of
//     files already open included: the kernel's entries, attributes and
//     pages of the mount are invalidated (mmap'd pages fault with SIGBUS),
//     all before Revoke returns. After Close, requests fail with ENOTCONN.
//   - IDs: attributes report host owners mapped into the mount's user
//     namespace (unmapped ones as owned by nobody inside: stat shows 65534,
//     and no user or capability inside owns them), and chown maps them back.
//   - A request the kernel interrupts (its caller got a signal or died)
//     ends its FS call's context; a flood of requests is served by as many
//     goroutines as it needs; the server never waits on a client.
//
// # Limits
//
//   - Close answers every later request with ENOTCONN, but the kernel's
//     connection ends only when the mount goes away (its mount namespace
//     ends, or it is unmounted): a server cannot abort its own FUSE
//     connection without the fusectl file system.
//   - Event.PID is the calling thread's ID in the pid namespace of the
//     process that mounted the file system, which is what FUSE reports.
//   - POSIX and BSD locks are the kernel's, local to the mount: processes
//     using the mount see each other's locks; a process outside does not.
//   - Writeback caching is off: every write reaches the host file before
//     write(2) returns. Caching rules and their bounds are in
//     docs/served.md.
//   - Extended attributes of symbolic links need Linux 6.13 (getxattrat);
//     before it they fail with EOPNOTSUPP.
//   - The FS is asked by paths from the mount's root, or, where it can
//     open directories (Host), by a name beneath a directory's own
//     descriptor that the server keeps (opened beneath its parent's where
//     its path is longer than PATH_MAX, so that deep names are served as a
//     kernel bind serves them; renames within one directory too; with
//     other FSes, and for links and renames across directories, which name
//     two paths from the root, a name deeper than PATH_MAX fails with
//     ENAMETOOLONG); a directory renamed or
//     moved outside the mount is followed by its descriptor while the
//     server keeps one, and found by its path otherwise (moving a
//     directory out of the served tree does not end access to it while
//     the kernel knows it; removing it, or Revoke, does).
//   - On a mount whose rights include read, exec and write, opens do not
//     reach the server (docs/served.md, "Caching"): a file opened and not
//     yet read when it is replaced or removed from outside the mount fails
//     with ENOENT (ESTALE for writes), where a kernel bind would keep it.
//   - Each name of a file with several (hard links) is a file of its own
//     to the kernel: the server invalidates the others' attributes when
//     the file is linked, unlinked, renamed over or has its attributes
//     set through one name, but their page caches are separate (a write
//     through one name is seen through another once the kernel sees the
//     new mtime or size there).
//   - go-fuse answers a lookup of ".go-fuse-epoll-hack" in the root itself,
//     without the Server.
package served
