package bitnames

import "testing"

func TestParseFormat(t *testing.T) {
	names := []Name[uint32]{{1, "a"}, {2, "b"}, {4, "c"}}
	short := []Name[uint32]{{0, "none"}, {3, "ab"}}
	for in, want := range map[string]uint32{"a": 1, "a, c": 5, "b|c": 6, "ab": 3, "": 0, "none": 0, " a ,, b ": 3} {
		got, unknown, ok := Parse(in, ",|", names, short)
		if !ok || got != want {
			t.Errorf("Parse(%q) = %d %q %v, want %d", in, got, unknown, ok, want)
		}
	}
	if _, unknown, ok := Parse("a,zz", ",", names, short); ok || unknown != "zz" {
		t.Errorf("unknown name: %q %v", unknown, ok)
	}
	for v, want := range map[uint32]string{0: "none", 1: "a", 5: "a,c", 7: "a,b,c", 9: "a,unknown"} {
		if got := Format(v, ",", names, 7); got != want {
			t.Errorf("Format(%d) = %q, want %q", v, got, want)
		}
	}
}
