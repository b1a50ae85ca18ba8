package remote

import (
	"context"
	"os"
	"testing"
)

// TestMain serves as the agent when ssh starts this test binary as one
// (Dial uploads the test binary itself, with the argument "agent").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "agent-from-the-future" {
		// An agent of a protocol this side does not speak.
		os.Stdout.WriteString(`caplin-agent 7 9 {"Version":"v9.0.0"}` + "\n")
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		if err := Serve(context.Background(), os.Stdin, os.Stdout, &ServeOptions{Doctor: func() string { return "test doctor\n" }}); err != nil {
			os.Stderr.WriteString("agent: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Dial keeps the agent's hash in the user's cache: the tests' own.
	cache, err := os.MkdirTemp("", "caplin-remote-cache-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CACHE_HOME", cache)
	code := m.Run()
	os.RemoveAll(cache)
	os.Exit(code)
}
