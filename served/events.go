package served

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEventBuffer is how many events an EventWriter holds, by default,
// while its writer is slow.
const DefaultEventBuffer = 1024

// An EventWriter writes events as JSON lines, one per event, to an
// io.Writer (caplin run --events): the report of what a sandbox was
// refused, and of the changes of its mount table. Its Event method is an
// Options.Events: safe for concurrent use, and it never waits for the
// writer. Events wait in a bounded buffer for a goroutine that writes
// them; when the buffer is full an event is dropped and counted, and the
// next line written after drops says how many:
//
//	{"time":"...","kind":"dropped","dropped":12}
//
// With a limit (NewEventWriterLimit), about that many bytes are written
// at most: the event that would pass it, and every one after, is dropped
// and counted, and one last line says so (it may pass the limit by its
// own length), so that a program refused in a loop cannot fill the disk:
//
//	{"time":"...","kind":"limit","limit":67108864}
//
// Each line is an Event as encoding/json writes it: names are JSON
// strings, with newlines, quotes and control characters escaped. JSON
// strings are Unicode, so bytes of a name that are not UTF-8 are written
// as U+FFFD.
type EventWriter struct {
	w    *bufio.Writer
	ch   chan any      // Events, and Add's values
	stop chan struct{} // closed by Close: write what is buffered, then end
	done chan struct{} // closed when the goroutine has ended

	mu     sync.RWMutex // held for writing only to set closed
	closed bool

	dropped atomic.Uint64 // since the last "dropped" line
	total   atomic.Uint64 // since the start
	err     error         // the first write error; the goroutine's until done

	limit   int64 // bytes that may be written; 0: no limit
	written int64 // the goroutine's
	full    bool  // the limit was reached (and said)
}

// limitLine is the line that says the limit was reached.
type limitLine struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"` // "limit"
	Limit int64     `json:"limit"`
}

// droppedLine is the line that says events were dropped.
type droppedLine struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // "dropped"
	Dropped uint64    `json:"dropped"`
}

// NewEventWriter returns an EventWriter writing to w, holding up to
// buffer events while w is slow (DefaultEventBuffer if buffer <= 0). It
// starts a goroutine, which Close ends. w is written by that goroutine
// only, a line or more at a time, and is not closed by the EventWriter.
func NewEventWriter(w io.Writer, buffer int) *EventWriter {
	return NewEventWriterLimit(w, buffer, 0)
}

// NewEventWriterLimit is NewEventWriter that writes limit bytes at most
// (see EventWriter); limit <= 0 is none.
func NewEventWriterLimit(w io.Writer, buffer int, limit int64) *EventWriter {
	if buffer <= 0 {
		buffer = DefaultEventBuffer
	}
	ew := &EventWriter{
		limit: max(limit, 0),
		w:     bufio.NewWriter(w),
		ch:    make(chan any, buffer),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go ew.run()
	return ew
}

// Event queues e to be written, without waiting: if the buffer is full,
// or the EventWriter is closed, e is dropped and counted. A zero e.Time is
// set to now.
func (ew *EventWriter) Event(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	ew.Add(e)
}

// Add queues v, another kind of event (a network grant's, say: a
// netgrant.Event), to be written as Event's are: v is written as
// encoding/json writes it, and should be an object with a "time" and a
// "kind", as Event is.
func (ew *EventWriter) Add(v any) {
	ew.mu.RLock()
	defer ew.mu.RUnlock()
	if ew.closed {
		ew.drop()
		return
	}
	select {
	case ew.ch <- v:
	default:
		ew.drop()
	}
}

func (ew *EventWriter) drop() {
	ew.dropped.Add(1)
	ew.total.Add(1)
}

// Dropped returns how many events were dropped since the EventWriter was
// made: for a full buffer, after Close, or after the writer failed.
func (ew *EventWriter) Dropped() uint64 { return ew.total.Load() }

// Close stops taking events, writes those still buffered (and a line for
// any dropped) and returns the first error writing them met. If ctx ends
// first, Close returns ctx's error, and what is left is abandoned: the
// goroutine ends once the write it is in returns.
func (ew *EventWriter) Close(ctx context.Context) error {
	ew.mu.Lock()
	if !ew.closed {
		ew.closed = true
		close(ew.stop)
	}
	ew.mu.Unlock()
	select {
	case <-ew.done:
		return ew.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run writes events until Close; it is the only user of ew.w and ew.err.
func (ew *EventWriter) run() {
	defer close(ew.done)
	for {
		select {
		case e := <-ew.ch:
			ew.event(e)
			if len(ew.ch) > 0 {
				continue // flush once the burst is written
			}
		case <-ew.stop:
			// No Event sends any more (closed is set under the lock):
			// what is in the channel is all there is.
			for len(ew.ch) > 0 {
				ew.event(<-ew.ch)
			}
			ew.flushDropped()
			ew.flush()
			return
		}
		ew.flushDropped()
		ew.flush()
	}
}

// event writes one event's line (into the buffer); after a write error,
// events are counted as dropped.
func (ew *EventWriter) event(e any) {
	if ew.err != nil || ew.full {
		ew.total.Add(1)
		return
	}
	ew.line(e)
}

// flushDropped writes the line that says how many events were dropped
// since the last one, if any were.
func (ew *EventWriter) flushDropped() {
	if n := ew.dropped.Swap(0); n > 0 {
		ew.line(droppedLine{Time: time.Now(), Kind: "dropped", Dropped: n})
	}
}

// line writes v as one JSON line. After a write error, or once the
// limit is reached, nothing more is written.
func (ew *EventWriter) line(v any) {
	if ew.err != nil || ew.full {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		ew.err = fmt.Errorf("served: encoding an event: %w", err)
		return
	}
	b = append(b, '\n')
	if ew.limit > 0 && ew.written+int64(len(b)) > ew.limit {
		// This line would pass the limit: it is dropped, and the last
		// line says why.
		ew.full = true
		ew.total.Add(1)
		b, _ = json.Marshal(limitLine{Time: time.Now(), Kind: "limit", Limit: ew.limit})
		b = append(b, '\n')
	}
	ew.written += int64(len(b))
	if _, err := ew.w.Write(b); err != nil {
		ew.err = fmt.Errorf("served: writing events: %w", err)
	}
}

func (ew *EventWriter) flush() {
	if ew.err != nil {
		return
	}
	if err := ew.w.Flush(); err != nil {
		ew.err = fmt.Errorf("served: writing events: %w", err)
	}
}
