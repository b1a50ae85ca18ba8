package served

import "github.com/caplin-dev/caplin/proc"

// overflowID is the ID an unmapped host user or group appears as inside
// the sandbox (the kernel's overflowuid and overflowgid).
const overflowID = 65534

// idMap translates IDs between the host (the Server's namespace) and the
// mount's user namespace.
type idMap []proc.IDMap

// inside returns the ID that host ID h has inside, or overflowID. An
// empty map is the identity.
func (m idMap) inside(h uint32) uint32 {
	if len(m) == 0 {
		return h
	}
	for _, e := range m {
		if int64(h) >= int64(e.Outside) && int64(h) < int64(e.Outside)+int64(e.Size) {
			return uint32(int64(e.Inside) + int64(h) - int64(e.Outside))
		}
	}
	return overflowID
}

// outside returns the host ID of the ID i inside, or false if i is not
// mapped.
func (m idMap) outside(i uint32) (uint32, bool) {
	if len(m) == 0 {
		return i, true
	}
	for _, e := range m {
		if int64(i) >= int64(e.Inside) && int64(i) < int64(e.Inside)+int64(e.Size) {
			return uint32(int64(e.Outside) + int64(i) - int64(e.Inside)), true
		}
	}
	return 0, false
}
