package rpc

import (
	"fmt"
	"strings"
	"testing"
)

// This file checks a model of the client's read-turn protocol (client.go)
// exhaustively for a few callers: every interleaving of their steps, of
// their cancellations, of the server's replies, of Err and of Close.
//
// The model's state mirrors the Client's fields (pending, unsent,
// orphans, reading, reader, interrupted, err) plus what the code keeps in
// goroutines: where each caller is (its pc), what its channel holds, the
// drain goroutines, the socket's replies. A step is one critical section
// of client.go (what runs under c.mu), or one channel or socket operation
// between them; each is commented with the function it mirrors. Every
// choice the code leaves to the runtime is a branch: which pending call
// passTurn's range over the map picks, which ready case a select takes,
// whether a send with an ended context still goes.
//
// It asserts, in every reachable state: at most one goroutine holds the
// read turn, and reading says whether one does; the turn never goes to a
// caller still sending; a channel is empty when something is sent to it
// (else the sender would block holding c.mu); no reply is taken off the
// socket twice or consumed twice; no goroutine reads with the deadline
// that interrupt set for another. In every final state (nothing can move):
// every caller returned, no goroutine reads, and, unless the client was
// closed, every reply the server sent was consumed exactly once (returned
// to its caller, or closed for a caller that gave up) and nobody holds the
// turn. And the state graph has no cycle: every run ends.
//
// The background reader (watch, for Forward) is not modelled.

// A caller's pc: where in client.go it is.
const (
	cStart    uint8 = iota // before roundTrip
	cSending               // roundTrip: in pending and unsent, in c.c.sendCtx
	cSent                  // roundTrip: sent, before the lock that takes it out of unsent
	cWait                  // roundTrip: in the select on ch and ctx.Done()
	cLead                  // lead: top of its loop (the ctx.Err() check)
	cRecv                  // lead: in c.c.recv()
	cDispatch              // lead: dispatch of the reply it read
	cDone                  // roundTrip returned
)

// What a caller's channel holds (its buffer of one, and whether it is
// closed).
const (
	chEmpty      uint8 = iota
	chReply            // the caller's reply
	chTurn             // the read turn (kindTurn)
	chClosed           // closed by failPending
	chTurnClosed       // the turn, then closed
)

// A drain goroutine's pc, and Err's.
const (
	dNone     uint8 = iota
	dTop            // drain: the lock at the top of its loop
	dRecv           // drain: in c.c.recv()
	dDispatch       // drain: dispatch of the reply it read

	eNone     = 0
	eStart    = 1 // Err: its first lock
	eRead     = 2 // Err: c.c.tryRecv()
	eDispatch = 3 // Err: dispatch of the reply it read
	eEnd      = 4 // Err: its last lock
	eDone     = 5
)

// Results of a call.
const (
	gotNone uint8 = iota
	gotReply
	gotErr
)

const mMax = 3 // callers the state has room for

type mCaller struct {
	pc        uint8
	ch        uint8
	msg       uint8 // in cDispatch: the id of the reply read
	got       uint8
	cancelled bool // its context ended
	armed     bool // the context.AfterFunc that calls interrupt is registered and not stopped
	intrRan   bool // that AfterFunc ran
}

type mDrain struct{ pc, msg uint8 }

type mState struct {
	c                        [mMax]mCaller
	pending, unsent, orphans uint8 // bit i: call id i+1 (caller i)
	reading                  bool
	reader                   uint8 // 0: nobody, a drain goroutine or Err; else a call id
	interrupted              bool  // and the socket's read deadline is in the past
	failed                   bool  // c.err != nil (Close ran; the socket is closed)
	atServer, replied        uint8 // calls the server got, and answered
	sock                     [mMax]uint8
	nsock                    uint8 // replies on the socket, in order
	consumed                 [mMax]uint8
	drains                   [2]mDrain
	errPC, errMsg            uint8
	closed                   bool
}

// mConfig says which actors the model has.
type mConfig struct {
	callers     int
	cancellable uint8 // bit i: caller i's context may end
	err         bool  // an Err call runs concurrently
	close       bool  // a Close runs concurrently
}

// A step is a successor state, what led to it, and the rule it broke, if
// any.
type mStep struct {
	what mLabel
	s    mState
	bad  string
}

// Bugs the model can be given, to show that it finds them: the first two
// are the ones afd21ad fixed in client.go.
const (
	bugTurnToSender = 1 << iota // passTurn does not skip c.unsent
	bugNoOrphans                // abandon forgets sent calls (no c.orphans, no drain)
	bugKeepDeadline             // passTurn leaves the read deadline set
)

// An mLabel names a step: who took it, and what it was (kept apart, and
// joined only to show a failure, as the search makes millions).
type mLabel struct{ who, what string }

func (l mLabel) String() string { return l.who + l.what }

var mWho = [...]string{"1: ", "2: ", "3: "}

type model struct {
	cfg   mConfig
	bugs  int
	steps []mStep
	what  mLabel
}

func bit(i int) uint8 { return 1 << i }

func (m *model) add(s mState, bad string) {
	m.steps = append(m.steps, mStep{what: m.what, s: s, bad: bad})
}

// consume counts the consumption of call i's reply.
func consume(s *mState, i int) string {
	s.consumed[i]++
	if s.consumed[i] > 1 {
		return fmt.Sprintf("reply %d consumed twice", i+1)
	}
	return ""
}

// passTurn mirrors Client.passTurn (c.mu held) and calls k with each
// state it may leave: it branches on the call that gets the turn, as the
// range over c.pending may pick any.
func (m *model) passTurn(s mState, k func(mState, string)) {
	if m.bugs&bugKeepDeadline == 0 {
		s.interrupted = false // SetReadDeadline(time.Time{})
	}
	s.reader = 0
	// c.wantsTurn: the background reader is not modelled.
	picked := false
	for i := range m.cfg.callers {
		if s.pending&bit(i) == 0 || (s.unsent&bit(i) != 0 && m.bugs&bugTurnToSender == 0) {
			continue
		}
		picked = true
		t := s
		bad := ""
		if pc := t.c[i].pc; pc == cStart || pc == cSending {
			bad = fmt.Sprintf("the turn went to caller %d, still sending", i+1)
		}
		t.reader = uint8(i + 1)
		if t.c[i].ch != chEmpty {
			bad = fmt.Sprintf("passTurn sent the turn to caller %d's full channel (%d): blocks holding c.mu", i+1, t.c[i].ch)
		}
		t.c[i].ch = chTurn
		k(t, bad)
	}
	if picked {
		return
	}
	if s.orphans != 0 && !s.failed {
		k(spawnDrain(s))
		return
	}
	s.reading = false
	k(s, "")
}

// spawnDrain mirrors `go c.drain()`.
func spawnDrain(s mState) (mState, string) {
	for k := range s.drains {
		if s.drains[k].pc == dNone {
			s.drains[k] = mDrain{pc: dTop}
			bad := ""
			if k > 0 {
				bad = "two drain goroutines"
			}
			return s, bad
		}
	}
	return s, "more than two drain goroutines"
}

// handOn mirrors the end of dispatch for a reply to another call: under
// c.mu, the reply goes to the caller's channel if the call is pending,
// else it is closed (closeFiles).
func handOn(s mState, id uint8) (mState, string) {
	j := int(id - 1)
	ok := s.pending&bit(j) != 0
	s.pending &^= bit(j)
	s.orphans &^= bit(j)
	if !ok {
		return s, consume(&s, j)
	}
	if s.c[j].ch != chEmpty {
		return s, fmt.Sprintf("dispatch sent reply %d to a full channel (%d): blocks holding c.mu", id, s.c[j].ch)
	}
	s.c[j].ch = chReply
	return s, ""
}

// abandon mirrors Client.abandon for caller i (c.mu held), followed by
// the return of roundTrip (its deferred stop of the AfterFunc).
func (m *model) abandon(s mState, i int, k func(mState, string)) {
	b := bit(i)
	unsent := s.unsent&b != 0
	s.unsent &^= b
	if s.pending&b != 0 && !unsent && !s.failed && m.bugs&bugNoOrphans == 0 {
		s.orphans |= b
	}
	s.pending &^= b
	s.c[i].pc, s.c[i].got, s.c[i].armed = cDone, gotErr, false
	switch s.c[i].ch { // the select with a default case
	case chClosed:
		k(s, "")
		return
	case chReply:
		s.c[i].ch = chEmpty
		k(s, consume(&s, i)) // closeFiles
		return
	case chTurn:
		s.c[i].ch = chEmpty
	case chTurnClosed:
		s.c[i].ch = chClosed
	}
	switch {
	case s.reading && s.reader == uint8(i+1):
		m.passTurn(s, k)
	case !s.reading && s.orphans != 0 && !s.failed:
		s.reading, s.reader = true, 0
		k(spawnDrain(s))
	default:
		k(s, "")
	}
}

// fail mirrors Client.fail and failPending: c.err is set, every pending
// channel is closed, and the socket is closed.
func fail(s mState) (mState, string) {
	if s.failed {
		return s, ""
	}
	s.failed = true
	for j := range mMax {
		if s.pending&bit(j) == 0 {
			continue
		}
		switch s.c[j].ch {
		case chEmpty:
			s.c[j].ch = chClosed
		case chTurn:
			s.c[j].ch = chTurnClosed
		default:
			return s, fmt.Sprintf("failPending closed pending call %d's channel holding %d", j+1, s.c[j].ch)
		}
	}
	s.pending = 0
	return s, ""
}

// pop takes the first reply off the socket.
func pop(s *mState) uint8 {
	id := s.sock[0]
	copy(s.sock[:], s.sock[1:])
	s.nsock--
	s.sock[s.nsock] = 0
	return id
}

// next returns the steps possible from s.
func (m *model) next(s mState) []mStep {
	m.steps = m.steps[:0]
	for i := range m.cfg.callers {
		m.caller(s, i)
	}
	for k := range s.drains {
		m.drain(s, k)
	}
	if m.cfg.err {
		m.errCall(s)
	}
	if m.cfg.close && !s.closed {
		// Close: fail.
		m.what = mLabel{what: "Close"}
		t, bad := fail(s)
		t.closed = true
		m.add(t, bad)
	}
	// The server answers each call it got, in any order, once.
	if !s.failed {
		for j := range m.cfg.callers {
			if s.atServer&bit(j) != 0 && s.replied&bit(j) == 0 {
				m.what = mLabel{mWho[j], "server replies"}
				t := s
				t.replied |= bit(j)
				t.sock[t.nsock] = uint8(j + 1)
				t.nsock++
				m.add(t, "")
			}
		}
	}
	return m.steps
}

func (m *model) caller(s mState, i int) {
	c := s.c[i]
	id := uint8(i + 1)
	b := bit(i)
	name := func(what string) { m.what = mLabel{mWho[i], what} }
	if m.cfg.cancellable&b != 0 && !c.cancelled && c.pc != cDone {
		name("context ends")
		t := s
		t.c[i].cancelled = true
		m.add(t, "")
	}
	if c.cancelled && c.armed && !c.intrRan {
		// interrupt, run by the context.AfterFunc of roundTrip.
		name("interrupt")
		t := s
		t.c[i].intrRan = true
		if t.reading && t.reader == id && !t.interrupted {
			t.interrupted = true
		}
		m.add(t, "")
	}
	switch c.pc {
	case cStart:
		// roundTrip: the lock that registers the call.
		name("roundTrip registers")
		t := s
		if t.failed {
			t.c[i].pc, t.c[i].got = cDone, gotErr
		} else {
			t.pending |= b
			t.unsent |= b
			t.c[i].pc = cSending
		}
		m.add(t, "")
	case cSending:
		// roundTrip: c.c.sendCtx. It may go even if the context ended;
		// it fails if the context ended or the socket is closed.
		if !s.failed {
			name("sendCtx sends")
			t := s
			t.atServer |= b
			t.c[i].armed = m.cfg.cancellable&b != 0 // context.AfterFunc(ctx, interrupt)
			t.c[i].pc = cSent
			m.add(t, "")
		}
		if c.cancelled || s.failed {
			name("sendCtx fails; abandon")
			m.abandon(s, i, m.add)
		}
	case cSent:
		// roundTrip: the lock after the send.
		name("roundTrip after send")
		t := s
		t.unsent &^= b
		waits := t.pending&b != 0
		if waits && !t.reading && !t.failed {
			t.reading, t.reader = true, id
			t.c[i].pc = cLead
		} else {
			t.c[i].pc = cWait
		}
		m.add(t, "")
	case cWait:
		// roundTrip: select on ch and ctx.Done().
		switch c.ch {
		case chReply:
			name("gets its reply from ch")
			t := s
			t.c[i].ch = chEmpty
			t.c[i].pc, t.c[i].got, t.c[i].armed = cDone, gotReply, false
			m.add(t, consume(&t, i))
		case chTurn, chTurnClosed:
			name("gets the turn from ch")
			t := s
			t.c[i].ch = map[uint8]uint8{chTurn: chEmpty, chTurnClosed: chClosed}[c.ch]
			t.c[i].pc = cLead
			m.add(t, "")
		case chClosed:
			name("sees ch closed")
			t := s
			t.c[i].pc, t.c[i].got, t.c[i].armed = cDone, gotErr, false
			m.add(t, "")
		}
		if c.cancelled {
			name("ctx.Done(); giveUp")
			m.abandon(s, i, m.add)
		}
	case cLead:
		// lead: the top of its loop.
		if c.cancelled {
			name("lead: ctx.Err(); giveUp")
			m.abandon(s, i, m.add)
		} else {
			name("lead: recv")
			t := s
			t.c[i].pc = cRecv
			m.add(t, "")
		}
	case cRecv:
		// lead: c.c.recv() returns.
		switch {
		case s.failed:
			// The socket is closed: dispatch fails the client (again)
			// and lead returns c.Err().
			name("lead: recv fails, socket closed")
			t := s
			t.c[i].pc, t.c[i].got, t.c[i].armed = cDone, gotErr, false
			m.add(t, "")
		case s.interrupted:
			// os.ErrDeadlineExceeded: the lock that clears it.
			name("lead: recv deadline")
			t := s
			t.interrupted = false
			t.c[i].pc = cLead
			m.add(t, "")
		case s.nsock > 0:
			name("lead: recv a reply")
			t := s
			t.c[i].msg = pop(&t)
			t.c[i].pc = cDispatch
			m.add(t, "")
		}
	case cDispatch:
		if c.msg == id {
			// dispatch says mine; lead's lock: delete, passTurn.
			name("lead: its reply; passTurn")
			t := s
			t.pending &^= b
			t.c[i].pc, t.c[i].got, t.c[i].armed = cDone, gotReply, false
			bad := consume(&t, i)
			m.passTurn(t, func(u mState, bad2 string) { m.add(u, bad+bad2) })
		} else {
			name("lead: dispatch hands on another's reply")
			t, bad := handOn(s, c.msg)
			t.c[i].pc, t.c[i].msg = cLead, 0
			m.add(t, bad)
		}
	}
}

func (m *model) drain(s mState, k int) {
	d := s.drains[k]
	m.what = mLabel{what: "drain"}
	switch d.pc {
	case dTop:
		// drain: the lock at the top of its loop.
		if s.orphans == 0 || s.failed {
			t := s
			t.drains[k] = mDrain{}
			if !t.failed {
				m.passTurn(t, m.add)
			} else {
				m.add(t, "")
			}
			return
		}
		t := s
		t.drains[k].pc = dRecv
		m.add(t, "")
	case dRecv:
		// drain: c.c.recv() returns.
		switch {
		case s.interrupted:
			t := s
			t.drains[k] = mDrain{}
			m.add(t, "drain read with the read deadline of an interrupted caller: dispatch fails the client")
		case s.failed:
			t := s
			t.drains[k] = mDrain{} // dispatch says over
			m.add(t, "")
		case s.nsock > 0:
			t := s
			t.drains[k].msg = pop(&t)
			t.drains[k].pc = dDispatch
			m.add(t, "")
		}
	case dDispatch:
		// dispatch(m, nil, 0): hand it on.
		t, bad := handOn(s, d.msg)
		t.drains[k] = mDrain{pc: dTop}
		m.add(t, bad)
	}
}

// errCall mirrors Client.Err, called once while the callers run.
func (m *model) errCall(s mState) {
	m.what = mLabel{what: "Err"}
	t := s
	switch s.errPC {
	case eNone:
		t.errPC = eStart
		m.add(t, "")
	case eStart:
		// Err: the first lock.
		if t.failed || t.reading {
			t.errPC = eDone
		} else {
			t.reading, t.reader = true, 0
			t.errPC = eRead
		}
		m.add(t, "")
	case eRead:
		// Err: c.c.tryRecv, through the poller, which honours the
		// deadline.
		switch {
		case t.interrupted:
			t.errPC = eEnd
			m.add(t, "Err read with the read deadline of an interrupted caller: dispatch fails the client")
		case t.failed:
			t.errPC = eEnd
			m.add(t, "")
		case t.nsock > 0:
			t.errMsg = pop(&t)
			t.errPC = eDispatch
			m.add(t, "")
		default:
			t.errPC = eEnd
			m.add(t, "")
		}
	case eDispatch:
		u, bad := handOn(t, t.errMsg)
		u.errMsg, u.errPC = 0, eRead
		m.add(u, bad)
	case eEnd:
		// Err: the last lock.
		t.errPC = eDone
		if !t.failed {
			m.passTurn(t, m.add)
		} else {
			m.add(t, "")
		}
	}
}

// holders counts the goroutines that hold the read turn, or the channel
// that holds it on its way.
func (m *model) holders(s mState) int {
	n := 0
	for i := range m.cfg.callers {
		c := s.c[i]
		if c.pc == cLead || c.pc == cRecv || c.pc == cDispatch || c.ch == chTurn || c.ch == chTurnClosed {
			n++
		}
	}
	for _, d := range s.drains {
		if d.pc != dNone {
			n++
		}
	}
	if s.errPC >= eRead && s.errPC <= eEnd {
		n++
	}
	return n
}

// check returns the rule s breaks, if any.
func (m *model) check(s mState, final bool) string {
	h := m.holders(s)
	if h > 1 {
		return fmt.Sprintf("%d goroutines hold the read turn", h)
	}
	if !s.failed && s.reading != (h == 1) {
		return fmt.Sprintf("reading is %v with %d holders of the turn", s.reading, h)
	}
	if !final {
		return ""
	}
	for i := range m.cfg.callers {
		if s.c[i].pc != cDone {
			return fmt.Sprintf("deadlock: caller %d stuck at pc %d", i+1, s.c[i].pc)
		}
	}
	if h != 0 {
		return "a goroutine still holds the read turn at the end"
	}
	if s.failed {
		return ""
	}
	if s.reading || s.orphans != 0 || s.nsock != 0 || s.pending != 0 || s.unsent != 0 {
		return fmt.Sprintf("left over: reading %v, orphans %b, %d replies unread, pending %b, unsent %b", s.reading, s.orphans, s.nsock, s.pending, s.unsent)
	}
	for i := range m.cfg.callers {
		if s.atServer&bit(i) != 0 && s.consumed[i] != 1 {
			return fmt.Sprintf("the reply to call %d was consumed %d times", i+1, s.consumed[i])
		}
		if s.c[i].got == gotReply && s.atServer&bit(i) == 0 {
			return fmt.Sprintf("call %d got a reply it never sent", i+1)
		}
	}
	return ""
}

// explore runs a depth-first search of every state reachable from the
// start, and returns the number of states, or the first broken rule with
// the steps that lead to it.
func (m *model) explore() (n int, err error) {
	type frame struct {
		s     mState
		what  mLabel
		steps []mStep
		next  int
	}
	const (
		onStack  = 1
		finished = 2
	)
	seen := map[mState]uint8{}
	var start mState
	fail := func(stack []frame, last mLabel, bad string) error {
		var b strings.Builder
		for _, f := range stack[1:] {
			fmt.Fprintf(&b, "\n  %s", f.what)
		}
		if last != (mLabel{}) {
			fmt.Fprintf(&b, "\n  %s", last)
		}
		return fmt.Errorf("%+v: %s, after:%s", m.cfg, bad, b.String())
	}
	expand := func(s mState) []mStep {
		return append([]mStep(nil), m.next(s)...)
	}
	stack := []frame{{s: start, steps: expand(start)}}
	seen[start] = onStack
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		if f.next == len(f.steps) {
			if bad := m.check(f.s, len(f.steps) == 0); bad != "" {
				return len(seen), fail(stack, mLabel{}, bad)
			}
			seen[f.s] = finished
			stack = stack[:len(stack)-1]
			continue
		}
		st := f.steps[f.next]
		f.next++
		if st.bad != "" {
			return len(seen), fail(stack, st.what, st.bad)
		}
		switch seen[st.s] {
		case onStack:
			return len(seen), fail(stack, st.what, "a cycle: a run that never ends")
		case finished:
			continue
		}
		if bad := m.check(st.s, false); bad != "" {
			return len(seen), fail(stack, st.what, bad)
		}
		seen[st.s] = onStack
		stack = append(stack, frame{s: st.s, what: st.what, steps: expand(st.s)})
	}
	return len(seen), nil
}

// TestTurnModel checks the model for two and three callers, each of
// which may be cancelled at any point, with Err and Close running
// alongside.
func TestTurnModel(t *testing.T) {
	configs := []mConfig{
		{callers: 1, cancellable: 1, err: true, close: true},
		{callers: 2, cancellable: 0b11},
		{callers: 2, cancellable: 0b11, err: true},
		{callers: 2, cancellable: 0b11, err: true, close: true},
		{callers: 3, cancellable: 0b011},
		{callers: 3, cancellable: 0b111},
	}
	if !testing.Short() {
		configs = append(configs,
			mConfig{callers: 3, cancellable: 0b111, err: true},
			mConfig{callers: 3, cancellable: 0b111, close: true},
		)
	}
	for _, cfg := range configs {
		m := &model{cfg: cfg}
		n, err := m.explore()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v: %d states", cfg, n)
	}
}

// TestTurnModelFindsBugs: the model, given each bug, finds it.
func TestTurnModelFindsBugs(t *testing.T) {
	for _, c := range []struct {
		name string
		bug  int
		want string
	}{
		{"turn to a caller still sending", bugTurnToSender, "still sending"},
		{"replies to calls given up left unread", bugNoOrphans, "replies unread"},
		{"deadline kept for the next reader", bugKeepDeadline, "read deadline"},
	} {
		m := &model{cfg: mConfig{callers: 3, cancellable: 0b111, err: true}, bugs: c.bug}
		_, err := m.explore()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: the model says %v, want an error about %q", c.name, err, c.want)
			continue
		}
		t.Logf("%s: %s", c.name, strings.SplitN(err.Error(), ", after:", 2)[0])
	}
}
