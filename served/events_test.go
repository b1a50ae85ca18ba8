package served

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// lines splits what an EventWriter wrote into its lines, checking that
// each is one JSON object ended by a newline.
func lines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	if len(out) > 0 && out[len(out)-1] != '\n' {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	var all []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		if err := d.Decode(&m); err != nil || d.More() {
			t.Fatalf("line %d is not one JSON object (%v): %q", len(all)+1, err, sc.Bytes())
		}
		all = append(all, m)
	}
	return all
}

func closeWriter(t *testing.T, ew *EventWriter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ew.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestEventWriterLines: every event is one line that decodes to the same
// Event, whatever its names hold.
func TestEventWriterLines(t *testing.T) {
	names := []string{
		"plain", "new\nline", `quo"te`, `back\slash`, "tab\tand\rreturn", "\x00nul", "ünïcödé",
		"</script>&", strings.Repeat("long", 1000), "\u2028separator",
	}
	var buf bytes.Buffer
	ew := NewEventWriter(&buf, 0)
	at := time.Date(2026, 12, 6, 20, 0, 0, 123456789, time.UTC)
	var want []Event
	for i, n := range names {
		e := Event{Time: at, Kind: "denied", Mount: "/m/" + n, PID: i + 1, Op: "create", Path: n + "/" + n, Missing: "create"}
		want = append(want, e)
		ew.Event(e)
	}
	closeWriter(t, ew)
	out := buf.Bytes()
	got := lines(t, out)
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for i := 0; sc.Scan(); i++ {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if !e.Time.Equal(want[i].Time) {
			t.Errorf("line %d: time %v, want %v", i+1, e.Time, want[i].Time)
		}
		e.Time = want[i].Time
		if e != want[i] {
			t.Errorf("line %d decodes to %+v, want %+v", i+1, e, want[i])
		}
	}
	if ew.Dropped() != 0 {
		t.Errorf("Dropped = %d, want 0", ew.Dropped())
	}

	// A zero time is the time of the call; bytes that are not UTF-8 are
	// U+FFFD, and the line is still JSON.
	buf.Reset()
	ew = NewEventWriter(&buf, 0)
	before := time.Now()
	ew.Event(Event{Kind: "denied", Path: "bad\xff\xfename"})
	closeWriter(t, ew)
	var e Event
	if err := json.Unmarshal(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), &e); err != nil {
		t.Fatalf("%v: %q", err, buf.Bytes())
	}
	if e.Time.Before(before.Add(-time.Second)) || e.Time.After(time.Now()) {
		t.Errorf("time %v, want about %v", e.Time, before)
	}
	if e.Path != "bad\uFFFD\uFFFDname" {
		t.Errorf("path %q", e.Path)
	}
}

// TestEventWriterConcurrent sends events from many goroutines (run it
// with -race): with room for them all, every one is written once, whole,
// on a line of its own.
func TestEventWriterConcurrent(t *testing.T) {
	const goroutines, each = 8, 500
	var buf testenv.LogBuffer
	ew := NewEventWriter(&buf, goroutines*each)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				ew.Event(Event{Kind: "denied", PID: g, Op: "open", Path: fmt.Sprintf("g%d/\n%d\"", g, i)})
			}
		})
	}
	wg.Wait()
	closeWriter(t, ew)
	got := lines(t, []byte(buf.String()))
	if len(got) != goroutines*each {
		t.Fatalf("%d lines, want %d", len(got), goroutines*each)
	}
	seen := map[string]bool{}
	for _, m := range got {
		p, _ := m["path"].(string)
		if seen[p] {
			t.Fatalf("event %q written twice", p)
		}
		seen[p] = true
	}
	if ew.Dropped() != 0 {
		t.Errorf("Dropped = %d, want 0", ew.Dropped())
	}
}

// gate is a writer whose first Write blocks until it is opened.
type gate struct {
	testenv.LogBuffer
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
}

func (g *gate) Write(p []byte) (int, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.open
	})
	return g.LogBuffer.Write(p)
}

// TestEventWriterDrops: a writer that does not write makes Event drop,
// never wait; the drops are counted, and a line says how many.
func TestEventWriterDrops(t *testing.T) {
	const buffer, extra = 4, 10
	g := &gate{entered: make(chan struct{}), open: make(chan struct{})}
	ew := NewEventWriter(g, buffer)
	ew.Event(Event{Kind: "denied", Path: "first"})
	<-g.entered // the goroutine is stuck writing "first"

	start := time.Now()
	for i := range buffer + extra {
		ew.Event(Event{Kind: "denied", Path: fmt.Sprint(i)})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Event waited for the writer: %v for %d events", d, buffer+extra)
	}
	if got := ew.Dropped(); got != extra {
		t.Errorf("Dropped = %d, want %d", got, extra)
	}
	close(g.open)
	closeWriter(t, ew)
	got := lines(t, []byte(g.String()))
	if len(got) != 1+buffer+1 {
		t.Fatalf("%d lines, want %d: %q", len(got), 1+buffer+1, []byte(g.String()))
	}
	if got[0]["path"] != "first" || got[buffer]["path"] != fmt.Sprint(buffer-1) {
		t.Errorf("events out of order: %v", got)
	}
	last := got[len(got)-1]
	if last["kind"] != "dropped" || last["dropped"] != float64(extra) {
		t.Errorf("last line %v, want kind dropped, dropped %d", last, extra)
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(last["time"])); err != nil {
		t.Errorf("the dropped line's time: %v", err)
	}

	// After Close, events are dropped and counted.
	ew.Event(Event{Kind: "bind"})
	if got := ew.Dropped(); got != extra+1 {
		t.Errorf("Dropped after Close = %d, want %d", got, extra+1)
	}
}

// TestEventWriterStuck: Close gives up on a writer that never returns
// when its context ends.
func TestEventWriterStuck(t *testing.T) {
	g := &gate{entered: make(chan struct{}), open: make(chan struct{})}
	defer close(g.open)
	ew := NewEventWriter(g, 0)
	ew.Event(Event{Kind: "denied"})
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ew.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want the context's deadline", err)
	}
}

type failing struct{ n atomic.Int32 }

func (f *failing) Write(p []byte) (int, error) {
	f.n.Add(1)
	return 0, &pathlessErr{syscall.ENOSPC}
}

type pathlessErr struct{ errno syscall.Errno }

func (e *pathlessErr) Error() string { return "write: " + e.errno.Error() }
func (e *pathlessErr) Unwrap() error { return e.errno }

// TestEventWriterError: a write error is Close's, with its errno; the
// events after it are counted as dropped, and not written.
func TestEventWriterError(t *testing.T) {
	f := &failing{}
	ew := NewEventWriter(f, 0)
	ew.Event(Event{Kind: "denied"})
	// Wait for the failed write, then send more.
	for deadline := time.Now().Add(10 * time.Second); f.n.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the event was not taken")
		}
	}
	ew.Event(Event{Kind: "denied"})
	err := ew.Close(context.Background())
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close = %v, want ENOSPC", err)
	}
	if n := f.n.Load(); n != 1 {
		t.Errorf("%d writes after the failing one, want none", n-1)
	}
	if ew.Dropped() != 1 {
		t.Errorf("Dropped = %d, want 1", ew.Dropped())
	}
}

// TestEventWriterLimit: past its limit an EventWriter writes one last
// line that says so, and nothing more; what it did not write counts as
// dropped.
func TestEventWriterLimit(t *testing.T) {
	var buf bytes.Buffer
	ew := NewEventWriterLimit(&buf, 10000, 1000)
	for i := 0; i < 100; i++ {
		ew.Event(Event{Kind: "denied", Mount: "/m", Op: "create", Path: "some/file/name", Missing: "create"})
	}
	closeWriter(t, ew)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if buf.Len() > 1000+100 {
		t.Errorf("%d bytes written, limit 1000", buf.Len())
	}
	last := lines[len(lines)-1]
	if !strings.Contains(last, `"kind":"limit","limit":1000`) {
		t.Errorf("the last line is %q", last)
	}
	if got, want := ew.Dropped(), uint64(100-(len(lines)-1)); got != want {
		t.Errorf("Dropped() = %d, want %d (%d lines written)", got, want, len(lines))
	}
}
