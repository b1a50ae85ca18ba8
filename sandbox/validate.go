package sandbox

// Validation: what is wrong with a Spec, found before any process is made.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// describe names a mount for errors: "mount 3 (ro-bind /usr /usr)".
func describe(i int, m *Mount) string {
	return fmt.Sprintf("mount %d (%s)", i+1, m)
}

// String names the mount as bubblewrap's option would, without its
// dashes: "ro-bind /usr /usr", "tmpfs /tmp"; a bind of a descriptor shows
// the descriptor's name in place of the source.
func (m *Mount) String() string {
	switch {
	case m.Kind.isBind() && m.FD != nil:
		return fmt.Sprintf("%s %s %s", m.Kind, m.FD.Name(), m.Dest)
	case m.Kind.source() == srcHostPath || m.Kind.source() == srcLinkTarget || m.Kind.source() == srcUpperDir:
		return fmt.Sprintf("%s %s %s", m.Kind, m.Source, m.Dest)
	}
	return fmt.Sprintf("%s %s", m.Kind, m.Dest)
}

// checkSpec finds what is wrong with a spec before any process is made.
func checkSpec(spec *Spec) error {
	if len(spec.Connect) > 0 {
		if err := checkConnect(spec); err != nil {
			return err
		}
	}
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if !filepath.IsAbs(m.Dest) || strings.Contains(m.Dest, "\x00") {
			return mountError(i, m, fmt.Errorf("destination %q is not an absolute path", m.Dest))
		}
		if m.Kind < 0 || m.Kind >= kindCount {
			return fmt.Errorf("sandbox: mount %d: unknown kind %d", i+1, m.Kind)
		}
		k := kindOf(m.Kind)
		if strings.Contains(m.Source, "\x00") {
			return mountError(i, m, errors.New("source has a NUL byte"))
		}
		if m.FD != nil && (k.source != srcHostPath || m.Source != "") {
			return mountError(i, m, errors.New("a descriptor is the source of a bind only, in place of a path"))
		}
		if (k.source == srcHostPath && m.FD == nil || k.source == srcLinkTarget || k.source == srcUpperDir) && m.Source == "" {
			return mountError(i, m, errors.New("source missing"))
		}
		if (m.Server != nil) != k.takesServer {
			if k.takesServer {
				return mountError(i, m, errors.New("no server given (Mount.Server)"))
			}
			return mountError(i, m, errors.New("a server is for FUSE mounts only"))
		}
		if m.Try && k.source != srcHostPath {
			return mountError(i, m, errors.New("the Try flag is for binds of a host path"))
		}
		if k.takesLower {
			if err := checkOverlay(i, m); err != nil {
				return err
			}
		} else if m.Lower != nil || m.Work != "" {
			return mountError(i, m, errors.New("lower layers and a work directory are for overlays"))
		}
		if k.needsPerms && m.Perms == nil {
			return mountError(i, m, errors.New("no mode given"))
		}
		if m.Perms != nil && *m.Perms&^(os.ModePerm|os.ModeSticky|os.ModeSetuid|os.ModeSetgid) != 0 {
			return mountError(i, m, fmt.Errorf("mode %#o is not permission bits (os.ModeSticky, os.ModeSetuid and os.ModeSetgid are the special ones)", uint32(*m.Perms)))
		}
	}
	for fd, f := range spec.Files {
		if fd < 0 || f == nil {
			return fmt.Errorf("sandbox: fd %d: want a number of 0 or more and a file", fd)
		}
	}
	for _, p := range spec.LockFiles {
		if !filepath.IsAbs(p) || strings.Contains(p, "\x00") {
			return fmt.Errorf("sandbox: lock file %q is not an absolute path", p)
		}
	}
	if spec.ControllingTerminal && spec.SameSession {
		return errors.New("sandbox: a controlling terminal needs a session of the program's own (not SameSession)")
	}
	if spec.ControllingTerminal && spec.Files[0] == nil {
		return errors.New("sandbox: a controlling terminal is fd 0, and Files has none")
	}
	if spec.UID < 0 || spec.GID < 0 {
		return errors.New("sandbox: uid and gid must not be negative")
	}
	if err := spec.HostIDs.check(spec); err != nil {
		return err
	}
	if spec.ShareUTS && spec.Hostname != "" {
		return errors.New("sandbox: a hostname needs a UTS namespace of the sandbox's own (not ShareUTS)")
	}
	if spec.Net < NetNone || spec.Net > NetHost {
		return fmt.Errorf("sandbox: unknown network %d", spec.Net)
	}
	for _, c := range spec.Caps {
		if c < 0 || c > lastCap() {
			return fmt.Errorf("sandbox: capability %d: this kernel's are 0 to %d", c, lastCap())
		}
	}
	for i, f := range spec.SeccompFilters {
		if len(f) == 0 || len(f) > 4096 {
			return fmt.Errorf("sandbox: seccomp program %d: %d instructions (want 1 to 4096)", i+1, len(f))
		}
	}
	return nil
}
