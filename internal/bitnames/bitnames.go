// Package bitnames reads and writes sets of bits as lists of names, such
// as "read,write": the rights of package dir and package served. It
// imports no caplin package.
package bitnames

import "strings"

// Name is one bit (or set of bits, for a shorthand) and its name.
type Name[T ~uint32] struct {
	Bits T
	Name string
}

// Parse reads a list of names separated by any of the characters in seps
// (spaces around names are ignored, as are empty names) into the union of
// their bits, each name one of names or of shorthands. It returns the
// first unknown name, if any.
func Parse[T ~uint32](s, seps string, names, shorthands []Name[T]) (bits T, unknown string, ok bool) {
	for _, w := range strings.FieldsFunc(s, func(c rune) bool { return strings.ContainsRune(seps, c) }) {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		found := false
		for _, n := range append(names[:len(names):len(names)], shorthands...) {
			if n.Name == w {
				bits |= n.Bits
				found = true
				break
			}
		}
		if !found {
			return 0, w, false
		}
	}
	return bits, "", true
}

// Format lists the names of the bits in v, joined by sep, "unknown" for
// bits outside known, and "none" for no bit.
func Format[T ~uint32](v T, sep string, names []Name[T], known T) string {
	var out []string
	for _, n := range names {
		if v&n.Bits != 0 {
			out = append(out, n.Name)
		}
	}
	if v&^known != 0 {
		out = append(out, "unknown")
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, sep)
}
