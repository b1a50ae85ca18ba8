package supervisor

import (
	"context"
	"sync"
)

// A scrollback keeps the last bytes a job wrote, up to a bound, each
// numbered by its offset in everything the job ever wrote: a reader
// resumes where it stopped, and learns how much it missed when it fell
// further behind than the bound. Writing never waits for a reader: the
// oldest bytes are dropped instead. Its buffer grows as output comes, up
// to the bound, so that an idle job costs little.
type scrollback struct {
	mu   sync.Mutex
	buf  []byte // a ring: the byte at offset o is buf[o%len(buf)]
	max  int    // the bound on len(buf)
	head int64  // offset of the oldest byte kept
	tail int64  // offset after the newest byte
	// wake is closed, and replaced, when bytes come or the scrollback
	// ends: readers that found nothing new wait on it.
	wake  chan struct{}
	ended bool
}

func newScrollback(max int) *scrollback {
	return &scrollback{max: max, wake: make(chan struct{})}
}

// write appends p, dropping the oldest bytes beyond the bound, and
// returns p's offset.
func (s *scrollback) write(p []byte) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := s.tail
	if len(p) == 0 || s.ended {
		return start
	}
	s.grow(int(s.tail-s.head) + len(p))
	if len(p) > len(s.buf) {
		// Only the last len(buf) bytes can be kept.
		s.tail += int64(len(p) - len(s.buf))
		p = p[len(p)-len(s.buf):]
	}
	n := len(s.buf)
	at := int(s.tail % int64(n))
	c := copy(s.buf[at:], p)
	copy(s.buf, p[c:])
	s.tail += int64(len(p))
	if s.tail-s.head > int64(n) {
		s.head = s.tail - int64(n)
	}
	close(s.wake)
	s.wake = make(chan struct{})
	return start
}

// grow makes the ring large enough for want bytes, up to the bound,
// keeping what it holds at the positions their offsets give.
func (s *scrollback) grow(want int) {
	if want <= len(s.buf) || len(s.buf) == s.max {
		return
	}
	size := max(len(s.buf)*2, 4096)
	for size < want {
		size *= 2
	}
	size = min(size, s.max)
	buf := make([]byte, size)
	for o := s.head; o < s.tail; {
		from := int(o % int64(len(s.buf)))
		to := int(o % int64(size))
		n := min(len(s.buf)-from, size-to, int(s.tail-o))
		copy(buf[to:to+n], s.buf[from:from+n])
		o += int64(n)
	}
	s.buf = buf
}

// end marks the end of the output: readers that have read everything get
// their last read.
func (s *scrollback) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.ended = true
		close(s.wake)
	}
}

// span returns the offsets of the oldest byte kept and after the newest.
func (s *scrollback) span() (head, tail int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head, s.tail
}

// read copies into p the bytes from offset off on, waiting for some while
// there are none and the output goes on. It returns how many it copied,
// the offset to read from next, and how many bytes before them were
// dropped before the reader got to them (off was older than the oldest
// kept). At the end of the output it returns 0 bytes and ok false; when
// ctx ends, ctx's error.
func (s *scrollback) read(ctx context.Context, off int64, p []byte) (n int, next, lost int64, ok bool, err error) {
	for {
		s.mu.Lock()
		if off < s.head {
			lost, off = s.head-off, s.head
		}
		if off > s.tail {
			off = s.tail
		}
		if off < s.tail {
			size := int64(len(s.buf))
			for n < len(p) && off < s.tail {
				at := int(off % size)
				c := copy(p[n:], s.buf[at:min(len(s.buf), at+int(s.tail-off))])
				n += c
				off += int64(c)
			}
			s.mu.Unlock()
			return n, off, lost, true, nil
		}
		if s.ended {
			s.mu.Unlock()
			return 0, off, lost, false, nil
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, off, lost, true, ctx.Err()
		}
	}
}

// readNow is read that never waits: with no bytes from off on it returns
// 0 bytes, and ok false at the end of the output.
func (s *scrollback) readNow(off int64, p []byte) (n int, next, lost int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < s.head {
		lost, off = s.head-off, s.head
	}
	if off > s.tail {
		off = s.tail
	}
	size := int64(len(s.buf))
	for n < len(p) && off < s.tail {
		at := int(off % size)
		c := copy(p[n:], s.buf[at:min(len(s.buf), at+int(s.tail-off))])
		n += c
		off += int64(c)
	}
	return n, off, lost, n > 0 || !s.ended
}
