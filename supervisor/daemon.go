package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// SocketPath returns where the user's supervisor listens:
// $XDG_RUNTIME_DIR/caplin/supervisor.sock, or, where XDG_RUNTIME_DIR is
// not set, /tmp/caplin-UID/supervisor.sock.
func SocketPath() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "caplin", "supervisor.sock")
	}
	return filepath.Join(os.TempDir(), "caplin-"+strconv.Itoa(os.Geteuid()), "supervisor.sock")
}

// A Listener is the supervisor's listening socket, with the lock that
// makes it the only supervisor on that path.
type Listener struct {
	*net.UnixListener
	lock *os.File
	path string
}

// Close stops listening, removes the socket (if it made it) and lets the
// lock go.
func (l *Listener) Close() error {
	err := l.StopAccepting()
	if l.lock != nil {
		// The socket is removed while the lock is still held: no newer
		// supervisor's socket can be there yet.
		os.Remove(l.path)
		l.lock.Close()
		l.lock = nil
	}
	return err
}

// Path returns the socket's path.
func (l *Listener) Path() string {
	if l.path != "" {
		return l.path
	}
	return l.Addr().String()
}

// StopAccepting closes the listening socket and keeps the lock (and the
// socket's name, which no other supervisor can take meanwhile): for a
// supervisor that stops its jobs before it goes.
func (l *Listener) StopAccepting() error {
	err := l.UnixListener.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// ErrAlreadyRunning is Listen's error when another supervisor holds the
// path's lock. It matches unix.EADDRINUSE.
var ErrAlreadyRunning = fmt.Errorf("supervisor: another supervisor listens there: %w", unix.EADDRINUSE)

// Listen makes the supervisor's socket at path (mode 0600), in its
// directory, made mode 0700 if missing and refused unless it is the
// caller's own and no one else's to enter or write (a directory another
// user could write to would let them put a socket of theirs there). A
// lock file beside the socket (path + ".lock", held with flock for as long
// as the Listener lives, holding the supervisor's pid) makes it the only
// supervisor there: a second
// fails with ErrAlreadyRunning, and a socket left by one that died is
// replaced.
func Listen(path string) (*Listener, error) {
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, fmt.Errorf("supervisor: lstat %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return nil, fmt.Errorf("supervisor: %s must be a directory of uid %d's with mode 0700 (it is uid %d's, mode %#o): %w",
			dir, os.Geteuid(), st.Uid, st.Mode&0o7777, unix.EPERM)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrAlreadyRunning, path)
		}
		return nil, fmt.Errorf("supervisor: flock %s.lock: %w", path, err)
	}
	// The lock file says who holds it, for people and scripts
	// (caplin's tests stop their supervisors so).
	lock.Truncate(0)
	lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	// The lock is ours: a socket there is a dead supervisor's.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		lock.Close()
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	// The socket is made under another name, set to mode 0600 and
	// listening before it is renamed into place: a client never finds
	// it bound and not yet listening (ECONNREFUSED), and no one can
	// connect to it before its mode is set.
	tmp := path + ".new"
	os.Remove(tmp)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: tmp, Net: "unixpacket"})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	err = os.Chmod(tmp, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		ln.Close()
		os.Remove(tmp)
		lock.Close()
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	return &Listener{UnixListener: ln, lock: lock, path: path}, nil
}

// CheckDir checks the directory of a supervisor's socket before a
// client connects there: it must be a directory (not a link) that only
// its owner, the caller or root, may write to. Otherwise another user
// could have put a socket of theirs there.
func CheckDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("supervisor: lstat %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || (int(st.Uid) != os.Geteuid() && st.Uid != 0) || st.Mode&0o022 != 0 {
		return fmt.Errorf("supervisor: %s is not a directory of uid %d's (or root's) that only its owner may write to (it is uid %d's, mode %#o): another user could have put a socket there: %w",
			dir, os.Geteuid(), st.Uid, st.Mode&0o7777, unix.EPERM)
	}
	return nil
}

// Activated returns the listening socket systemd passed (socket
// activation: LISTEN_PID is this process and LISTEN_FDS is 1, the socket
// at fd 3), or nil when none was passed. The environment variables are
// cleared, so that the jobs do not see them.
func Activated() (*Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" {
		return nil, nil
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	if fds != "1" {
		return nil, fmt.Errorf("supervisor: socket activation passed %s sockets; want 1", fds)
	}
	unix.CloseOnExec(3)
	f := os.NewFile(3, "LISTEN_FDS")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("supervisor: socket activation: fd 3: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New("supervisor: socket activation: fd 3 is not a Unix socket")
	}
	ul.SetUnlinkOnClose(false)
	l := &Listener{UnixListener: ul}
	// The socket's lock too, where it can be made: a supervisor that
	// caplin start launches meanwhile then sees this one, instead of
	// replacing its socket.
	if path := ul.Addr().String(); filepath.IsAbs(path) {
		lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		if err == nil {
			if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				lock.Close()
				ul.Close()
				return nil, fmt.Errorf("%w (%s)", ErrAlreadyRunning, path)
			}
			lock.Truncate(0)
			lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			l.lock = lock
		}
	}
	return l, nil
}
