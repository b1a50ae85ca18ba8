package rpc_test

import (
	"testing"

	"github.com/caplin-dev/caplin/bench/rpcbench"
)

// The benchmarks' bodies live in bench/rpcbench, shared with the gRPC
// comparison in bench/grpc; bench/rpc.sh runs both and prints the ratios.
// Every call is an echo of a short string and an int. The peer (server or
// echo) runs in goroutines of this process, or, in the Proc benchmarks,
// in another process (this test binary, re-executed: see TestMain).

// BenchmarkPingPong is the floor for a call: a bare SOCK_SEQPACKET round
// trip of the echo call's message sizes, blocking system calls both sides.
func BenchmarkPingPong(b *testing.B) { rpcbench.PingPong(b) }

// BenchmarkPingPongNet is BenchmarkPingPong through net.UnixConn, the
// runtime's network poller, which is the transport Call uses.
func BenchmarkPingPongNet(b *testing.B) { rpcbench.PingPongNet(b) }

// BenchmarkPingPongFD is the floor for CallFD: its sizes, one fd each way.
func BenchmarkPingPongFD(b *testing.B) { rpcbench.PingPongFD(b) }

func BenchmarkPingPongProc(b *testing.B)    { rpcbench.PingPongProc(b) }
func BenchmarkPingPongNetProc(b *testing.B) { rpcbench.PingPongNetProc(b) }

func BenchmarkCall(b *testing.B) { rpcbench.Call(b) }

// BenchmarkCallFD sends a pipe's end and gets it back.
func BenchmarkCallFD(b *testing.B) { rpcbench.CallFD(b) }

func BenchmarkCallProc(b *testing.B) { rpcbench.CallProc(b) }

// BenchmarkCallParallel calls from 8 goroutines at once on one object and
// reports calls/s.
func BenchmarkCallParallel(b *testing.B) { rpcbench.CallParallel(b) }
