package dir

import (
	"io/fs"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/internal/filemode"
	"golang.org/x/sys/unix"
)

// fileInfo is an fs.FileInfo made from a stat(2) result. Sys returns the
// *unix.Stat_t.
type fileInfo struct {
	name string
	st   unix.Stat_t
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.st.Size }
func (fi *fileInfo) Mode() fs.FileMode  { return filemode.FromStat(fi.st.Mode) }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi *fileInfo) IsDir() bool        { return fi.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (fi *fileInfo) Sys() any           { return &fi.st }
func (fi *fileInfo) String() string     { return fs.FormatFileInfo(fi) }

// direntType converts a getdents d_type to the type bits of an
// fs.FileMode; ok is false for DT_UNKNOWN.
func direntType(t uint8) (mode fs.FileMode, ok bool) {
	switch t {
	case unix.DT_REG:
		return 0, true
	case unix.DT_DIR:
		return fs.ModeDir, true
	case unix.DT_LNK:
		return fs.ModeSymlink, true
	case unix.DT_FIFO:
		return fs.ModeNamedPipe, true
	case unix.DT_SOCK:
		return fs.ModeSocket, true
	case unix.DT_CHR:
		return fs.ModeDevice | fs.ModeCharDevice, true
	case unix.DT_BLK:
		return fs.ModeDevice, true
	}
	return 0, false
}

// baseName is the last element of a path, as FileInfo.Name reports it:
// "b" for "a/b" and "a/b/", "." for ".".
func baseName(name string) string {
	t := strings.TrimRight(name, "/")
	if t == "" {
		return "/"
	}
	if i := strings.LastIndexByte(t, '/'); i >= 0 {
		return t[i+1:]
	}
	return t
}
