package sandbox

// Confinement: what makes the program's process what its Spec says once
// its root is in place (fds, session, limits, Landlock, capabilities,
// no_new_privs and seccomp), and what a template's init applies to itself
// for its spawns to inherit.

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// recordProgram records the calls that make the program's process what
// spec says, once its root is in place: working directory, fds, session,
// limits, Landlock, capabilities, no_new_privs and seccomp, but for what
// the process inherits from its parent already (inherited).
func recordProgram(spec *Spec, files map[int]*os.File, lim *limiter, ll *LandlockPolicy, filter []unix.SockFilter, inherited confinement) (*recorder, error) {
	s := &recorder{}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	// pivot_root moved the program's root, but not its working
	// directory, unless that was the old root. A relative dir is taken
	// from the sandbox's root, as bubblewrap takes --chdir: never from
	// the working directory the process had, which is the caller's, in
	// the file system it left (found in review: Dir "." or ".." reached
	// the host's files, where no Landlock layer stopped it).
	from := s.begin()
	if !strings.HasPrefix(dir, "/") {
		s.b.Chdir("/")
	}
	s.b.Chdir(dir)
	s.end(from, "changing to the working directory "+dir)
	from = s.begin()
	for fd, f := range files {
		s.b.PutFile(f, fd)
	}
	s.end(from, "granting fds")
	if len(spec.Connect) > 0 {
		// After the grants, so that its sockets take none of their
		// numbers (they are sent with the reply, at the end); before
		// Landlock, which may refuse binds.
		recordResolver(s)
	}
	if spec.UserNS2 != nil {
		from = s.begin()
		fd := s.b.PutFile(spec.UserNS2, -1)
		s.b.Setns(fd, unix.CLONE_NEWUSER)
		s.b.CloseFD(fd)
		s.end(from, "joining the user namespace of UserNS2")
	}
	if !spec.SameSession {
		from = s.begin()
		s.b.Setsid()
		if spec.ControllingTerminal {
			s.b.Syscall(unix.SYS_IOCTL, proc.Int(0), proc.Int(unix.TIOCSCTTY), proc.Int(0))
		}
		s.end(from, "setsid")
	}
	if lim != nil {
		from = s.begin()
		lim.record(&s.b)
		s.end(from, "resource limits")
	}
	if err := recordConfinement(s, spec, ll, filter, (confLandlock|confBounding)&^inherited); err != nil {
		return nil, err
	}
	from = s.begin()
	recordAmbient(&s.b, spec)
	s.end(from, "keeping capabilities")
	if err := recordConfinement(s, spec, ll, filter, confSeccomp&^inherited); err != nil {
		return nil, err
	}
	if len(spec.Connect) > 0 {
		s.listener, s.trapsConnect = recordConnect(s), true
	}
	return s, nil
}

// confinement names parts of a process's confinement that its children
// inherit.
type confinement uint8

const (
	confLandlock confinement = 1 << iota // the Landlock domain
	confBounding                         // the capability bounding set
	confSeccomp                          // no_new_privs and the seccomp filters
)

// initConfinement is what the init of a template's sandbox applies to
// itself once the root is built, for the programs it spawns to inherit,
// so that each spawn does not: the Landlock domain and the bounding set
// (which the init, which never execs, does not need), and the seccomp
// filters when the spec adds nothing to the default filter (a Deny list or
// programs of the spec's own could refuse what the init and its spawns
// still do).
func initConfinement(spec *Spec) confinement {
	c := confLandlock | confBounding
	if len(spec.Seccomp.Deny) == 0 && len(spec.SeccompFilters) == 0 {
		c |= confSeccomp
	}
	return c
}

// recordConfinement records the parts of the confinement that what says.
func recordConfinement(s *recorder, spec *Spec, ll *LandlockPolicy, filter []unix.SockFilter, what confinement) error {
	if ll != nil && what&confLandlock != 0 {
		abi, _ := LandlockABI()
		from := s.begin()
		if _, err := ll.Record(&s.b, abi); err != nil {
			return err
		}
		s.end(from, "landlock")
	}
	if what&confBounding != 0 {
		from := s.begin()
		recordBounding(&s.b, spec)
		s.end(from, "dropping capabilities")
	}
	if what&confSeccomp != 0 {
		from := s.begin()
		s.b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
		s.b.SeccompSetModeFilter(0, filter)
		s.end(from, "seccomp")
		for i, f := range spec.SeccompFilters {
			from = s.begin()
			s.b.SeccompSetModeFilter(0, f)
			s.end(from, "seccomp program "+strconv.Itoa(i+1))
		}
	}
	return nil
}

// recordBounding records the calls that empty the capability bounding set
// but for spec.Caps: exec then grants no other capability, whatever the
// uid.
func recordBounding(b *proc.Batch, spec *Spec) {
	if spec.KeepCaps {
		return
	}
	keep := map[int]bool{}
	for _, c := range spec.Caps {
		keep[c] = true
	}
	// Empty the bounding set but for the kept ones: exec then grants no
	// other capability, whatever the uid. Dropping past the kernel's last
	// capability fails with EINVAL, so the kernel's own count is used.
	last := lastCap()
	for c := 0; c <= last; c++ {
		if !keep[c] {
			b.Prctl(unix.PR_CAPBSET_DROP, proc.Int(c), proc.Int(0), proc.Int(0), proc.Int(0))
		}
	}
}

// recordAmbient records what keeps spec.Caps across exec for a uid other
// than 0: they become ambient capabilities, which must be inheritable
// (and permitted, which the namespace's creator is) first. Uid 0 gets the
// bounding set at exec, and the inheritable set with InheritCaps.
func recordAmbient(b *proc.Batch, spec *Spec) {
	if spec.KeepCaps || len(spec.Caps) == 0 || spec.UID == 0 && !spec.InheritCaps {
		return
	}
	keep := map[int]bool{}
	for _, c := range spec.Caps {
		keep[c] = true
	}
	var set [2]uint32
	for c := range keep {
		set[c/32] |= 1 << (c % 32)
	}
	hdr := capHeader()
	data := make([]byte, 24) // two of {effective, permitted, inheritable}
	for w := 0; w < 2; w++ {
		for k := 0; k < 3; k++ {
			binary.NativeEndian.PutUint32(data[w*12+k*4:], set[w])
		}
	}
	b.Syscall(unix.SYS_CAPSET, b.In(hdr), b.In(data))
	if spec.UID == 0 {
		return
	}
	for c := range keep {
		b.Prctl(unix.PR_CAP_AMBIENT, proc.Int(unix.PR_CAP_AMBIENT_RAISE), proc.Int(c), proc.Int(0), proc.Int(0))
	}
}

// capHeader returns a struct __user_cap_header_struct for capset(2) of
// the calling process, version 3.
func capHeader() []byte {
	hdr := make([]byte, 8)
	binary.NativeEndian.PutUint32(hdr, unix.LINUX_CAPABILITY_VERSION_3)
	return hdr
}
