// Package filemode converts between Unix mode bits (stat's st_mode, the
// mode of open, mkdir and chmod) and io/fs's FileMode, whose setuid,
// setgid and sticky bits are not the octal 04000, 02000 and 01000.
//
// It imports no caplin package.
package filemode

import (
	"fmt"
	"io/fs"
	"strconv"

	"golang.org/x/sys/unix"
)

// FromStat converts a stat(2) st_mode, file type included, to an
// fs.FileMode. A type fs has no bit for is fs.ModeIrregular.
func FromStat(mode uint32) fs.FileMode {
	m := Perm(mode)
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	default:
		m |= fs.ModeIrregular
	}
	return m
}

// Perm converts the permission, setuid, setgid and sticky bits of a Unix
// mode to an fs.FileMode; other bits are ignored.
func Perm(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// Unix converts the permission, setuid, setgid and sticky bits of m to
// the mode argument of open(2), mkdir(2) and chmod(2); its type bits are
// ignored.
func Unix(m fs.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// ParseOctal reads octal permissions with the setuid (4000), setgid
// (2000) and sticky (1000) bits, such as "0755" or "4711", as chmod(1)
// takes them.
func ParseOctal(s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, fmt.Errorf("bad mode %q: want octal permissions such as 0755", s)
	}
	return Perm(uint32(v)), nil
}
