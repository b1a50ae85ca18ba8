// Package netgrant decides, in the caller, where a sandboxed program may
// connect, and gives it a real socket connected there: network grants
// for programs that know nothing of caplin (curl, git, pip, go), the
// founding documents' fconnectat applied to unmodified programs.
//
// A sandbox (sandbox.Spec.Connect, caplin run --connect) keeps its own
// network namespace with loopback only, and installs Filter, which hands
// every connect(2) of the program to a Broker of its caller's through a
// seccomp listener. For each, the Broker reads the address from the
// program's memory (once: what it read is what it decides on and
// connects to, so rewriting the address after the trap gains nothing),
// checks that the call is still pending, decides by its Rules, and:
//
//   - allowed (a TCP stream socket; a Unix socket a unix: rule names):
//     makes a socket of the same kind in its own network namespace, with
//     the options the program set on its own (keepalive and its tuning,
//     TCP_NODELAY, buffer sizes, TCP_USER_TIMEOUT, IPV6_V6ONLY, linger,
//     send and receive timeouts), connects it, honouring the program's
//     O_NONBLOCK (EINPROGRESS, then the program polls as usual) and its
//     send timeout, and installs it at the program's descriptor number
//     (SECCOMP_IOCTL_NOTIF_ADDFD, keeping close-on-exec); the program
//     holds a real connected socket (getpeername, poll, shutdown,
//     setsockopt work as on any);
//   - to a loopback address no rule allows, to a Unix socket no rule
//     names, another address family, or a malformed call: lets it go on
//     in the kernel, in the sandbox's own network namespace, which
//     reaches nothing outside (the kernel's own errnos for bad calls);
//   - anything else: fails it with EACCES (ErrnoRefused); a datagram
//     socket's connect outside, with ENETUNREACH (ErrnoNoRoute): only
//     streams are granted.
//
// Names: a host rule allows the addresses found for its name, by the
// host's resolver (at Serve, and on a miss at most once a second) and by
// the sandbox's own resolver (ServeDNS, named by the sandbox's
// /etc/resolv.conf), which answers only names some host rule covers and
// records what it answered, so that *.example.com:443 allows exactly the
// addresses given for names under example.com.
//
// Every decision is an Event (Policy.Events): the JSON lines of caplin
// run --events.
//
// # Limits
//
//   - Linux 5.9 (ADDFD; pidfd_getfd, 5.6): Supported says. With 5.19 the
//     trapped thread is not interrupted by signals once the Broker has
//     its call (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV); before, a signal
//     that comes between the installing and the answer leaves the program
//     a connected socket and a connect that fails with EINTR or restarts
//     (then EISCONN).
//   - The installed socket is another file at the same number: a program
//     that registered its socket with an epoll instance before calling
//     connect (nginx does; Go, libuv, Python's asyncio, tokio and curl
//     register after, or poll) keeps a registration of the old file,
//     which the kernel drops, and is not told of the new one's events.
//   - A socket bound to a local address or port before connect is refused
//     (EOPNOTSUPP, ErrnoBound): the replacing socket could not keep it.
//     Options other than those listed above are not carried over.
//   - Datagrams are not granted: sendto and sendmsg with an address are
//     not trapped, and go nowhere outside the sandbox (ENETUNREACH from
//     the kernel, with no event).
//   - Each granted connect costs two round trips between the program's
//     thread and the Broker's (the trap, and the installing), which
//     bench/netgrant.sh measures.
package netgrant
