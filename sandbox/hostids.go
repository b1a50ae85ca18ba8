package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/subid"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// HostIDs says who a sandbox's user and group are on the host: which host
// IDs its user namespace's ID maps name. It decides whose files the
// sandbox can reach by their permission bits, and who owns what it makes
// in writable binds.
//
// The zero HostIDs is the caller: Spec.UID and Spec.GID alone are mapped,
// to the caller's effective uid and gid. That is all an unprivileged caller
// may map, and what bubblewrap does; for a caller that is root it makes
// the sandbox's user the host's root as far as file permissions go (it
// reads root's 0600 files in what is bound, and what it makes is root's).
//
// Any other HostIDs needs privilege over the IDs it names (CAP_SETUID and
// CAP_SETGID in the caller's user namespace: in practice, a caller that is
// root). With Size 1, Spec.UID maps to UID and Spec.GID to GID, alone.
// With a larger Size, the IDs 0 to Size-1 inside map to UID to UID+Size-1
// and GID to GID+Size-1 on the host (a subordinate range, as container
// engines use): Spec.UID and Spec.GID must be below Size. Either way the
// sandbox drops the caller's supplementary groups, which are not the host
// user's (with the zero HostIDs it keeps them: they are the caller's).
//
// What the sandbox's user cannot reach on the host, it cannot be given by
// path: a bind whose source it may not search for, read (a file) or search
// (a directory) fails to build with EACCES, saying so. (A descriptor's
// source, Mount.FD, is checked the same way: the file, not the path to it.)
// The grant is still only what the host user may use: files inside a bind
// are read and written under their own permissions, as that user.
//
// A LandlockOnly sandbox has no user namespace to map IDs in: with a
// HostIDs other than the zero one its process takes the host IDs
// themselves (UID, or UID+Spec.UID in a range), not Spec.UID.
//
// UnprivilegedIDs is what a root caller should use.
type HostIDs struct {
	// UID and GID are the first host uid and gid mapped.
	UID, GID int
	// Size is how many IDs are mapped: 0 in the zero HostIDs only.
	Size int
}

// NobodyUID is the conventional unprivileged "nobody" user and group of
// Linux, which NobodyIDs maps a sandbox to.
const NobodyUID = 65534

// NobodyIDs maps the sandbox's user and group to the host's nobody (uid
// and gid 65534) alone.
func NobodyIDs() HostIDs { return HostIDs{UID: NobodyUID, GID: NobodyUID, Size: 1} }

// UnprivilegedIDs returns the host IDs for the sandboxes of a caller that
// is root, so that their root is not the host's: root's subordinate range
// where /etc/subuid and /etc/subgid both allot root one (its first range
// in each that does not include ID 0, as many IDs as both have), else
// NobodyIDs. Owner "root" or "0" is root in those files. A range shared
// with other users of root's subordinate IDs (containers root runs) shares
// their files' permissions; nobody is shared with every other process that
// runs as nobody.
//
// The IDs must exist in the caller's own user namespace: a caller that is
// root in a user namespace of its own (a rootless container) whose maps
// hold neither the range nor nobody gets the zero HostIDs, the caller,
// since its root is not the host's root either; its sandbox is then mapped
// as any unprivileged caller's is.
func UnprivilegedIDs() HostIDs {
	ids := unprivilegedIDs("/etc/subuid", "/etc/subgid")
	if mappedIDs(ids) {
		return ids
	}
	if n := NobodyIDs(); ids != n && mappedIDs(n) {
		return n
	}
	return HostIDs{}
}

// mappedIDs reports whether the caller's user namespace maps all of h's
// IDs; where its maps cannot be read, it assumes so, and Build reports
// what fails.
func mappedIDs(h HostIDs) bool {
	covers := func(p string, from int) bool {
		m, err := readIDMap(p)
		if err != nil {
			return true
		}
		for _, r := range m {
			if from >= r.Inside && from+h.Size <= r.Inside+r.Size {
				return true
			}
		}
		return false
	}
	return covers("/proc/self/uid_map", h.UID) && covers("/proc/self/gid_map", h.GID)
}

func unprivilegedIDs(subuid, subgid string) HostIDs {
	first := func(path string) (subid.Range, bool) {
		b, _ := kernel.ReadFile(path) // an unreadable or missing file allots nothing
		rs, _ := subid.Parse(bytes.NewReader(b), "root", 0)
		for _, r := range rs {
			if !r.Contains(0) {
				return r, true
			}
		}
		return subid.Range{}, false
	}
	u, uok := first(subuid)
	g, gok := first(subgid)
	if !uok || !gok {
		return NobodyIDs()
	}
	return HostIDs{UID: int(u.Start), GID: int(g.Start), Size: int(min(u.Count, g.Count))}
}

// String describes h: "the caller", "uid 65534 gid 65534", or "uids
// 100000-165535 gids 100000-165535".
func (h HostIDs) String() string {
	switch {
	case h == HostIDs{}:
		return "the caller"
	case h.Size == 1:
		return fmt.Sprintf("uid %d gid %d", h.UID, h.GID)
	}
	return fmt.Sprintf("uids %d-%d gids %d-%d", h.UID, h.UID+h.Size-1, h.GID, h.GID+h.Size-1)
}

// check reports what is wrong with spec's host IDs.
func (h HostIDs) check(spec *Spec) error {
	switch {
	case h == HostIDs{}:
		return nil
	case h.Size < 1 || h.UID < 0 || h.GID < 0 || int64(h.UID)+int64(h.Size)-1 > subid.MaxID || int64(h.GID)+int64(h.Size)-1 > subid.MaxID:
		return fmt.Errorf("sandbox: host IDs %d and %d, %d of them: want IDs of 0 or more, 1 or more of them, up to %d", h.UID, h.GID, h.Size, subid.MaxID)
	case h.Size > 1 && (spec.UID >= h.Size || spec.GID >= h.Size):
		return fmt.Errorf("sandbox: uid %d and gid %d: the host IDs map 0 to %d only (%s)", spec.UID, spec.GID, h.Size-1, h)
	}
	return nil
}

// idMaps returns the ID maps of spec's user namespace for a caller whose
// effective IDs are uid and gid.
func (s *Spec) idMaps(uid, gid int) (uids, gids []proc.IDMap) {
	h := s.HostIDs
	switch {
	case h == HostIDs{}:
		return []proc.IDMap{{Inside: s.UID, Outside: uid, Size: 1}}, []proc.IDMap{{Inside: s.GID, Outside: gid, Size: 1}}
	case h.Size == 1:
		return []proc.IDMap{{Inside: s.UID, Outside: h.UID, Size: 1}}, []proc.IDMap{{Inside: s.GID, Outside: h.GID, Size: 1}}
	}
	return []proc.IDMap{{Inside: 0, Outside: h.UID, Size: h.Size}}, []proc.IDMap{{Inside: 0, Outside: h.GID, Size: h.Size}}
}

// hostUser returns the host uid and gid the program runs as.
func (s *Spec) hostUser() (uid, gid int) {
	h := s.HostIDs
	switch {
	case h == HostIDs{}:
		return os.Geteuid(), os.Getegid()
	case h.Size == 1:
		return h.UID, h.GID
	}
	return h.UID + s.UID, h.GID + s.GID
}

// recordReachable records checking that the sandbox's user may use the
// bind source clone on the host, by its permissions: search a directory,
// read a file. Capabilities in the sandbox's user namespace do not count
// for files whose owner is not mapped in it, so a source of root's that
// the host user may not use fails with EACCES, at build rather than when
// the program first tries it.
func recordReachable(b *proc.Batch, clone proc.Val, isDir bool) {
	mode := unix.R_OK
	if isDir {
		mode = unix.X_OK
	}
	b.Syscall(unix.SYS_FACCESSAT2, clone, b.CString(""), proc.Int(mode), proc.Int(unix.AT_EMPTY_PATH|unix.AT_EACCESS))
}

// becomeHostUser makes h, the first process of a sandbox whose HostIDs are
// not the caller, take the IDs its maps name, before it makes anything or
// forks: a process keeps the host IDs it was cloned with (the caller's,
// which those maps leave out) until it changes them. It drops the caller's
// supplementary groups on the way.
func becomeHostUser(ctx context.Context, h *proc.Handle, spec *Spec) error {
	var b proc.Batch
	recordHostUser(&b, spec)
	if b.Len() == 0 {
		return nil
	}
	if _, err := h.Run(ctx, &b); err != nil {
		return hostUserError(spec, err)
	}
	return nil
}

// recordHostUser records in b the calls of becomeHostUser: none for a
// sandbox whose HostIDs are the caller.
func recordHostUser(b *proc.Batch, spec *Spec) {
	if spec.HostIDs == (HostIDs{}) {
		return
	}
	b.Setgroups(nil)
	b.Setresgid(spec.GID, spec.GID, spec.GID)
	b.Setresuid(spec.UID, spec.UID, spec.UID)
}

// hostUserError is the error of recordHostUser's calls, which failed with
// err.
func hostUserError(spec *Spec, err error) error {
	return fmt.Errorf("sandbox: becoming %s: %w", spec.HostIDs, err)
}
