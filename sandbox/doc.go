// Package sandbox confines processes built with package proc: namespaces,
// a root assembled from granted directories, Landlock, seccomp, no
// capabilities and no_new_privs, all applied in the child before it execs.
//
//	sb, err := sandbox.Build(ctx, &sandbox.Spec{
//		Mounts: append(sandbox.SystemMounts(),
//			sandbox.Mount{Kind: sandbox.Bind, Source: "/srv/job", Dest: "/job"}),
//		Files: map[int]*os.File{0: os.Stdin, 1: os.Stdout, 2: os.Stderr},
//		Env:   []string{"PATH=/usr/bin:/bin"},
//		Dir:   "/job",
//	})
//	if err != nil { ... }
//	defer sb.Close()
//	p, err := sb.Exec(ctx, "python3", []string{"python3", "run.py"})
//	st, err := p.Wait(ctx)
//
// Run does the same in one call. Build takes a copy of the Spec (see Spec
// on ownership); what it has to say but does not refuse goes to the
// logger of WithLogger, or nowhere. Errors that say the Spec cannot be
// enforced here all match ErrUnenforceable; an *UnsupportedError names
// the Linux release that has what the kernel lacks.
//
// The layers, each enforced by the kernel:
//
//   - Namespaces (Build): user (the caller's IDs mapped to Spec.UID and
//     GID inside, or, for a root caller, an unprivileged host user's:
//     Spec.HostIDs, UnprivilegedIDs; or one the caller gives, UserNS, or
//     maps itself, WithIDMapsBy), mount, pid (with an init of caplin's as
//     pid 1 unless AsPID1; inside PIDNS when given), ipc, uts, cgroup, and
//     net unless NetHost.
//   - The file system (Build): only what Spec.Mounts grants, read-only
//     unless a grant says otherwise (overlays included: made in the
//     sandbox's user namespace, Linux 5.11 or later); the caller's root is
//     detached after pivot_root, so no path leads back to it. A FUSE
//     mount is a served directory: the caller's server (package served)
//     answers for it, from a /dev/fuse opened inside the sandbox's user
//     namespace; Sandbox.Mount adds one, and Unmount detaches a mount,
//     while the program runs.
//   - Landlock (LandlockPolicy; Build applies the same grants as the
//     mounts): a second layer, so that a mistake in one is not an escape;
//     it also scopes signals and abstract Unix sockets (ABI 6). No
//     Landlock at all is refused unless BestEffort; an older ABI weakens
//     this second layer only, and is logged (WithLogger). A sandbox whose
//     filter lets the mount calls through (FilterPolicy.AllowMounts, for
//     sandboxes nested in it) has none: Landlock would refuse them.
//   - Capabilities: the bounding set is emptied, so the program has none,
//     even as uid 0 inside.
//   - seccomp (Filter): the calls every sandbox blocks, see Filter.
//   - no_new_privs: set-user-ID programs gain nothing.
//   - Limits: pids, memory and CPU for the sandbox's processes together,
//     by a cgroup where one is delegated (package cgroup), else rlimits;
//     what cannot be enforced is refused (an error matching
//     ErrUnenforceable) unless BestEffort.
//
// Where user namespaces are not allowed, Build fails (package probe's
// CheckUserNS says why); Spec.LandlockOnly confines with Landlock and
// seccomp alone, on the host's own paths: a tmpfs at /tmp becomes a
// private directory that TMPDIR names (removed when the sandbox ends),
// proc at /proc is the host's, read-only (Sandbox.Differences lists such
// stand-ins); what they cannot enforce is refused (a *LandlockOnlyError
// lists it). caplin run falls back to it by itself.
//
// A launcher that waits for its program can relay the signals it receives
// with Relay, as a terminal would deliver them, killing the sandbox when
// the program will not stop.
//
// A Template makes the costly part of a sandbox (user and network
// namespaces, the root) once, for launchers that start many sandboxes
// from one spec; what its sandboxes share is listed there.
//
// Profiles (ParseProfile) are TOML files with the fields of a Spec, whose
// every key docs/profiles.md lists; caplin run and caplin bwrap build Specs
// from bubblewrap's command line.
package sandbox

//go:generate go run ./internal/gensysnames
