package served

import "github.com/caplin-dev/caplin/proc"

// unmappedID is what the server reports for a host user or group that the
// mount's namespace does not map: (uid_t)-1, which the kernel turns into
// INVALID_UID, so that nobody inside owns the file (no capability or
// owner check passes for it) while stat shows the overflow ID (65534).
// Reporting 65534 itself would make a file of, say, host root belong to
// whoever is 65534 inside, which a sandbox may map.
const unmappedID = ^uint32(0)

// idMap translates IDs between the host (the Server's namespace) and the
// mount's user namespace.
type idMap []proc.IDMap

// inside returns the ID that host ID h has inside, or unmappedID. An
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
	return unmappedID
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
