package served

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caplin-dev/caplin/proc"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Default cache timeouts (see docs/served.md, "Caching").
const (
	// WritableCache is how long the kernel may trust entries and
	// attributes of a mount with any right to change it: changes made
	// outside the mount are seen within it.
	WritableCache = time.Second
	// ReadOnlyCache is how long for a mount with only RightRead and
	// RightExec.
	ReadOnlyCache = 5 * time.Minute
)

// revokeDrain bounds how long Revoke waits for requests already past the
// gate to finish before it drops the kernel's caches.
const revokeDrain = 50 * time.Millisecond

// maxIO is the largest read and write the kernel is asked to send.
const maxIO = 1 << 20

// Procs returns the GOMAXPROCS that a process whose GOMAXPROCS is procs
// (its default: the CPUs it may use, its cgroup's quota included) should
// run with to serve servers Servers: two more per Server, eight more at
// most. Each Server keeps about two goroutines blocked in read(2) of
// /dev/fuse between requests; where those hold every P of the process,
// the Go runtime's monitor takes their Ps away (every 20 µs while they
// wait), and each request then starts by waiting for a P again. With Ps
// to spare it does not, and a request costs less (measured on 2 CPUs: a
// lookup 52 µs with 2 Ps, 42 µs with 4). A command sets it
// (runtime.GOMAXPROCS); a library does not change it for its caller.
func Procs(procs, servers int) int {
	return procs + min(2*servers, 8)
}

// Server serves an FS over one FUSE connection.
type Server struct {
	raw *rawFS

	mu      sync.Mutex
	started bool
	srv     *fuse.Server
}

// NewServer returns a Server of fsys; it owns fsys from then on.
func NewServer(fsys FS, opts Options) *Server {
	rights := opts.Rights
	if rights == 0 {
		rights = All
	}
	readOnly := rights&^ReadOnly == 0
	timeout := opts.Cache
	if timeout <= 0 {
		timeout = WritableCache
		if readOnly {
			timeout = ReadOnlyCache
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, fileFS := fsys.(FileFS)
	return &Server{raw: &rawFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		fs:            fsys,
		ctx:           ctx,
		cancel:        cancel,
		rights:        rights,
		dest:          opts.Dest,
		events:        opts.Events,
		log:           logger,
		timeout:       timeout,
		readOnly:      readOnly,
		noOpen:        !fileFS && rights.Has(RightRead|RightExec) && (rights&(RightWrite|RightAppend) == 0 || rights.Has(RightWrite)),
		noOpenDir:     rights.Has(RightRead),
		asRoot:        os.Geteuid() == 0,
		nodes:         newNodeTable(),
	}}
}

// NoExec reports whether the server's rights lack RightExec, so that its
// mount must be made noexec (sandbox.FUSEServer's mounter asks): without
// it, a program refused an exec open could still run a file's code, by
// mapping it executable (ld.so FILE does), which asks the server only for
// a read.
func (s *Server) NoExec() bool { return s.raw.rights&RightExec == 0 }

// MountOptions returns the mount options the kernel must be given for
// this server, beyond fd, rootmode, user_id and group_id (which the
// mounter sets): "default_permissions,allow_other". The kernel checks
// permission bits itself (default_permissions), against the attributes
// the server reports with IDs mapped into the mount's user namespace, and
// lets every process of that namespace in (allow_other).
func (s *Server) MountOptions() string { return "default_permissions,allow_other" }

// Serve serves dev, a /dev/fuse descriptor opened in the user namespace of
// the mount (whose ID maps are uidMap and gidMap, as the caller's
// namespace sees them), in goroutines of its own, and returns once they
// run. Serve takes ownership of dev.
//
// Serve first waits for the kernel's INIT request, which the kernel sends
// when the mount is made: a caller mounts dev before calling Serve, or
// calls Serve from another goroutine. ctx bounds that wait only; the
// server then runs until Close, or until the mount is gone (its mount
// namespace ended, or it was unmounted), when it closes itself. Host IDs
// that the maps do not map are owned by nobody inside (stat shows 65534);
// empty maps are the identity.
func (s *Server) Serve(ctx context.Context, dev *os.File, uidMap, gidMap []proc.IDMap) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		dev.Close()
		return fmt.Errorf("served: serve %s: already serving", s.raw.dest)
	}
	s.started = true
	s.mu.Unlock()
	s.raw.uids = append(idMap(nil), uidMap...)
	s.raw.gids = append(idMap(nil), gidMap...)

	// go-fuse takes a descriptor number ("/dev/fd/N") and closes it when
	// it stops: give it a duplicate of its own, so that dev's finalizer
	// never closes a number go-fuse closed and something reused.
	fd, err := unix.FcntlInt(dev.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	dev.Close()
	if err != nil {
		return fmt.Errorf("served: serve %s: dup /dev/fuse: %w", s.raw.dest, err)
	}
	atomicTrunc := uint64(fuse.CAP_ATOMIC_O_TRUNC)
	if s.raw.noOpen {
		atomicTrunc = 0
	}
	opts := &fuse.MountOptions{
		MaxWrite:      maxIO,
		MaxBackground: 64,
		// Replies carry data the server read into memory: go-fuse's
		// splice path would only write the header into a pipe of the
		// poller (waking its thread) and take it out again.
		DisableSplice: true,
		FsName:        "caplin",
		Name:          "caplin",
		Logger:        log.New(logWriter{s.raw.log}, "go-fuse: ", 0),
		// O_TRUNC arrives with the open (whose rights it needs), not as a
		// separate setattr, but where opens are not sent (noOpen): there
		// the kernel would take it as done; readdirplus only where the
		// kernel sees it pays.
		ExtraCapabilities: atomicTrunc | fuse.CAP_READDIRPLUS_AUTO |
			// The server drops set-user-ID and set-group-ID bits on
			// writes and truncations itself (killSUIDGID), and the host
			// drops security.capability when the server writes: so the
			// kernel need not ask for security.capability before every
			// write (it marks the superblock SB_NOSEC).
			fuse.CAP_HANDLE_KILLPRIV_V2,
		EnableSymlinkCaching: s.raw.readOnly,
		// Every request and reply, where the Logger takes LevelTrace.
		Debug: s.raw.log.Enabled(context.Background(), LevelTrace),
	}
	type result struct {
		srv *fuse.Server
		err error
	}
	done := make(chan result, 1)
	go func() {
		srv, err := fuse.NewServer(s.raw, "/dev/fd/"+strconv.Itoa(fd), opts)
		done <- result{srv, err}
	}()
	select {
	case <-ctx.Done():
		go func() {
			// The INIT may still come: then stop at once.
			if r := <-done; r.err == nil {
				s.raw.shutdown()
				go r.srv.Serve()
			}
		}()
		s.raw.shutdown()
		return fmt.Errorf("served: serve %s: waiting for the kernel's INIT: %w", s.raw.dest, ctx.Err())
	case r := <-done:
		if r.err != nil {
			unix.Close(fd)
			return fmt.Errorf("served: serve %s: %w", s.raw.dest, r.err)
		}
		s.mu.Lock()
		s.srv = r.srv
		s.mu.Unlock()
		go r.srv.Serve()
		return nil
	}
}

// Revoke ends the grant: from then on every request fails with EIO,
// reads and writes of files already open included, and the kernel's
// caches of the mount are dropped. It returns once they are.
//
// Requests already past the rights check when Revoke is called may still
// finish (Revoke waits up to 50 ms for them); then every entry, attribute
// and page the kernel holds for the mount is invalidated, so mmap'd pages
// fault again and get SIGBUS. Those that outlast the 50 ms answer when
// they are done; once the last is (and at least 10 ms after Revoke
// returns), the caches are invalidated again, in the background, so that
// what they answered is not kept. A closed Server stays closed
// (ENOTCONN).
func (s *Server) Revoke() error {
	r := s.raw
	r.state.CompareAndSwap(serving, revoked)
	deadline := time.Now().Add(revokeDrain)
	for r.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	r.invalidate()
	r.files.closeAll()
	r.dirs.closeAll()
	// Requests that passed the gate before Revoke and outlast the drain
	// may yet answer, and their answers fill the kernel's caches again;
	// so may one that had left the gate, but whose answer go-fuse had not
	// written yet when the count was read (it counts down before the
	// write), or that ended during the invalidation: once the last is
	// done (and its answer written), the caches are dropped again, always.
	go r.invalidateAfterLate()
	return nil
}

// lateAnswer is how long after the last late request ends the caches
// are dropped again: time for go-fuse to write its answer.
const lateAnswer = 10 * time.Millisecond

// invalidateAfterLate waits, as long as the mount stays revoked, for the
// requests still under way to end, then drops the kernel's caches and
// the descriptors kept again.
func (r *rawFS) invalidateAfterLate() {
	wait := time.Millisecond
	for r.inflight.Load() > 0 {
		if r.state.Load() != revoked {
			return
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
	time.Sleep(lateAnswer)
	if r.state.Load() == revoked {
		r.invalidate()
		r.files.closeAll()
		r.dirs.closeAll()
	}
}

// Close stops serving and closes the FS; the mount then fails requests
// with ENOTCONN. The connection itself ends when the mount goes away:
// until then the server answers every request with ENOTCONN.
func (s *Server) Close() error {
	r := s.raw
	r.state.Store(closed)
	r.invalidate()
	if err := r.shutdown(); err != nil {
		return fmt.Errorf("served: close %s: %w", r.dest, err)
	}
	return nil
}

// LevelTrace is the slog level at which a Server logs every FUSE request
// and reply (go-fuse's debug output), if its Logger is enabled for it.
const LevelTrace = slog.LevelDebug - 4

// logWriter sends go-fuse's log lines to a slog.Logger.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Log(context.Background(), LevelTrace, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = logWriter{}
