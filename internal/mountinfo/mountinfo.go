// Package mountinfo reads /proc/PID/mountinfo: the mounts a process
// sees, with the paths unescaped.
//
// It imports no caplin package.
package mountinfo

import "strings"

// A Mount is one line of mountinfo, the fields caplin uses.
type Mount struct {
	// Root is the path of the directory mounted, within its file system.
	Root string
	// Point is where it is mounted, as the reading process sees it.
	Point string
	// FSType is the file system's type ("cgroup2", "tmpfs").
	FSType string
	// Source is the file system's source ("none" if it has none).
	Source string
	// Super are the per-superblock options ("rw", a v1 cgroup's
	// controllers).
	Super []string
}

// Parse returns the mounts in s, a mountinfo file's contents, in order.
// Lines it cannot read are left out.
func Parse(s string) []Mount {
	var out []Mount
	for _, line := range strings.Split(s, "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		// Single spaces: an empty source is an empty field.
		g := strings.Split(post, " ")
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		out = append(out, Mount{
			Root: Unescape(f[3]), Point: Unescape(f[4]),
			FSType: Unescape(g[0]), Source: Unescape(g[1]), Super: strings.Split(g[2], ","),
		})
	}
	return out
}

// Unescape undoes the octal escapes the kernel writes in mountinfo's path
// fields (\040 for a space, \011 a tab, \012 a newline, \134 a backslash).
// A backslash not followed by three octal digits of a byte's value stays
// as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, ok := octalByte(s[i+1 : i+4]); ok {
				sb.WriteByte(v)
				i += 3
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

// octalByte reads three octal digits of a value up to 0o377.
func octalByte(d string) (byte, bool) {
	v := 0
	for _, c := range []byte(d) {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	if v > 0o377 {
		return 0, false
	}
	return byte(v), true
}
