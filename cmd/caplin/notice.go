package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"golang.org/x/sys/unix"
)

// noticeLoggerFor returns the logger of the notices of caplin run's sandbox of cmd (what best
// effort dropped, say): plain lines on w, like its errors, each the
// command's name, "warning: " for a warning, the message, and the values
// of its attributes after colons ("caplin run: warning: sandbox: best
// effort: dropped: Landlock TCP rules"), not logfmt. Debug records are
// left out. The mounts its notices name by number are named as cmd's
// command line gave them.
func noticeLoggerFor(w io.Writer, name string, cmd *bwrap.Command) *slog.Logger {
	return slog.New(&noticeHandler{w: w, name: name, mu: new(sync.Mutex), rename: cmd.ExplainText})
}

// noticeHandler is noticeLoggerFor's handler.
type noticeHandler struct {
	w     io.Writer
	name  string
	mu    *sync.Mutex // one line at a time
	attrs []slog.Attr
	// rename, if set, rewrites the line (bwrap.Command.ExplainText).
	rename func(string) string
}

func (h *noticeHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *noticeHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.name)
	b.WriteString(": ")
	if r.Level >= slog.LevelWarn {
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		if v := a.Value.Resolve().String(); v != "" {
			b.WriteString(": ")
			b.WriteString(v)
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	line := b.String()
	if h.rename != nil {
		line = h.rename(line)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, line+"\n")
	return err
}

func (h *noticeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

// WithGroup returns h: a notice's groups add nothing to its line.
func (h *noticeHandler) WithGroup(string) slog.Handler { return h }

// reportOOM says so when the kernel's OOM killer killed a process of sb
// for its memory limit: the program, whose exit status is code, or
// another of its processes.
func reportOOM(m mode, sb *sandbox.Sandbox, spec *sandbox.Spec, code int) {
	n := sb.OOMKills()
	if n == 0 {
		return
	}
	limit := "--max-memory " + formatSize(spec.Limits.Memory)
	switch {
	case code == 128+int(unix.SIGKILL):
		fmt.Fprintf(os.Stderr, "%s: killed: out of memory (%s)\n", m.name, limit)
	case n == 1:
		fmt.Fprintf(os.Stderr, "%s: a process of the sandbox was killed: out of memory (%s)\n", m.name, limit)
	default:
		fmt.Fprintf(os.Stderr, "%s: %d processes of the sandbox were killed: out of memory (%s)\n", m.name, n, limit)
	}
}

// formatSize writes bytes as --max-memory takes them: with the largest of
// G, M and K that divides it, else in bytes.
func formatSize(bytes int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if bytes >= u.size && bytes%u.size == 0 {
			return strconv.FormatInt(bytes/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(bytes, 10)
}
