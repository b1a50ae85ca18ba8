// Package subid reads the subordinate ID files /etc/subuid and /etc/subgid
// (subuid(5), subgid(5)): which ranges of host IDs a user may map into the
// user namespaces it makes.
//
// Each line is OWNER:START:COUNT, OWNER a user name or a numeric uid.
// Parsing is lenient in what it skips and strict in what it returns:
// blank lines, comments (#), and lines that are malformed (a wrong number
// of fields, a START or COUNT that is not a decimal number, a COUNT of 0,
// a range past the last valid ID 4294967294) are skipped, never guessed
// at. A file of any content, of any size, read fully or cut short, gives
// ranges that are each valid; it never panics.
package subid

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
)

// MaxID is the highest ID a range may include: 2^32-1 is the kernel's
// "no ID" ((uid_t)-1), never a user.
const MaxID = 1<<32 - 2

// maxLine bounds a line; longer ones are skipped (no real line is near it).
const maxLine = 4096

// Range is Count IDs from Start: Start to Start+Count-1.
type Range struct {
	Start, Count int64
}

// End returns the first ID after the range.
func (r Range) End() int64 { return r.Start + r.Count }

// Contains reports whether id is in the range.
func (r Range) Contains(id int64) bool { return id >= r.Start && id < r.End() }

// Parse returns the ranges that r's lines allot to the user named name or
// numbered uid (either may be left out: "" or a negative uid), in the order
// of the file. It returns the ranges read before a read error, and the error.
func Parse(r io.Reader, name string, uid int) ([]Range, error) {
	br := bufio.NewReaderSize(r, maxLine)
	var out []Range
	for {
		line, err := readLine(br)
		if rg, ok := parseLine(line, name, uid); ok {
			out = append(out, rg)
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// readLine reads one line without its newline. A line longer than maxLine
// is returned empty (so skipped), the rest of it consumed.
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), err
}

// parseLine reads one OWNER:START:COUNT line, if it is one for name or
// uid.
func parseLine(line, name string, uid int) (Range, bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return Range{}, false
	}
	f := strings.Split(line, ":")
	if len(f) != 3 {
		return Range{}, false
	}
	owner := f[0]
	if !(name != "" && owner == name || uid >= 0 && owner == strconv.Itoa(uid)) {
		return Range{}, false
	}
	start, ok := number(f[1])
	if !ok {
		return Range{}, false
	}
	count, ok := number(f[2])
	if !ok || count == 0 || start+count-1 > MaxID {
		return Range{}, false
	}
	return Range{Start: start, Count: count}, true
}

// number reads a decimal ID or count: digits only, at most MaxID+1.
func number(s string) (int64, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > MaxID+1 {
		return 0, false
	}
	return n, true
}
