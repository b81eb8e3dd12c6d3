module execgw-example

// Debian 12's Go and its packaged libraries build it offline (build.sh); with a newer Go
// and the module proxy, `go mod tidy` picks current versions instead.
go 1.19

require (
	google.golang.org/genproto v0.0.0-20200413115906-b5235f65be36
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
