package sandbox

// The network of a sandbox of its own: the loopback interface.

import (
	"encoding/binary"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// recordLoopback records the calls that bring up the loopback interface
// of the process's network namespace.
func recordLoopback(r *recorder) {
	from := r.begin()
	sock := r.b.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	// struct ifreq: the name, then ifr_flags (a short).
	ifr := make([]byte, unix.IFNAMSIZ+24) // 40 bytes on 64-bit
	copy(ifr, "lo")
	binary.NativeEndian.PutUint16(ifr[unix.IFNAMSIZ:], unix.IFF_UP|unix.IFF_LOOPBACK|unix.IFF_RUNNING)
	r.b.Syscall(unix.SYS_IOCTL, sock, proc.Int(unix.SIOCSIFFLAGS), r.b.In(ifr))
	r.b.CloseFD(sock)
	r.end(from, "bringing up the loopback interface")
}
