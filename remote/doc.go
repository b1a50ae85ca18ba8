// Package remote reaches other hosts through the user's own ssh: it
// uploads caplin (or the caller's program) there once per version as the
// agent, and gives, from here, processes on the host (Spawn, Run),
// children built by system calls as proc builds them here (Fork returns
// a Handle whose embedded proc.Handle runs batches there; forkat from
// it), sandboxes built there (Sandbox, from a sandbox.Spec made here, or
// Supervisor, which caplin run --host uses),
// and rpc objects listening there (Object).
//
// Everything crosses as caplin's rpc, relayed over one ssh connection
// multiplexed by internal/fdmux: each object, and each descriptor a call
// carries, is a stream of its own with its own flow control, and a
// forwarded pipe's bytes are spliced, not copied, on both sides. Objects stay objects;
// pipes, files, sockets and terminals are forwarded as pipes, sockets and
// pseudo-terminals there; other descriptors do not cross.
//
// Guarantees: the agent runs only if its sha256 matches (a modified copy
// is replaced); nothing prompts (ssh runs in BatchMode, so an unknown host
// key fails at once); when the connection ends, every process the agent
// built dies. Limits: a peer handle needs a host of its own architecture;
// files cross as streams (no seeking). docs/remote.md says more.
package remote
