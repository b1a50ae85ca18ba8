package dir

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets of the fields of struct linux_dirent64, as getdents64(2) fills a
// buffer with them, taken from x/sys's definition of it.
const (
	direntInoOff    = int(unsafe.Offsetof(unix.Dirent{}.Ino))
	direntReclenOff = int(unsafe.Offsetof(unix.Dirent{}.Reclen))
	direntTypeOff   = int(unsafe.Offsetof(unix.Dirent{}.Type))
	direntNameOff   = int(unsafe.Offsetof(unix.Dirent{}.Name))
)
