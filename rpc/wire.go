package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// Wire format (docs/rpc.md has the full description). Every message is
// one SOCK_SEQPACKET record: a 12-byte header, then a body of CBOR items,
// with the message's descriptors as one SCM_RIGHTS control message.
//
//	header: version u8 | kind u8 | nfds u16 LE | id u64 LE
//	call:   method (text) , args , [fd numbers]  (the last item only if nfds > 0)
//	reply:  result , [fd numbers]
//	error:  {1: code, 2: errno, 3: text}
//	cancel: (empty)
const (
	// Version is the protocol version this package speaks, the first byte
	// of every message. A message of another version is answered with an
	// error of CodeVersion.
	Version = 1

	headerLen = 12
)

// Message kinds.
const (
	kindCall   = 1 // a call; id 0 asks for no reply
	kindReply  = 2 // the result of call id
	kindError  = 3 // the failure of call id; id 0: the object failed, last message
	kindCancel = 4 // the caller gave up on call id
)

// Limits on what a peer may send; a message beyond them fails alone and the
// connection goes on.
const (
	// DefaultMaxMessage is the default largest message, header and body.
	// Bulk data belongs in a sealed memfd, passed as an FD.
	DefaultMaxMessage = 64 << 10
	// DefaultMaxFDs is the default largest number of descriptors in one
	// message.
	DefaultMaxFDs = 32
	// maxSendFDs is the kernel's limit on descriptors in one sendmsg
	// (SCM_MAX_FD - 1 usable: 254 gives EINVAL).
	maxSendFDs = 253
)

// The codec modes are immutable option sets (the cbor package's way of
// configuring), made once; they hold no state.
var (
	encMode = must(cbor.EncOptions{
		Sort: cbor.SortNone,
		// Times keep their fraction and say they are times (tag 1), so
		// a schema-less reader sees a time, not a number.
		Time:    cbor.TimeUnixDynamic,
		TimeTag: cbor.EncTagRequired,
	}.EncMode())
	decMode = must(cbor.DecOptions{
		// A peer is untrusted: bound what one message can make us build.
		MaxNestedLevels:   32,
		MaxArrayElements:  16 << 10,
		MaxMapPairs:       16 << 10,
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		// A Go string may hold any bytes, and the encoder sends them
		// as they are: a file name that is not UTF-8, or a report of
		// what an untrusted process named its descriptors, must
		// decode rather than fail the whole message.
		UTF8: cbor.UTF8DecodeInvalid,
	}.DecMode())
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err) // the options above are constants
	}
	return v
}

// A message is one decoded record.
type message struct {
	kind  byte
	id    uint64
	body  []byte
	files []*os.File
}

// closeFiles closes every descriptor a message carried.
func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// appendHeader appends a header to b.
func appendHeader(b []byte, kind byte, nfds int, id uint64) []byte {
	b = append(b, Version, kind, 0, 0)
	binary.LittleEndian.PutUint16(b[2:], uint16(nfds))
	return binary.LittleEndian.AppendUint64(b, id)
}

// encodeBody appends v's CBOR encoding and, if it holds descriptors,
// the list of their numbers, and returns the files to send.
func encodeBody(b []byte, v any) ([]byte, []*os.File, error) {
	files, nums, err := collectFDs(v)
	if err != nil {
		return nil, nil, err
	}
	if len(files) > maxSendFDs {
		return nil, nil, fmt.Errorf("rpc: %d descriptors in one message (at most %d)", len(files), maxSendFDs)
	}
	enc, err := encMode.Marshal(v)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: encode %T: %w", v, err)
	}
	b = append(b, enc...)
	if len(files) > 0 {
		enc, err := encMode.Marshal(nums)
		if err != nil {
			return nil, nil, err
		}
		b = append(b, enc...)
	}
	return b, files, nil
}

// decodeBody decodes one value from body into ptr and hands its FDs their
// files. Files nobody claimed are closed; on error, every file is closed.
func decodeBody(body []byte, files []*os.File, ptr any) error {
	var rest []byte
	var err error
	if ptr == nil {
		var skip cbor.RawMessage
		rest, err = decMode.UnmarshalFirst(body, &skip)
	} else {
		rest, err = decMode.UnmarshalFirst(body, ptr)
	}
	if err != nil {
		closeFiles(files)
		return &Error{Code: CodeBadMessage, Text: "decode: " + err.Error()}
	}
	var nums []int32
	if len(files) > 0 {
		if rest, err = decMode.UnmarshalFirst(rest, &nums); err != nil || len(nums) != len(files) {
			closeFiles(files)
			return &Error{Code: CodeBadMessage, Text: "descriptor list does not match the descriptors sent"}
		}
	}
	if len(rest) != 0 {
		closeFiles(files)
		return &Error{Code: CodeBadMessage, Text: "trailing bytes after the body"}
	}
	if len(files) == 0 && ptr == nil {
		return nil
	}
	claimed := make([]bool, len(files))
	if ptr != nil {
		if err := attachFDs(ptr, files, nums, claimed); err != nil {
			closeFiles(files)
			return &Error{Code: CodeBadMessage, Text: err.Error()}
		}
	}
	for i, f := range files {
		if !claimed[i] {
			f.Close()
		}
	}
	return nil
}

// A conn sends and receives messages on one SOCK_SEQPACKET socket.
type conn struct {
	c      *net.UnixConn
	maxMsg int
	maxFDs int
	rbuf   []byte // only the reading goroutine uses rbuf and oob
	oob    []byte
	// sending is held by whoever sends with sendCtx, so that the write
	// deadline one sender's context sets interrupts no other sender.
	sending chan struct{}
}

func newConn(c *net.UnixConn, maxMsg, maxFDs int) *conn {
	if maxMsg <= 0 {
		maxMsg = DefaultMaxMessage
	}
	if maxFDs <= 0 {
		maxFDs = DefaultMaxFDs
	}
	return &conn{
		c:      c,
		maxMsg: maxMsg,
		maxFDs: maxFDs,
		rbuf:   make([]byte, maxMsg+1),
		// Room for every descriptor a sendmsg can carry, so the kernel
		// never truncates for count: the limit is ours to enforce.
		oob:     make([]byte, unix.CmsgSpace(maxSendFDs*4)+unix.CmsgSpace(64)),
		sending: make(chan struct{}, 1),
	}
}

// send writes one message. SOCK_SEQPACKET sends are atomic, so concurrent
// senders need no lock.
func (c *conn) send(b []byte, files []*os.File) error {
	if len(b) > c.maxMsg {
		return &Error{Code: CodeTooBig, Text: fmt.Sprintf("message of %d bytes (at most %d)", len(b), c.maxMsg)}
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			n, err := fdNumber(f)
			if err != nil {
				return err
			}
			fds[i] = int(n)
		}
		oob = unix.UnixRights(fds...)
	}
	_, _, err := c.c.WriteMsgUnix(b, oob, nil)
	// The files must stay open until the kernel has taken its references.
	runtime.KeepAlive(files)
	return err
}

// sendCtx is send that gives up, having sent nothing, when ctx ends
// before the message is on the socket (a peer that reads nothing fills the
// socket's buffer, and sendmsg then blocks). A SOCK_SEQPACKET message goes
// whole or not at all, so giving up never leaves part of one behind. Every
// sender on c must use sendCtx: the context's end interrupts the blocked
// sendmsg through the socket's write deadline, which is the socket's, not
// the sender's, so senders take turns.
func (c *conn) sendCtx(ctx context.Context, b []byte, files []*os.File) error {
	select {
	case c.sending <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sending }()
	if ctx.Done() == nil {
		return c.send(b, files)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.c.SetWriteDeadline(time.Unix(1, 0))
		close(fired)
	})
	err := c.send(b, files)
	if !stop() {
		<-fired
		c.c.SetWriteDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ctx.Err()
		}
	}
	return err
}

// trySend sends b at once if no one else is sending and the socket has
// room, and reports whether it did.
func (c *conn) trySend(b []byte) bool {
	select {
	case c.sending <- struct{}{}:
	default:
		return false
	}
	defer func() { <-c.sending }()
	rc, err := c.c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), b, nil, nil, unix.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	return serr == nil
}

// peerGone reports whether the peer has closed its end of the socket or
// shut its writing down (or the socket has failed, or is closed here),
// which poll(2) tells at once, even while messages the peer sent before
// wait unread ahead of the end of file. It does not wait.
func (c *conn) peerGone() bool {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	if err := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		gone = err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}); err != nil {
		return true
	}
	return gone
}

// unsent returns the bytes of the messages sent on c that the peer has not
// read yet (SIOCOUTQ), or 0 if c is closed.
func (c *conn) unsent() int {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
	})
	return n
}

// errMalformed is what recv returns, with the header's id when it could
// be read, for a message that failed alone; the connection goes on.
type recvError struct {
	id   uint64
	kind byte
	err  *Error
}

func (e *recvError) Error() string { return e.err.Error() }

// recv reads one message. It returns a *recvError for a message that broke
// a rule (its descriptors are closed), and another error when the
// connection is over (io.EOF for a clean close by the peer).
func (c *conn) recv() (message, error) {
	n, oobn, flags, _, err := c.c.ReadMsgUnix(c.rbuf, c.oob)
	return c.parse(n, oobn, flags, err)
}

// tryRecv is recv that does not wait: ok is false if no message waits.
func (c *conn) tryRecv() (m message, err error, ok bool) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return message{}, err, true
	}
	var n, oobn, flags int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), c.rbuf, c.oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		return true
	}); err != nil {
		return message{}, err, true
	}
	if rerr == unix.EAGAIN {
		return message{}, nil, false
	}
	if rerr != nil {
		rerr = os.NewSyscallError("recvmsg", rerr)
	}
	m, err = c.parse(n, oobn, flags, rerr)
	return m, err, true
}

// parse makes a message of what recvmsg read into c.rbuf and c.oob.
func (c *conn) parse(n, oobn, flags int, err error) (message, error) {
	var files []*os.File
	var ferr error
	if oobn > 0 {
		files, ferr = parseRights(c.oob[:oobn])
	}
	if err != nil {
		closeFiles(files)
		if errors.Is(err, io.EOF) {
			return message{}, errEOF
		}
		return message{}, err
	}
	if n == 0 && oobn == 0 {
		return message{}, errEOF
	}
	bad := func(code Code, format string, args ...any) (message, error) {
		closeFiles(files)
		re := &recvError{err: &Error{Code: code, Text: fmt.Sprintf(format, args...)}}
		if n >= headerLen {
			re.kind = c.rbuf[1]
			re.id = binary.LittleEndian.Uint64(c.rbuf[4:])
		}
		return message{}, re
	}
	switch {
	case ferr != nil:
		return bad(CodeBadMessage, "%v", ferr)
	case flags&unix.MSG_TRUNC != 0 || n > c.maxMsg:
		return bad(CodeTooBig, "message larger than %d bytes", c.maxMsg)
	case flags&unix.MSG_CTRUNC != 0:
		return bad(CodeTooManyFDs, "descriptors truncated (MSG_CTRUNC): the receiver's limit or a security module dropped some")
	case len(files) > c.maxFDs:
		return bad(CodeTooManyFDs, "%d descriptors in one message (at most %d)", len(files), c.maxFDs)
	case n < headerLen:
		return bad(CodeBadMessage, "message of %d bytes is shorter than the header", n)
	case c.rbuf[0] != Version:
		return bad(CodeVersion, "protocol version %d (this end speaks %d)", c.rbuf[0], Version)
	case int(binary.LittleEndian.Uint16(c.rbuf[2:])) != len(files):
		return bad(CodeBadMessage, "header says %d descriptors, %d came", binary.LittleEndian.Uint16(c.rbuf[2:]), len(files))
	}
	m := message{
		kind:  c.rbuf[1],
		id:    binary.LittleEndian.Uint64(c.rbuf[4:]),
		files: files,
	}
	m.body = append([]byte(nil), c.rbuf[headerLen:n]...)
	return m, nil
}

var errEOF = errors.New("rpc: connection closed by the peer")

// parseRights returns every descriptor in every SCM_RIGHTS control message
// of oob, as files the caller owns. It reads all of them even if one is
// malformed, so none leaks.
func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		// Nothing can be trusted about where descriptors are; the kernel
		// wrote well-formed headers, so this does not happen in practice.
		return nil, fmt.Errorf("rpc: control message: %w", err)
	}
	var files []*os.File
	var first error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil && first == nil {
			first = fmt.Errorf("rpc: SCM_RIGHTS: %w", err)
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "rpc-fd"))
		}
	}
	return files, first
}
