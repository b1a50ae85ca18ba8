module github.com/caplin-dev/caplin/bench/grpc

go 1.26.8

require (
	github.com/caplin-dev/caplin v0.0.0
	github.com/fxamacker/cbor/v2 v2.10.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/x448/float16 v0.8.4 // indirect
	golang.org/x/net v0.63.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// The benchmarks measure the caplin of this checkout.
replace github.com/caplin-dev/caplin => ../..
