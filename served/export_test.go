package served

import (
	"syscall"
	"testing"
)

// Hooks for the tests of package served_test (served/remote's FS mounted
// by a Server), which cannot be in package served: served/remote imports
// it.

// Mount is a Server mounted in a worker's namespaces (see mountServer).
type Mount = mount

// Req is an operation asked of a Mount's worker; Resp its answer.
type (
	Req  = req
	Resp = resp
)

// MountServer mounts s in a new worker (see mountServer).
func MountServer(t *testing.T, s *Server) *Mount { return mountServer(t, s) }

// AlsoAsNobody re-runs the calling test as uid 65534 with /dev/fuse
// usable (see alsoAsNobody).
func AlsoAsNobody(t *testing.T) { alsoAsNobody(t) }

// Do runs an operation, whatever it answers.
func (m *mount) Do(r req) resp { m.t.Helper(); return m.do(r) }

// OK runs an operation that must succeed.
func (m *mount) OK(r req) resp { m.t.Helper(); return m.ok(r) }

// Errno runs an operation that must fail with want.
func (m *mount) Errno(r req, want syscall.Errno) { m.t.Helper(); m.errno(r, want) }
