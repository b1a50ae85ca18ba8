// Package rpc is caplin's capability IPC: calls between processes over
// Unix SOCK_SEQPACKET sockets, whose messages carry file descriptors.
//
// An object is one end of a socket; holding it is holding the capability,
// with no names, no bus and no other access check. A call is one message
// (method, arguments, descriptors) and its reply one message (result and
// descriptors, or an *Error). A server answers with real descriptors —
// files, directory mounts, pidfds, sockets, new objects (Server.NewObject)
// — which the caller uses directly and may pass on: introduction, not
// proxying.
//
// Arguments and results are Go values encoded as CBOR; an FD anywhere in
// them (in a struct, slice, array or pointer) travels as a descriptor. A
// Client is safe for concurrent use and pipelines calls; a Server runs a
// Handler per object (Methods and Method make one from typed functions),
// bounds each peer's messages, descriptors and concurrent calls, and
// treats everything a peer sends as untrusted.
//
// Revocable wraps an object so that its maker can cut it off later;
// Forward passes calls on to another object.
//
// The services caplin ships live in packages of their own, above this
// one: rpc/directory serves a dir.Dir as a Directory object,
// rpc/connector makes connections by policy, and rpc/launcher builds
// sandboxed processes. So this package, the protocol, links no dir, proc
// or sandbox: a program that only makes calls does not carry them.
//
// docs/rpc.md describes the wire format and the limits.
package rpc
