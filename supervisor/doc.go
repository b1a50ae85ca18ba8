// Package supervisor runs jobs: programs in caplin sandboxes that outlive
// whoever started them, kept by a per-user supervisor and owned through
// handles rather than pids.
//
// A Supervisor keeps a table of jobs by name. Each job is one program in a
// sandbox of its own (package sandbox: its own pid namespace, with
// caplin's init as pid 1), with a pseudo-terminal or pipes made once and
// kept across restarts, and a bounded history of its output (Config.
// Scrollback: the oldest is dropped; the program never waits for anyone
// who reads it). Its restart policy (Restart) starts it again, with a
// backoff that bounds the rate of a program that exits at once.
//
// Guarantees:
//
//   - Groups: everything a job's program starts, double-forked daemons
//     included, is in the job's pid namespace; Job.Stop and Job.SignalAll
//     reach all of it from caplin's init (sandbox.Sandbox.SignalAll), and
//     no pid is ever signalled by number.
//   - Kill-on-close: every process of every job dies with the Supervisor's
//     process, however that ends (SIGKILL included), as every sandbox of
//     caplin's does.
//   - How a job ended (Exit) is kept after its program is reaped, until the
//     job is removed from the table.
//   - Viewers (Job.Attach) never slow the program down: each follows the
//     history at its own pace and is told what it missed. One viewer at a
//     time holds the writer lease; the others watch.
//
// Service serves a Supervisor over package rpc: a supervisor object per
// connection, refused to any uid but the supervisor's own (SO_PEERCRED),
// and a job object per handle. Handles, not names, are the authority: a
// job object's rights (status, watch, input, signal, own) say what its holder
// may do; Borrow makes an object with fewer, and revoke cuts what was
// borrowed. Passing the object's descriptor passes the authority; the
// names are only the table the supervisor keeps for its user.
//
// Listen makes the user's socket (SocketPath) in a directory only the
// user can enter, locked so that one supervisor serves it; Activated
// takes systemd's. Client and Handle are the typed clients.
//
// Limits: a job's sandbox is built by its own (no warm template yet); the
// options of caplin run that reach the client's process (its fds,
// --serve-* mounts, --events) cannot be sent to the supervisor and are
// refused, as are sandboxes without a pid namespace of their own
// (--landlock-only, SharePID), whose processes could not be stopped whole.
// docs/supervisor.md has the object model and the commands.
package supervisor
