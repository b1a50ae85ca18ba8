package proc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Peer handles: a Handle whose child another process holds — caplin's
// agent on another host (package remote) — and reaches for this one. Its
// calls are encoded here as for any Handle and carried by the Peer to
// the owner, which runs them on its own Handle (Exchange) and sends the
// reply back: batches, results used as arguments, memory, and the fds a
// batch passes or takes (which the Peer carries as it can) work as
// locally. Forking, exec and spawn need the child's process, which is the
// owner's: a peer handle refuses them (ErrPeer), and the owner's side
// does them (remote.Handle).

// ErrPeer is returned by the calls a peer handle cannot make itself:
// Fork, ForkAfter, ForkShared, Exec, Spawn and JoinPIDNamespace.
var ErrPeer = errors.New("proc: a peer handle's child is its owner's to fork, exec or spawn from")

// A Peer carries a peer handle's requests to the child's owner.
type Peer interface {
	// Exchange sends one request, with files to pass to the child, to the
	// owner, which runs it (Handle.Exchange), and returns the reply and
	// the files the child sent back. A cancelled ctx must kill the child,
	// as it does a local one.
	Exchange(ctx context.Context, req []byte, files []*os.File) (rep []byte, got []*os.File, err error)
	// Close ends the child (killed if it has not exec'd) and the peer.
	Close() error
}

// PeerInfo is what encoding a child's requests depends on: the number of
// its control socket in its fd table, where its arena is, and its pid as
// the owner sees it.
type PeerInfo struct {
	Ctrl  int
	Arena uint64
	Pid   int
	// Arch is the owner's GOARCH: requests carry system call numbers,
	// so a peer handle needs its own architecture.
	Arch string
}

// PeerInfo describes h's child for a peer handle of it (NewPeerHandle).
func (h *Handle) PeerInfo() PeerInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return PeerInfo{Ctrl: h.ctrl, Arena: h.arenaAt(), Pid: h.Pid(), Arch: runtime.GOARCH}
}

// NewPeerHandle returns a Handle whose calls p carries to the owner of a
// child described by info. It fails for an owner of another architecture.
func NewPeerHandle(p Peer, info PeerInfo) (*Handle, error) {
	if info.Arch != runtime.GOARCH {
		return nil, fmt.Errorf("proc: a child on %s cannot run calls encoded on %s (system call numbers differ)", info.Arch, runtime.GOARCH)
	}
	h := &Handle{
		owned: &owned{sock: -1, peer: p, peerPid: info.Pid},
		ctrl:  info.Ctrl,
		arena: info.Arena,
		req:   make([]byte, 0, initialBuffer),
	}
	h.cleanup = runtime.AddCleanup(h, (*owned).drop, h.owned)
	return h, nil
}

// peerExchange is exchange for a peer handle: the request goes to the
// owner through the Peer.
func (h *Handle) peerExchange(ctx context.Context, req []byte, fds []int, noReply bool, announced func(*os.File)) ([]byte, []*os.File, error) {
	if noReply || announced != nil {
		return nil, nil, ErrPeer
	}
	if h.state != nil {
		return nil, nil, h.state
	}
	files := make([]*os.File, 0, len(fds))
	defer func() { closeAll(files) }()
	for _, fd := range fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
		}
		files = append(files, os.NewFile(uintptr(d), "fd for the child"))
	}
	rep, got, err := h.peer.Exchange(ctx, req, files)
	if err != nil {
		de := &DeadError{Op: "exchange with the child's owner", Err: err}
		h.state = de
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, de
	}
	return rep, got, nil
}

// Exchange runs one request a peer handle encoded (see Peer) on h and
// returns the reply and the files the child sent back, for the owner's
// side of a Peer. It refuses requests that exec or spawn (their replies
// are not one message); the caller closes the files it passed.
func (h *Handle) Exchange(ctx context.Context, req []byte, files []*os.File) ([]byte, []*os.File, error) {
	if len(req) < reqHeaderSize || len(req) > arenaReqSize {
		return nil, nil, fmt.Errorf("proc: exchange: a request of %d bytes", len(req))
	}
	nops := int(binary.LittleEndian.Uint32(req[0:]))
	nfds := int(binary.LittleEndian.Uint32(req[4:]))
	outLen := binary.LittleEndian.Uint64(req[16:])
	if nops > (len(req)-reqHeaderSize)/wireOpSize || nfds != len(files) || outLen > arenaReqSize {
		return nil, nil, fmt.Errorf("proc: exchange: a malformed request (%d ops, %d fds for %d files, %d bytes out)", nops, nfds, len(files), outLen)
	}
	for i := range nops {
		kind, flags := opAt(req, i)
		switch {
		case flags&flagNoReply != 0, kind == opFork, kind == opSpawn, kind == opServe, kind == opTrack, kind == opReap:
			// exec, exit, and children the owner's handle would not
			// know it has
			return nil, nil, ErrPeer
		case kind == opMoveCtrl && i != 0:
			return nil, nil, fmt.Errorf("proc: exchange: the control socket moved by op %d, not the first", i)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != nil {
		return nil, nil, h.state
	}
	var rep []byte
	var got []*os.File
	err := withFDs(files, nil, func(fds []int) (err error) {
		var r []byte
		r, got, err = h.exchange(ctx, append([]byte(nil), req...), fds, nops, int(outLen), false, nil)
		rep = append([]byte(nil), r...)
		return err
	})
	if cap(h.rep) > maxKeptBuffer {
		h.rep = make([]byte, initialBuffer)
	}
	if err != nil {
		return nil, nil, err
	}
	if kind, _ := opAt(req, 0); kind == opMoveCtrl && nops > 0 && len(rep) >= replyHeaderSize+16 && binary.LittleEndian.Uint32(rep[0:]) > 0 {
		// The control socket moved (a fixed fd at its number): the
		// owner's requests must know where it is now.
		h.ctrl = int(binary.LittleEndian.Uint64(rep[replyHeaderSize:]))
	}
	return rep, got, nil
}

// opAt returns the kind and flags of a request's op i.
func opAt(req []byte, i int) (kind, flags uint32) {
	o := reqHeaderSize + i*wireOpSize
	if len(req) < o+8 {
		return 0, 0
	}
	return binary.LittleEndian.Uint32(req[o:]), binary.LittleEndian.Uint32(req[o+4:])
}
