// Package served serves directory capabilities to unmodified programs, as
// FUSE file systems: a host directory through a dir.Dir, an rpc Directory
// held by another process, or a union of several, mounted inside a
// sandbox's own user namespace, with rights the kernel cannot express
// (create but not delete, append-only, no rename), revocation while the
// program runs, and a report of what was refused.
//
// A Server serves one FS over one FUSE connection: the caller (package
// sandbox, for a Mount of kind FUSE) opens /dev/fuse inside the sandbox's
// user namespace, mounts it there, and hands the descriptor to Serve. The
// FUSE protocol is github.com/hanwen/go-fuse/v2's.
//
// STATUS: this file states the package's contract while it is being
// built; the implementation follows it.
package served
