// Package termmode follows the terminal modes that a stream of output
// sets on the terminal it is written to, so that a relay that stops
// writing it partway (a viewer that detaches from a program's terminal)
// can put the terminal back as it was: out of the alternate screen, mouse
// and bracketed-paste reporting off, the cursor shown, the keypad and
// cursor keys normal, the scrolling region whole.
//
// It knows the modes that leave a shell's terminal unusable or odd when
// left set, and nothing else: a Tracker's Restore undoes only what the
// stream it saw changed, so a terminal the program never touched gets
// nothing (leaving an alternate screen that was not entered would move
// the cursor on some terminals). It reads escape sequences as ECMA-48
// and xterm frame them, split across writes or not; it does not
// interpret text, and needs no terminfo: the sequences it writes are
// xterm's, which every terminal in use today understands.
package termmode

import (
	"slices"
	"strconv"
)

// The DEC private modes followed (CSI ? N h sets, CSI ? N l resets), with
// whether each is on when a terminal starts. The order is Restore's: the
// alternate screen is left first, so that what follows applies to the
// normal one.
var modes = []mode{
	{1049, false}, // alternate screen, cursor saved
	{1047, false}, // alternate screen
	{47, false},   // alternate screen (the old form)
	{1, false},    // application cursor keys
	{5, false},    // reverse video
	{6, false},    // origin mode
	{7, true},     // autowrap
	{25, true},    // cursor visible
	{66, false},   // application keypad (DECNKM)
	{9, false},    // X10 mouse
	{1000, false}, // mouse: clicks
	{1001, false}, // mouse: highlight
	{1002, false}, // mouse: drags
	{1003, false}, // mouse: all motion
	{1004, false}, // focus events
	{1005, false}, // mouse: UTF-8 coordinates
	{1006, false}, // mouse: SGR coordinates
	{1015, false}, // mouse: urxvt coordinates
	{1016, false}, // mouse: SGR pixel coordinates
	{2004, false}, // bracketed paste
	{2026, false}, // synchronized output
}

type mode struct {
	n  int  // its number
	on bool // whether it is on when a terminal starts
}

// maxParams bounds the parameter bytes of one control sequence that the
// Tracker keeps; a longer one is not a mode change it follows.
const maxParams = 256

// state is where the scanner is in an escape sequence.
type state uint8

const (
	ground   state = iota
	escape         // after ESC
	escInter       // after ESC and an intermediate byte (ESC ( B): until the final one
	csi            // after ESC [ (8-bit C1 controls are not read: UTF-8 streams)
	skip           // in a sequence too long to keep, until its final byte
	str            // in a control string (OSC, DCS, APC, PM, SOS), until BEL or ESC
)

// A Tracker follows the modes the bytes given to Scan set. Its zero value
// is a Tracker for a terminal as it starts. It is not safe for concurrent
// use.
type Tracker struct {
	st     state
	params []byte
	set    map[int]bool // mode -> its state now, for the modes changed
	saved  map[int]bool // XTSAVE's (CSI ? Pm s), for XTRESTORE (CSI ? Pm r)
	keypad bool         // ESC = (DECKPAM) is in effect
	region bool         // a scrolling region is set (CSI t;b r)
	attrs  bool         // graphic rendition was changed (CSI ... m)
	keys   bool         // xterm's modifyOtherKeys is set (CSI > 4;N m)
	// kitty's keyboard protocol, each screen (main, alternate) its own:
	// the flags pushed (CSI > N u) and not popped, and whether the flags
	// at the bottom of the stack were set (CSI = N u).
	kitty     [2]int
	kittyBase [2]bool
}

// maxKitty bounds the kitty keyboard flags pushes counted (a terminal's
// stack is as deep).
const maxKitty = 64

// Scan reads p, the next bytes written to the terminal.
func (t *Tracker) Scan(p []byte) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch t.st {
		case ground:
			// The common case: text with no escape in it.
			j := slices.Index(p[i:], 0x1b)
			if j < 0 {
				return
			}
			i += j
			t.st = escape
		case escape:
			switch {
			case c == '[':
				t.st = csi
				t.params = t.params[:0]
			case c == ']' || c == 'P' || c == '_' || c == '^' || c == 'X':
				t.st = str
			case c == 0x1b: // ESC ESC: the second starts the sequence
			case c == 0x18 || c == 0x1a: // CAN, SUB: cancelled
				t.st = ground
			case c < 0x20: // a control amid a sequence is executed: it goes on
			case c < 0x30: // an intermediate byte: the final one comes next
				t.st = escInter
			default:
				switch c {
				case '=':
					t.keypad = true
				case '>':
					t.keypad = false
				case 'c': // RIS: the terminal is as it started
					t.reset()
				}
				t.st = ground
			}
		case escInter:
			switch {
			case c == 0x1b:
				t.st = escape
			case c == 0x18 || c == 0x1a || c >= 0x30:
				t.st = ground
			}
		case str:
			if c == 0x07 || c == 0x18 || c == 0x1a {
				t.st = ground
			} else if c == 0x1b {
				t.st = escape // ESC \ (ST) ends it
			}
		case csi, skip:
			switch {
			case c >= 0x40 && c <= 0x7e: // the final byte
				if t.st == csi {
					t.final(c)
				}
				t.st = ground
			case c == 0x1b: // a sequence cut short by another
				t.st = escape
			case c == 0x18 || c == 0x1a: // CAN, SUB: cancelled
				t.st = ground
			case c < 0x20: // a control in a sequence is executed: ignored here
			case t.st == csi && len(t.params) < maxParams:
				t.params = append(t.params, c)
			default:
				t.st = skip
			}
		}
	}
}

// final acts on a control sequence whose parameter and intermediate bytes
// are t.params and whose final byte is c.
func (t *Tracker) final(c byte) {
	p := t.params
	switch {
	case c == 'h' || c == 'l':
		if len(p) == 0 || p[0] != '?' {
			return
		}
		for _, n := range t.modeParams(p[1:]) {
			if t.set == nil {
				t.set = map[int]bool{}
			}
			t.set[n] = c == 'h'
		}
	case (c == 's' || c == 'r') && len(p) > 0 && p[0] == '?':
		// XTSAVE and XTRESTORE: the modes' states saved, and put back.
		for _, n := range t.modeParams(p[1:]) {
			if c == 's' {
				if t.saved == nil {
					t.saved = map[int]bool{}
				}
				t.saved[n] = t.state(n)
			} else if on, ok := t.saved[n]; ok {
				if t.set == nil {
					t.set = map[int]bool{}
				}
				t.set[n] = on
			}
		}
	case c == 'r' && (len(p) == 0 || p[0] >= '0' && p[0] <= ';'):
		// DECSTBM: parameters set a region; none, or the whole screen,
		// unset it. Any region is undone: the screen's height is not
		// known here.
		t.region = len(p) > 0 && string(p) != ";" && string(p) != "1"
	case c == 'm' && (len(p) == 0 || p[0] >= '0' && p[0] <= ';'):
		t.attrs = len(p) > 0 && string(p) != "0"
	case c == 'm' && len(p) > 0 && p[0] == '>':
		// xterm's key modifier options: resource 4 is modifyOtherKeys.
		f := splitParams(p[1:])
		if string(f[0]) == "4" {
			t.keys = len(f) > 1 && len(f[1]) > 0 && string(f[1]) != "0"
		}
	case c == 'u' && len(p) > 0 && p[0] == '>':
		k := &t.kitty[t.screen()]
		*k = min(*k+1, maxKitty)
	case c == 'u' && len(p) > 0 && p[0] == '<':
		n, ok := number(p[1:])
		if !ok || n < 1 {
			n = 1
		}
		k := &t.kitty[t.screen()]
		*k = max(*k-n, 0)
	case c == 'u' && len(p) > 0 && p[0] == '=' && t.kitty[t.screen()] == 0:
		// Flags set at the bottom of the stack, which no pop undoes:
		// mode 1 sets them, 2 adds to them, 3 takes some away.
		f := splitParams(p[1:])
		flags, _ := number(f[0])
		how := 1
		if len(f) > 1 {
			how, _ = number(f[1])
		}
		base := &t.kittyBase[t.screen()]
		switch how {
		case 1:
			*base = flags != 0
		case 2:
			*base = *base || flags != 0
		}
	case c == 'p' && string(p) == "!":
		// DECSTR, a soft reset: the modes it resets are as they start.
		for _, n := range []int{1, 6, 7, 25, 66} {
			delete(t.set, n)
		}
		t.keypad, t.region, t.attrs = false, false, false
	}
}

// reset forgets every change: the terminal is as it started.
func (t *Tracker) reset() {
	clear(t.set)
	clear(t.saved)
	t.keypad, t.region, t.attrs, t.keys = false, false, false, false
	t.kitty, t.kittyBase = [2]int{}, [2]bool{}
}

// modeParams returns the modes followed among a DEC private mode
// sequence's parameters p.
func (t *Tracker) modeParams(p []byte) []int {
	var out []int
	for _, f := range splitParams(p) {
		if n, ok := number(f); ok && slices.ContainsFunc(modes, func(m mode) bool { return m.n == n }) {
			out = append(out, n)
		}
	}
	return out
}

// state returns whether mode n is on now.
func (t *Tracker) state(n int) bool {
	if on, ok := t.set[n]; ok {
		return on
	}
	i := slices.IndexFunc(modes, func(m mode) bool { return m.n == n })
	return i >= 0 && modes[i].on
}

// screen is 1 while the alternate screen is in use, else 0.
func (t *Tracker) screen() int {
	if t.set[1049] || t.set[1047] || t.set[47] {
		return 1
	}
	return 0
}

// number reads a parameter of digits only, as a terminal does (no sign,
// not empty), up to a bound that no mode or count reaches.
func number(f []byte) (int, bool) {
	if len(f) == 0 || len(f) > 6 {
		return 0, false
	}
	n := 0
	for _, c := range f {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// splitParams splits a sequence's parameters at ';'.
func splitParams(p []byte) [][]byte {
	var out [][]byte
	for {
		i := slices.Index(p, ';')
		if i < 0 {
			return append(out, p)
		}
		out = append(out, p[:i])
		p = p[i+1:]
	}
}

// Restore returns the bytes that put the terminal back as it started,
// for what the bytes scanned so far changed and left changed: nothing if
// they changed nothing. Output cut short inside a sequence or a control
// string (an image, a clipboard payload), which would swallow what comes
// next, is cancelled first (CAN). The Tracker then counts them as
// written.
func (t *Tracker) Restore() []byte {
	var b []byte
	if t.st != ground {
		b = append(b, 0x18)
		t.st = ground
	}
	// kitty's keyboard flags on the screen in use first: the alternate
	// screen's stack is its own.
	alt := t.screen()
	b = t.restoreKitty(b, alt)
	for _, m := range modes {
		if on, ok := t.set[m.n]; ok && on != m.on {
			b = append(b, "\x1b[?"...)
			b = strconv.AppendInt(b, int64(m.n), 10)
			if m.on {
				b = append(b, 'h')
			} else {
				b = append(b, 'l')
			}
		}
	}
	if t.keypad {
		b = append(b, "\x1b>"...)
	}
	if t.keys {
		b = append(b, "\x1b[>4m"...)
	}
	if alt == 1 {
		b = t.restoreKitty(b, 0) // the main screen's, now in use
	}
	if t.region {
		// The cursor saved and restored around it: DECSTBM homes it.
		b = append(b, "\x1b7\x1b[r\x1b8"...)
	}
	if t.attrs {
		b = append(b, "\x1b[m"...)
	}
	t.reset()
	return b
}

// restoreKitty appends what undoes kitty keyboard flags set on screen i,
// which must be the one in use: the pushes popped, the bottom flags
// cleared.
func (t *Tracker) restoreKitty(b []byte, i int) []byte {
	if t.kitty[i] > 0 {
		b = append(b, "\x1b[<"...)
		b = strconv.AppendInt(b, int64(t.kitty[i]), 10)
		b = append(b, 'u')
	}
	if t.kittyBase[i] {
		b = append(b, "\x1b[=0;1u"...)
	}
	return b
}
