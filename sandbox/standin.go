package sandbox

// Stand-ins: the private directories that take the place of a tmpfs in a
// LandlockOnly sandbox, which has no mount namespace to mount one in.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/caplin-dev/caplin/dir"
	"golang.org/x/sys/unix"
)

// standIn is a directory made for one sandbox in the caller's temporary
// directory, removed with everything in it when the sandbox ends.
type standIn struct {
	path   string
	parent *dir.Dir // the temporary directory it is in
	name   string
	self   *dir.Dir // the directory itself, which nothing in it leads out of

	mu      sync.Mutex
	removed bool
}

// standInPrefix begins the names of stand-in directories.
const standInPrefix = "caplin-tmp-"

// newStandIn makes a directory of mode 0700 in the caller's temporary
// directory (os.TempDir) under a name no other sandbox has, owned by uid
// and gid, the program's user.
func newStandIn(uid, gid int) (*standIn, error) {
	base, err := filepath.Abs(os.TempDir())
	if err != nil {
		return nil, fmt.Errorf("sandbox: the temporary directory for a stand-in of a tmpfs: %w", err)
	}
	parent, err := dir.Open(base)
	if err != nil {
		return nil, fmt.Errorf("sandbox: a stand-in of a tmpfs: %w", err)
	}
	for range 10 {
		// getrandom(2), as crypto/rand would, without linking in the
		// crypto packages, whose initialisation every caplin command
		// paid for at start-up.
		var rnd [8]byte
		if _, err = unix.Getrandom(rnd[:], 0); err != nil {
			err = os.NewSyscallError("getrandom", err)
			break
		}
		name := standInPrefix + hex.EncodeToString(rnd[:])
		err = parent.Mkdir(name, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err == nil {
			// Exactly 0700, whatever the umask: the program, as the
			// caller's user, owns it and must be able to use it.
			var self *dir.Dir
			if err = parent.Chmod(name, 0o700); err == nil {
				self, err = parent.Sub(name, dir.All)
			}
			if err == nil && (uid != os.Geteuid() || gid != os.Getegid()) {
				// Only the caller can have made or replaced it: the
				// temporary directory is sticky, or the caller's own.
				err = os.Lchown(filepath.Join(base, name), uid, gid)
				if err != nil {
					self.Close()
				}
			}
			if err == nil {
				return &standIn{path: filepath.Join(base, name), parent: parent, name: name, self: self}, nil
			}
			parent.RemoveAll(name)
		}
		break
	}
	parent.Close()
	return nil, fmt.Errorf("sandbox: a stand-in of a tmpfs in %s: %w", base, err)
}

// remove removes the directory and everything in it: symbolic links are
// removed, never followed, and nothing outside it is touched (package
// dir confines every lookup). Directories the program made unwritable are
// made writable again first. Once it succeeded, remove does nothing.
func (s *standIn) remove() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return nil
	}
	err := s.parent.RemoveAll(s.name)
	if err != nil {
		// The program may have taken the write permission off
		// directories it made, or off the stand-in itself.
		s.parent.Chmod(s.name, 0o700)
		s.makeWritable(".")
		err = s.parent.RemoveAll(s.name)
	}
	if err != nil {
		return fmt.Errorf("sandbox: removing the stand-in of a tmpfs %s: %w", s.path, err)
	}
	s.removed = true
	s.self.Close()
	return s.parent.Close()
}

// makeWritable gives the directories in the directory name of the
// stand-in, and those in them, mode 0700, so that what is in them can be
// removed. Every lookup stays in the stand-in, whatever links the program
// left there. It tries what it can and reports nothing: remove says what
// could not go.
func (s *standIn) makeWritable(name string) {
	ents, _ := s.self.ReadDir(name)
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub := e.Name()
		if name != "." {
			sub = name + "/" + sub
		}
		if s.self.Chmod(sub, 0o700) == nil {
			s.makeWritable(sub)
		}
	}
}
