// Package fusetest holds the tests of package sandbox's FUSE mounts that
// need a FUSE server to answer them (go-fuse's, as package served's is).
// They are apart from package sandbox's own tests because go-fuse's
// initialization opens descriptors (a pipe, the runtime's poller) in
// every process of a binary that links it, and package sandbox's tests
// count the descriptors of processes of their binary run in sandboxes.
// It has no code: only tests.
package fusetest
