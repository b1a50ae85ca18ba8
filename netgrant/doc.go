// Package netgrant decides, in the caller, where a sandboxed program may
// connect, and gives it a real socket connected there: network grants
// for programs that know nothing of caplin (curl, git, pip, go), the
// founding documents' fconnectat applied to unmodified programs.
//
// A sandbox (sandbox.Spec.Connect, caplin run --connect) keeps its own
// network namespace with loopback only, and installs Filter, which hands
// every connect(2), bind(2) and listen(2) of the program to a Broker of
// its caller's through a seccomp listener, and refuses TCP Fast Open
// sends (they connect as they send). For each connect, the Broker reads
// the address from the program's memory (once: what it read is what it
// decides on and connects to, so rewriting the address after the trap
// gains nothing), checks that the call is still pending, decides by its
// Rules, and:
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
//   - on the sandbox's own socket, to a loopback or the unspecified
//     address no rule allows, to a Unix socket no rule names, another
//     address family, or a malformed call: makes it as asked, on its
//     copy of that socket, in the sandbox's own network namespace, which
//     reaches nothing outside (the kernel's own errnos for bad calls), and
//     a Unix socket named in the file system where the program sees it;
//     never back in the kernel, which would act on whatever socket the
//     fd number names by then (binds of Unix sockets to names in the
//     file system do go on there); on a number that names no file or no
//     socket, EBADF or ENOTSOCK, answered by the Broker for the same
//     reason;
//   - on a socket it installed (the host's): answers it itself, never in
//     the kernel: EISCONN if connected, EOPNOTSUPP for AF_UNSPEC (which
//     would free it for another use), and, in progress or failed, the
//     kernel's answer to a connect the Broker makes on its copy of the
//     same socket, if a rule allows the address; bind and listen there
//     fail with EACCES;
//   - anything else: fails it with EACCES (ErrnoRefused); a datagram
//     socket's connect outside, with ENETUNREACH (ErrnoNoRoute): only
//     streams are granted (and stream and seqpacket Unix sockets).
//
// A loopback or unspecified address is allowed only by a rule that names
// a local address or network itself, or by a host rule without a wildcard
// through its own name: not by 0.0.0.0/0, nor by a name under a wildcard,
// whose owners choose what it resolves to.
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
// Without namespaces (a sandbox confined by Landlock alone, which shares
// the host's network and file system), Policy.Host: HostFilter traps
// every connect, and the Broker makes each on its copy of the program's
// socket, to the host's Unix sockets that the program's grants cover
// only (Landlock's file rules do not reach connect). With Rules too,
// HostRulesFilter traps bind, listen and the making of sockets as well:
// TCP connects are decided by the rules and made on the program's own
// socket, and its datagram sockets are stand-ins that reach only the
// Broker's resolver. HostSupported says whether that can work here.
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
//     not trapped; on the sandbox's own sockets, the only ones that can
//     send datagrams, they go nowhere outside the sandbox (ENETUNREACH
//     from the kernel, with no event).
//   - Once the Broker has received a connect (Linux 5.19), only a fatal
//     signal interrupts it: a blocking connect to a host that does not
//     answer waits for the socket's send timeout, or TCP's own (about two
//     minutes), whatever alarm the program set.
//   - Each granted connect costs two round trips between the program's
//     thread and the Broker's (the trap, and the installing), which
//     bench/netgrant.sh measures.
package netgrant
