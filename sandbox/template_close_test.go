package sandbox

import (
	"context"
	"testing"
	"time"
)

// TestTemplateCloseKillsSandboxes closes a template while a program runs
// in one of its sandboxes: the program dies (the sandboxes live in the
// template's pid namespace, and their inits in its memory), and closing the
// sandbox afterwards neither hangs nor fails on the template gone.
func TestTemplateCloseKillsSandboxes(t *testing.T) {
	ctx := context.Background()
	tmpl, err := NewTemplate(ctx, baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := tmpl.NewSandbox(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Exec(ctx, "/bin/sleep", []string{"sleep", "100"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	tmpl.Close()
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := p.Wait(c)
	if err != nil || st.Success() {
		t.Errorf("the program after its template closed: %v %v, want it killed", st, err)
	}
	done := make(chan struct{})
	go func() { sb.Close(); p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("sandbox Close hangs after its template closed")
	}
}
