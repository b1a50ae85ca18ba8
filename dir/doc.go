// Package dir provides directory capabilities: a Dir is a directory
// descriptor with rights, and every path given to it is resolved by the
// kernel, relative to it, confined to it.
//
//	d, err := dir.Open("/srv/data")          // every right, Beneath mode
//	if err != nil { ... }
//	defer d.Close()
//	ro, err := d.Sub("public", dir.ReadOnly) // narrower: one subtree, read only
//	b, err := ro.ReadFile("index.html")
//	_, err = ro.ReadFile("../secret")        // ErrEscape
//	_, err = ro.OpenFile("index.html", os.O_RDWR, 0) // *RightsError (EPERM)
//
// # Resolution
//
// A Dir owns one O_PATH|O_DIRECTORY|O_CLOEXEC descriptor. Every lookup is
// made by openat2(2) from it, with RESOLVE_NO_MAGICLINKS and, by the Dir's
// Mode, either RESOLVE_BENEATH (Beneath: "..", absolute symbolic links and
// links that climb out fail with ErrEscape) or RESOLVE_IN_ROOT (InRoot: the
// Dir is "/" for the lookup, as in a chroot). The kernel checks each step
// as it takes it, so a symbolic link or directory swapped in during a
// lookup, or a directory renamed out from under one, cannot make it leave
// the Dir: a lookup that a concurrent rename could have misled fails with
// EAGAIN inside the kernel, and is retried from the start.
//
// An operation on a name (Mkdir, Mknod, Remove, Unlink, Rmdir, Rename,
// RenameFlags, Link, Symlink, Readlink, Lstat, Lchown, Utimens, and the
// extended attribute calls) opens the name's parent directory that way and then calls the
// *at system call on the final element, which is never followed if it is a
// symbolic link. Where a final element could still be followed or climb
// (".", "..", a trailing slash), the whole path is resolved with openat2
// instead and the call made on the descriptor it returns. Stat, Chmod and
// Open follow symbolic links, always confined; Truncate and Statfs open
// the whole path with O_NOFOLLOW. These calls are what a file system
// server (package served) needs to act on a name exactly as a program asked.
//
// Without openat2 (Linux before 5.6) Open, FromFile and every operation
// fail with ErrNoOpenat2: there is no fallback that resolves paths in user
// space.
//
// # Rights
//
// Each Dir has Rights (RightRead, RightWrite, RightCreate, RightDelete,
// RightExec, RightSetAttr), chosen when it is opened; Sub makes a Dir for a subdirectory with a subset of
// them, and asking Sub for more fails. Each method's documentation says
// which rights it needs; an operation the rights do not permit fails with
// a *RightsError, which wraps EPERM, before any system call is made.
//
// # What rights enforce
//
// Rights restrict what a Dir's methods do and which descriptors they hand
// out. They are enforced by this package, in the process that holds the
// Dir, so they hold for code that can reach the file system only through
// the Dir. In particular:
//
//   - A Dir without RightWrite never opens a file for writing: OpenFile refuses
//     O_WRONLY, O_RDWR, O_TRUNC and O_APPEND (and O_CREAT without RightCreate),
//     whatever the file's permission bits.
//   - A Dir never hands out a directory descriptor (ErrIsDir): a directory
//     descriptor is a starting point for openat(2) lookups that no Dir's
//     rights or confinement restrict. Sub, ReadDir and FS cover what one is
//     for, keeping their descriptors private.
//   - A Dir without RightExec never hands out an O_PATH descriptor (OpenExec, or
//     OpenFile with O_PATH): an O_PATH descriptor is what execveat(2)
//     executes a file through when it may not be read, and it can be
//     reopened with other access modes through /proc.
//   - Lookups refuse /proc magic links (RESOLVE_NO_MAGICLINKS): a Dir at or
//     above /proc cannot reopen a descriptor through /proc/self/fd, or
//     /proc/<pid>/root, to gain access that the descriptor did not have.
//
// They cannot reach past the process's other authority:
//
//   - The kernel knows nothing of a Dir's rights. Any descriptor a Dir
//     hands out (a file opened for reading, say) can be reopened through
//     /proc/self/fd/N by its holder with any access the file's mode bits
//     and the holder's credentials allow, if that holder can reach a /proc
//     (its own ambient authority, not the Dir's). To make read-only hold
//     against such code, deny it /proc and other paths with Landlock or a
//     mount namespace (package sandbox), or pass it files, not Dirs.
//   - No-exec is likewise partial: without RightExec a Dir gives no O_PATH
//     descriptor, but a descriptor opened for reading can still be run
//     with execveat(AT_EMPTY_PATH) if the file's execute bits allow. Only a
//     noexec mount, Landlock's LANDLOCK_ACCESS_FS_EXECUTE, or seccomp make
//     "cannot execute" a kernel guarantee.
//   - Rights do not change the file system's own permissions: a Dir with
//     Write cannot write a file its user may not write.
//   - Code in the same process can read a Dir's descriptor number from
//     /proc/self/fd and use it directly. A Dir is a capability against
//     confused deputies and untrusted paths, not against hostile code in
//     the process.
//
// Every Dir, whatever its rights, can look names up: Stat and Lstat need
// no right, and errors tell whether a name exists.
//
// # io/fs
//
// FS returns a view of a Dir that implements io/fs (a Dir's own Open and
// Sub have other signatures). MountTable binds Dirs at path prefixes into
// one fs.FS, a mount table in user space with Plan 9 style unions.
//
// # Atomic files
//
// Replace, CreateExclusive, Exchange, Read and CompareAndSwap change files
// only by renaming complete new files into place, so readers never see a
// torn file, and a crash leaves the old file or the new. CompareAndSwap
// compares a Version (the identity of the file a name refers to) and is
// linearizable across processes: every writer of this package takes the
// directory's flock(2) for its compare and rename. Each function's
// documentation states what it guarantees against concurrent readers,
// concurrent writers and a crash.
//
// # Errors
//
// Errors are *fs.PathError (*os.LinkError for two names) with the
// operation, the path as given and the cause, so errors.Is(err,
// fs.ErrNotExist) and the like work. Bad input never panics: an empty
// path, a NUL byte, a path of PATH_MAX bytes or more, an absolute path, a
// closed Dir (fs.ErrClosed) and rights that widen each fail with an error
// (ErrEmptyPath, ErrNUL, ErrPathTooLong, ErrAbsolute, *RightsError).
//
// # What it links
//
// This package imports only caplin's internal/ helpers: a program that
// opens files through a Dir links no fork server. Handing a Dir's subtree
// to another process as a detached mount takes a child process, so it is
// package dir/export, which sits above dir and proc.
package dir
