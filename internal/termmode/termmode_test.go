package termmode

import (
	"bytes"
	"testing"
)

func TestRestore(t *testing.T) {
	for _, c := range []struct {
		name, out, want string
	}{
		{"text", "hello\r\nworld", ""},
		{"colours left on", "\x1b[1;31mred", "\x1b[m"},
		{"colours reset", "\x1b[1;31mred\x1b[0m", ""},
		{"colours reset, no parameter", "\x1b[31mred\x1b[m", ""},
		{"vim", "\x1b[?1049h\x1b[22;0;0t\x1b[>4;2m\x1b[?1h\x1b=\x1b[?2004h\x1b[1;24r\x1b[?12h\x1b[?12l\x1b[27m\x1b[H\x1b[2J\x1b[?25l",
			"\x1b[?1049l\x1b[?1l\x1b[?25h\x1b[?2004l\x1b>\x1b[>4m\x1b7\x1b[r\x1b8\x1b[m"},
		{"vim, quit", "\x1b[?1049h\x1b[>4;2m\x1b[?1h\x1b=\x1b[?2004h\x1b[1;24r\x1b[?25l" +
			"\x1b[r\x1b[?25h\x1b[?2004l\x1b[?1l\x1b>\x1b[>4;0m\x1b[?1049l", ""},
		{"htop: mouse", "\x1b[?1000h\x1b[?1006h\x1b[?1002h", "\x1b[?1000l\x1b[?1002l\x1b[?1006l"},
		{"several modes in one", "\x1b[?1000;1006;2004h", "\x1b[?1000l\x1b[?1006l\x1b[?2004l"},
		{"autowrap off", "\x1b[?7l", "\x1b[?7h"},
		{"unknown modes left alone", "\x1b[?12h\x1b[?9999h\x1b[4h", ""},
		{"full reset", "\x1b[?1049h\x1b[?25l\x1bc", ""},
		{"soft reset", "\x1b[?1049h\x1b[?25l\x1b[?1h\x1b=\x1b[!p", "\x1b[?1049l"},
		{"kitty keys pushed twice, popped once", "\x1b[>1u\x1b[>3u\x1b[<u", "\x1b[<1u"},
		{"kitty keys popped more than pushed", "\x1b[>1u\x1b[<5u", ""},
		{"in a title", "\x1b]0;[?1049h\x07", ""},
		{"an escape ends a title", "\x1b]0;\x1b[?1049h\x07", "\x1b[?1049l"},
		{"title, then a mode", "\x1b]2;x\x1b\\\x1b[?2004h", "\x1b[?2004l"},
		{"cancelled", "\x1b[?1049\x18h", ""},
		{"cut short by another", "\x1b[?104\x1b[?2004h", "\x1b[?2004l"},
		{"too long", "\x1b[?" + string(bytes.Repeat([]byte("1;"), 300)) + "1049h", ""},
		{"cut inside a clipboard payload", "\x1b]52;c;aGVsbG8=", "\x18"},
		{"cut inside a sequence", "\x1b[?1049h\x1b[?20", "\x18\x1b[?1049l"},
		{"a control amid a sequence", "\x1b\n[?1049h", "\x1b[?1049l"},
		{"saved and put back", "\x1b[?1000h\x1b[?1000s\x1b[?1000l\x1b[?1000r", "\x1b[?1000l"},
		{"put back off", "\x1b[?1000s\x1b[?1000h\x1b[?1000r", ""},
		{"a sign is no number", "\x1b[?+1049h", ""},
		{"kitty keys on the alternate screen", "\x1b[?1049h\x1b[>1u", "\x1b[<1u\x1b[?1049l"},
		{"kitty keys on the main screen, then the alternate one", "\x1b[>1u\x1b[?1049h", "\x1b[?1049l\x1b[<1u"},
		{"kitty keys set at the bottom", "\x1b[=5;1u", "\x1b[=0;1u"},
		{"kitty keys set, then cleared", "\x1b[=5;1u\x1b[=0u", ""},
		{"a charset, then a mode", "\x1b(B\x1b[?2004h", "\x1b[?2004l"},
		{"an intermediate, then =", "\x1b(=", ""},
		{"ESC ESC", "\x1b\x1b[?1049h", "\x1b[?1049l"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var tr Tracker
			tr.Scan([]byte(c.out))
			if got := string(tr.Restore()); got != c.want {
				t.Errorf("Restore after %q = %q, want %q", c.out, got, c.want)
			}
			if got := tr.Restore(); len(got) != 0 {
				t.Errorf("a second Restore = %q, want nothing", got)
			}
			// Split anywhere, the same.
			for i := range len(c.out) {
				var tr Tracker
				tr.Scan([]byte(c.out[:i]))
				tr.Scan([]byte(c.out[i:]))
				if got := string(tr.Restore()); got != c.want {
					t.Fatalf("split at %d: Restore = %q, want %q", i, got, c.want)
				}
			}
		})
	}
}

// FuzzScan: any output, split anywhere, gives what it gives whole; what
// Restore writes restores everything itself, so a Tracker that scans it
// has nothing more to restore.
func FuzzScan(f *testing.F) {
	for _, s := range []string{"\x1b[?1049h\x1b[1;24r\x1b[31m", "\x1b]0;t\x07\x1b=", "\x1b[>4;2m\x1b[>1u", "plain"} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, out []byte, split int) {
		var whole, parts Tracker
		whole.Scan(out)
		if len(out) > 0 {
			split = (split%len(out) + len(out)) % len(out)
		} else {
			split = 0
		}
		parts.Scan(out[:split])
		parts.Scan(out[split:])
		w, p := whole.Restore(), parts.Restore()
		if !bytes.Equal(w, p) {
			t.Fatalf("whole: %q, split at %d: %q", w, split, p)
		}
		// From a terminal in the state out left, Restore's bytes leave
		// nothing to restore.
		var again Tracker
		again.Scan(out)
		r := again.Restore()
		again.Scan(out)
		again.Scan(r)
		if rest := again.Restore(); len(rest) != 0 {
			t.Fatalf("after %q and its restore %q: still %q", out, r, rest)
		}
	})
}
