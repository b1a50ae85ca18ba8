// Package sandbox confines processes built with package proc: namespaces,
// a root assembled from granted directories, Landlock, seccomp, no
// capabilities and no_new_privs, all applied in the child before it execs.
//
//	h, err := sandbox.Build(ctx, &sandbox.Spec{Mounts: []sandbox.Mount{
//		{Kind: sandbox.ROBind, Source: "/usr", Dest: "/usr"},
//		{Kind: sandbox.Proc, Dest: "/proc"},
//		{Kind: sandbox.Dev, Dest: "/dev"},
//		{Kind: sandbox.Tmpfs, Dest: "/tmp"},
//	}})
//	p, err := h.ExecPath(ctx, "/usr/bin/python3", argv, env)
//
// The layers, each enforced by the kernel:
//
//   - Namespaces (Build): user (the caller's IDs mapped to Spec.UID and
//     GID inside), mount, pid, ipc, uts, and net unless NetHost.
//   - The file system (Build): only what Spec.Mounts grants, read-only
//     unless a grant says otherwise; the caller's root is detached after
//     pivot_root, so no path leads back to it.
//   - Landlock (LandlockPolicy; Build applies the same grants as the
//     mounts): a second layer, so that a mistake in one is not an escape;
//     it also scopes signals and abstract Unix sockets (ABI 6) and TCP
//     ports (ABI 4). Degradation is strict unless BestEffort.
//   - Capabilities: the bounding set is emptied, so the program has none,
//     even as uid 0 inside.
//   - seccomp (Filter): the calls every sandbox blocks, see Filter.
//   - no_new_privs: set-user-ID programs gain nothing.
//
// Still to come: profiles (TOML), granted fds, loopback networking,
// resource limits, and caplin run's bubblewrap vocabulary on top of Build.
package sandbox

//go:generate go run ./internal/gensysnames
