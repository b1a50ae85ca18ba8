package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// noticeLogger returns the logger of caplin run's notices (what best
// effort dropped, say): plain lines on w, like its errors, each the
// command's name, "warning: " for a warning, the message, and the values
// of its attributes after colons ("caplin run: warning: sandbox: best
// effort: dropped: Landlock TCP rules"), not logfmt. Debug records are
// left out.
func noticeLogger(w io.Writer, name string) *slog.Logger {
	return slog.New(&noticeHandler{w: w, name: name, mu: new(sync.Mutex)})
}

// noticeHandler is noticeLogger's handler.
type noticeHandler struct {
	w     io.Writer
	name  string
	mu    *sync.Mutex // one line at a time
	attrs []slog.Attr
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
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *noticeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

// WithGroup returns h: a notice's groups add nothing to its line.
func (h *noticeHandler) WithGroup(string) slog.Handler { return h }
