package dir

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// versionPrefix starts the text form of a Version, so a changed format can
// be told apart.
const versionPrefix = "v1:"

// MarshalText encodes v exactly, for scripts and files that keep a
// Version between runs (caplin dir version / cas): "v1:" then the device,
// inode number, modification time and size in decimal and the file handle
// in hex, separated by colons; the zero Version is "none".
func (v Version) MarshalText() ([]byte, error) {
	if v.IsZero() {
		return []byte("none"), nil
	}
	return []byte(fmt.Sprintf("%s%d:%d:%d:%d:%s", versionPrefix, v.dev, v.ino, v.mtime, v.size, hex.EncodeToString([]byte(v.handle)))), nil
}

// UnmarshalText decodes what MarshalText made.
func (v *Version) UnmarshalText(b []byte) error {
	p, err := ParseVersion(string(b))
	if err != nil {
		return err
	}
	*v = p
	return nil
}

// ParseVersion decodes the text form of a Version (MarshalText).
func ParseVersion(s string) (Version, error) {
	if s == "none" {
		return Version{}, nil
	}
	bad := func() (Version, error) {
		return Version{}, fmt.Errorf("dir: %q is not a version (want v1:DEV:INO:MTIME:SIZE:HANDLE or none)", s)
	}
	rest, ok := strings.CutPrefix(s, versionPrefix)
	if !ok {
		return bad()
	}
	f := strings.Split(rest, ":")
	if len(f) != 5 {
		return bad()
	}
	var v Version
	var err error
	if v.dev, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return bad()
	}
	if v.ino, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return bad()
	}
	if v.mtime, err = strconv.ParseInt(f[2], 10, 64); err != nil {
		return bad()
	}
	if v.size, err = strconv.ParseInt(f[3], 10, 64); err != nil {
		return bad()
	}
	h, err := hex.DecodeString(f[4])
	if err != nil {
		return bad()
	}
	v.handle = string(h)
	if v.IsZero() {
		return bad()
	}
	return v, nil
}
