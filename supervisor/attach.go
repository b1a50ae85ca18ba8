package supervisor

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// attachments are a job's viewers, and which of them holds the writer
// lease: only its input reaches the program, and only it sets the
// terminal's size (or anyone, while no one holds the lease).
type attachments struct {
	viewers map[*Viewer]struct{}
	// list is the viewers too, a slice replaced (never changed) when
	// one comes or goes, for the output reader to go through unlocked.
	list   []*Viewer
	writer *Viewer
}

// all returns the viewers.
func (a *attachments) all() []*Viewer {
	vs := make([]*Viewer, 0, len(a.viewers))
	for v := range a.viewers {
		vs = append(vs, v)
	}
	return vs
}

// AttachOptions say how to attach to a job.
type AttachOptions struct {
	// Size is the viewer's terminal size, which becomes the job's
	// terminal's if the viewer holds the writer lease.
	Size Winsize
	// Write asks for the writer lease: granted if no other viewer holds
	// it (Viewer.Writer says which). A viewer without it watches: what it
	// sends is dropped.
	Write bool
	// Replay is how many bytes of recent output are sent first: 0 none,
	// negative all the history kept.
	Replay int64
}

// A Viewer is one attachment to a job: a stream socket whose other end
// its holder reads the job's output from, and writes its input to.
type Viewer struct {
	j    *Job
	conn *os.File // the supervisor's end
	raw  syscall.RawConn

	// mayWrite: the viewer may take the writer lease and set the size.
	mayWrite bool

	// mu is held while output is written to the viewer; off is the
	// offset of the next byte of output it is to get.
	mu   sync.Mutex
	off  int64
	once sync.Once
	// gone is closed when the viewer ends; kick tells its follower
	// that there is output for it (deliver).
	gone chan struct{}
	kick chan struct{}
	// onClose, if set, is called once it has ended.
	onClose func()
}

// Attach attaches a viewer to the job and returns it with the viewer's
// end of its stream (a connected AF_UNIX SOCK_STREAM socket), which the
// caller owns. The viewer gets the output from opts.Replay bytes back
// on, then what comes; a viewer that does not read loses the oldest of
// what it has not read (the job never waits for it) and is told how
// much, in a line of its own. Closing the end, or Viewer.Close, detaches.
func (j *Job) Attach(opts AttachOptions) (*Viewer, *os.File, error) {
	return j.attach(opts, true, nil)
}

// attach is Attach, for a viewer that may type (take the writer lease,
// set the size) or not, with a function called once it has ended.
func (j *Job) attach(opts AttachOptions, mayWrite bool, onClose func()) (*Viewer, *os.File, error) {
	opts.Write = opts.Write && mayWrite
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("supervisor: attach %s: socketpair: %w", j.name, err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("supervisor: attach %s: %w", j.name, err)
	}
	v := &Viewer{j: j, conn: os.NewFile(uintptr(fds[0]), "attach"), gone: make(chan struct{}), kick: make(chan struct{}, 1), onClose: onClose, mayWrite: mayWrite}
	v.raw, _ = v.conn.SyscallConn()
	theirs := os.NewFile(uintptr(fds[1]), "attach")
	// Where the viewer starts, set before the output reader can see it.
	head, tail := j.back.span()
	from := head
	if opts.Replay >= 0 {
		from = max(head, tail-opts.Replay)
	}
	v.off = from
	j.mu.Lock()
	if j.removed {
		j.mu.Unlock()
		v.conn.Close()
		theirs.Close()
		return nil, nil, fmt.Errorf("supervisor: attach %s: %w", j.name, os.ErrClosed)
	}
	if j.att.viewers == nil {
		j.att.viewers = map[*Viewer]struct{}{}
	}
	j.att.viewers[v] = struct{}{}
	j.att.list = append(slices.Clip(j.att.list), v)
	if opts.Write && j.att.writer == nil {
		j.att.writer = v
	}
	j.mu.Unlock()
	v.Resize(opts.Size)
	go v.follow()
	go v.input()
	return v, theirs, nil
}

// Writer reports whether the viewer holds the writer lease.
func (v *Viewer) Writer() bool {
	v.j.mu.Lock()
	defer v.j.mu.Unlock()
	return v.j.att.writer == v
}

// Lease takes the writer lease if no viewer holds it, and reports
// whether v holds it.
func (v *Viewer) Lease() bool {
	v.j.mu.Lock()
	defer v.j.mu.Unlock()
	if _, ok := v.j.att.viewers[v]; ok && v.mayWrite && v.j.att.writer == nil {
		v.j.att.writer = v
	}
	return v.j.att.writer == v
}

// Release gives the writer lease up, if v holds it.
func (v *Viewer) Release() {
	v.j.mu.Lock()
	defer v.j.mu.Unlock()
	if v.j.att.writer == v {
		v.j.att.writer = nil
	}
}

// Resize sets the job's terminal size to ws, if the job has a terminal,
// v is still attached, and v holds the writer lease, or no one does and v
// may type; a 0 dimension is left as it is. It reports whether it was v's
// to set.
func (v *Viewer) Resize(ws Winsize) (bool, error) {
	j := v.j
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.att.viewers[v]; !ok || !j.tty || j.removed {
		return false, nil // gone, or no terminal
	}
	if j.att.writer != v && (j.att.writer != nil || !v.mayWrite) {
		return false, nil // someone else's to set, or a watcher's
	}
	if ws.Rows == 0 && ws.Cols == 0 {
		return true, nil
	}
	if err := setSize(int(j.in.Fd()), ws); err != nil {
		return true, err
	}
	if ws.Rows > 0 {
		j.size.Rows = ws.Rows
	}
	if ws.Cols > 0 {
		j.size.Cols = ws.Cols
	}
	return true, nil
}

// Done returns a channel closed when the viewer has ended.
func (v *Viewer) Done() <-chan struct{} { return v.gone }

// Close detaches the viewer: its stream is closed, and its lease freed.
func (v *Viewer) Close() { v.close() }

func (v *Viewer) close() {
	v.once.Do(func() {
		j := v.j
		j.mu.Lock()
		delete(j.att.viewers, v)
		j.att.list = slices.DeleteFunc(slices.Clone(j.att.list), func(x *Viewer) bool { return x == v })
		if j.att.writer == v {
			j.att.writer = nil
		}
		j.mu.Unlock()
		v.conn.Close()
		close(v.gone)
		if v.onClose != nil {
			v.onClose()
		}
	})
}

// follow sends the job's output to the viewer from v.off on, until
// either goes. Once the viewer is caught up it waits for a kick: the job's
// output reader sends what comes to a caught-up viewer itself (deliver)
// and kicks only a viewer it could not send everything to, so that a
// keystroke's echo wakes no goroutine of the viewer's.
func (v *Viewer) follow() {
	defer v.close()
	buf := make([]byte, 16<<10)
	for {
		v.mu.Lock()
		n, next, lost, ok := v.j.back.readNow(v.off, buf)
		if n == 0 {
			v.mu.Unlock()
			if !ok {
				return // the end of the output, all of it sent
			}
			select {
			case <-v.kick:
				continue
			case <-v.gone:
				return
			}
		}
		var err error
		if lost > 0 {
			note := fmt.Sprintf("\r\n[caplin: %d bytes of output dropped: this viewer fell behind]\r\n", lost)
			_, err = v.conn.Write([]byte(note))
		}
		if err == nil {
			_, err = v.conn.Write(buf[:n])
		}
		v.off = next
		v.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// deliver sends p, the job's output from offset at on, to the viewer at
// once if it is caught up and its socket takes it without waiting. What
// it could not send (the follower was busy, or the socket full) it leaves
// to the follower, which it kicks.
func (v *Viewer) deliver(at int64, p []byte) {
	sent := false
	if v.mu.TryLock() {
		if v.off == at && v.raw != nil {
			var n int
			v.raw.Write(func(fd uintptr) bool {
				n, _ = unix.Write(int(fd), p)
				return true // never wait: the follower does
			})
			if n > 0 {
				v.off += int64(n)
			}
			sent = n == len(p)
		}
		v.mu.Unlock()
	}
	if !sent {
		v.wake()
	}
}

// wake kicks the follower.
func (v *Viewer) wake() {
	select {
	case v.kick <- struct{}{}:
	default: // kicked already
	}
}

// inputRetry is how often a viewer whose input the job does not take
// (its terminal's or pipe's buffer full) tries again.
const inputRetry = 20 * time.Millisecond

// writeInput writes p to the job's input, whole before another viewer's.
// The job may not read it for ever: where the input is full, it waits
// for room inputRetry at a time, and gives up (os.ErrClosed) once the
// viewer has gone, or has hung its stream up (which the input goroutine,
// waiting here, does not read), so that a detached viewer neither keeps a
// goroutine blocked on a job that does not read, nor its writer lease.
func (v *Viewer) writeInput(p []byte) error {
	rc, err := v.j.in.SyscallConn()
	if err != nil {
		return err
	}
	v.j.inMu.Lock()
	defer v.j.inMu.Unlock()
	for len(p) > 0 {
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Write(int(fd), p)
			return true // never wait here: below, until the viewer goes
		}); err != nil {
			return err
		}
		if n > 0 {
			p = p[n:]
		}
		switch {
		case werr == unix.EAGAIN:
			if v.hungUp() {
				return os.ErrClosed
			}
			t := time.NewTimer(inputRetry)
			select {
			case <-v.gone:
				t.Stop()
				return os.ErrClosed
			case <-t.C:
			}
		case werr == unix.EINTR:
		case werr != nil:
			return werr
		}
	}
	return nil
}

// hungUp reports whether the viewer's holder has closed its stream, or
// shut its writing down: its end of the input.
func (v *Viewer) hungUp() bool {
	return v.raw != nil && polled(v.raw, unix.POLLRDHUP, unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR)
}

// input passes what the viewer sends on to the job's terminal or input
// pipe while it holds the writer lease, and drops it otherwise. The end
// of the viewer's input (it closed its end, or shut its writing down)
// detaches it.
func (v *Viewer) input() {
	defer v.close()
	buf := make([]byte, 4<<10)
	for {
		n, err := v.conn.Read(buf)
		if n > 0 && v.Writer() {
			if werr := v.writeInput(buf[:n]); werr != nil {
				// The job's input is gone (removed), or the viewer:
				// nothing more to pass on.
				return
			}
		}
		if err != nil {
			return
		}
	}
}
