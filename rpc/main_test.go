package rpc_test

import (
	"os"
	"testing"

	"github.com/caplin-dev/caplin/bench/rpcbench"
)

// TestMain lets the test binary serve as the peer process of the
// cross-process benchmarks (rpcbench.Peer) and as the server of
// TestServeOutOfFDs (acceptHelper).
func TestMain(m *testing.M) {
	rpcbench.Peer()
	acceptHelper()
	os.Exit(m.Run())
}
