package proc

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestRawLayout checks the child's pointer-free mirrors of kernel structs
// against x/sys, and the wire structs against the sizes the protocol uses.
func TestRawLayout(t *testing.T) {
	var m unix.Msghdr
	var r rawMsghdr
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof msghdr", unsafe.Sizeof(r), unsafe.Sizeof(m)},
		{"msg_iov", unsafe.Offsetof(r.iov), unsafe.Offsetof(m.Iov)},
		{"msg_iovlen", unsafe.Offsetof(r.iovlen), unsafe.Offsetof(m.Iovlen)},
		{"msg_control", unsafe.Offsetof(r.control), unsafe.Offsetof(m.Control)},
		{"msg_controllen", unsafe.Offsetof(r.controllen), unsafe.Offsetof(m.Controllen)},
		{"msg_flags", unsafe.Offsetof(r.flags), unsafe.Offsetof(m.Flags)},
		{"sizeof iovec", unsafe.Sizeof(rawIovec{}), unsafe.Sizeof(unix.Iovec{})},
		{"iov_len", unsafe.Offsetof(rawIovec{}.len), unsafe.Offsetof(unix.Iovec{}.Len)},
		{"sizeof wireOp", unsafe.Sizeof(wireOp{}), wireOpSize},
		{"wireOp.okErr (encoder writes it at 76)", unsafe.Offsetof(wireOp{}.okErr), 76},
		{"sizeof reqHeader", unsafe.Sizeof(reqHeader{}), reqHeaderSize},
		{"sizeof replyHeader", unsafe.Sizeof(replyHeader{}), replyHeaderSize},
		{"sizeof rusage", uintptr(sizeofRusage), reapEntrySize - 16},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	// The misc area's parts do not overlap.
	if miscForkArgs+unsafe.Sizeof(forkArgs{}) > miscState ||
		miscState+unsafe.Sizeof(childState{}) > miscScratch ||
		miscScratch+16 > miscUnmap ||
		miscUnmap+8+16*maxUnmap > arenaMisc+arenaMiscSize ||
		miscSendIov+2*unsafe.Sizeof(rawIovec{}) > miscPidfd ||
		miscRecvMsg+unsafe.Sizeof(rawMsghdr{}) > miscSendMsg ||
		miscSendMsg+unsafe.Sizeof(rawMsghdr{}) > miscRecvIov {
		t.Errorf("the arena's misc area overlaps itself")
	}
	// The reply's control buffer's parts do not overlap either.
	if cmsgOutPoll < 8 || cmsgOutPoll+2*unsafe.Sizeof(rawPollFd{}) > cmsgOutSignals ||
		cmsgOutSignals+cmsgOutSignalsSize > arenaCmsgSize ||
		unix.SizeofCmsghdr+4*maxFDs > cmsgOutSiginfo || cmsgOutSiginfo+128 > arenaCmsgSize {
		t.Errorf("the reply's control buffer overlaps itself")
	}
}
