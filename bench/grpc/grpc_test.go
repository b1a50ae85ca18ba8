// Package grpcbench compares caplin's calls with the same call through
// gRPC over a Unix socket. It is a module of its own so that caplin's
// go.mod stays free of gRPC; bench/rpc.sh runs it.
package grpcbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/caplin-dev/caplin/bench/rpcbench"
	"github.com/fxamacker/cbor/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestMain(m *testing.M) {
	rpcbench.Peer()
	grpcPeer()
	os.Exit(m.Run())
}

// envPeer makes a re-executed test binary the gRPC server of
// BenchmarkGRPCProc, serving the listener on its fd 3 until its stdin
// closes.
const envPeer = "CAPLIN_GRPCBENCH_PEER"

func grpcPeer() {
	if os.Getenv(envPeer) == "" {
		return
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcbench:", err)
		os.Exit(1)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(cborCodec{}))
	srv.RegisterService(&echoDesc, server{})
	go srv.Serve(ln)
	io.Copy(io.Discard, os.Stdin)
	srv.Stop()
	os.Exit(0)
}

// cborCodec is the gRPC codec for the benchmark: the call is rpcbench's
// plain Go structs, encoded with the CBOR library caplin itself uses.
// A codec rather than protobuf because generated protobuf code needs protoc
// (or hand-made descriptors) to be checked in and kept in step, and because
// with the same encoder on both sides the comparison is of the transports
// and the call machinery alone, not of CBOR against protobuf.
type cborCodec struct{}

func (cborCodec) Marshal(v any) ([]byte, error)      { return cbor.Marshal(v) }
func (cborCodec) Unmarshal(data []byte, v any) error { return cbor.Unmarshal(data, v) }
func (cborCodec) Name() string                       { return "cbor" }

// echoServer is the service; gRPC wants a value of HandlerType.
type echoServer interface{ echo() }
type server struct{}

func (server) echo() {}

const echoMethod = "/caplin.bench.Echo/Echo"

// echoDesc is what protoc would generate for
//
//	service Echo { rpc Echo(Args) returns (Result); }
var echoDesc = grpc.ServiceDesc{
	ServiceName: "caplin.bench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			var a rpcbench.Args
			if err := dec(&a); err != nil {
				return nil, err
			}
			r := rpcbench.Echo(a)
			return &r, nil
		},
	}},
}

// grpcPair serves the echo service on a Unix socket with gRPC and returns
// a connection to it.
func grpcPair(b *testing.B) *grpc.ClientConn {
	path := filepath.Join(b.TempDir(), "grpc.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(cborCodec{}))
	srv.RegisterService(&echoDesc, server{})
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
	return grpcDial(b, path)
}

// grpcProcPair is grpcPair with the server in another process: this test
// binary, re-executed (see grpcPeer).
func grpcProcPair(b *testing.B) *grpc.ClientConn {
	path := filepath.Join(b.TempDir(), "grpc.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the peer serves the path
	lf, err := ul.File()
	ul.Close()
	if err != nil {
		b.Fatal(err)
	}
	rpcbench.StartProc(b, envPeer+"=1", lf)
	return grpcDial(b, path)
}

func grpcDial(b *testing.B, path string) *grpc.ClientConn {
	conn, err := grpc.NewClient("unix:"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(cborCodec{})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func grpcEcho(conn *grpc.ClientConn) error {
	var r rpcbench.Result
	return conn.Invoke(context.Background(), echoMethod, &rpcbench.Args{Text: rpcbench.Text, N: 1}, &r)
}

// BenchmarkGRPC is rpcbench's echo call through gRPC over a Unix socket,
// server and client in this process, as in BenchmarkCall.
func BenchmarkGRPC(b *testing.B) {
	conn := grpcPair(b)
	rpcbench.Loop(b, func() error { return grpcEcho(conn) })
}

// BenchmarkGRPCProc is BenchmarkGRPC with the server in another process,
// as in BenchmarkCallProc.
func BenchmarkGRPCProc(b *testing.B) {
	conn := grpcProcPair(b)
	rpcbench.Loop(b, func() error { return grpcEcho(conn) })
}

// BenchmarkGRPCParallel is BenchmarkGRPC from 8 goroutines at once.
func BenchmarkGRPCParallel(b *testing.B) {
	conn := grpcPair(b)
	rpcbench.Parallel(b, rpcbench.Callers, func() error { return grpcEcho(conn) })
}

// caplin's call and the ping-pong floor, in the same run.

func BenchmarkPingPong(b *testing.B)     { rpcbench.PingPong(b) }
func BenchmarkCall(b *testing.B)         { rpcbench.Call(b) }
func BenchmarkCallProc(b *testing.B)     { rpcbench.CallProc(b) }
func BenchmarkCallParallel(b *testing.B) { rpcbench.CallParallel(b) }
