#!/bin/sh
# Generate Go stubs from proto/ and build examples/go into examples/go/build/execgw-go.
#
# Needs go, protoc, protoc-gen-go and protoc-gen-go-grpc on PATH (README.md says how to
# install them). With Debian's golang-google-grpc-dev & co. it builds offline, in GOPATH
# mode against /usr/share/gocode; otherwise it builds as a module (go mod tidy fetches
# the libraries). EXECGW_GO_MODE=gopath|module forces one.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
module=execgw-example
package="$module/gen/execgwv1"
out=${EXECGW_GO_OUT:-"$here/build"}

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found; see examples/go/README.md" >&2; exit 2; }
done

# Each file's Go import path is given with an M mapping, which overrides the files'
# go_package, so the stubs land in this example's own module.
maps=""
for file in orders market_data gateway; do
  maps="$maps,Mexecgw/v1/$file.proto=$package;execgwv1"
done
generate() { # into $1: $1/gen/execgwv1/*.go
  rm -rf "$1/gen"
  protoc -I "$root/proto" \
    --go_out="$1" --go_opt="module=$module$maps" \
    --go-grpc_out="$1" --go-grpc_opt="module=$module$maps" \
    "$root"/proto/execgw/v1/*.proto
}

mode=${EXECGW_GO_MODE:-}
if [ -z "$mode" ]; then
  if [ -d /usr/share/gocode/src/google.golang.org/grpc ]; then mode=gopath; else mode=module; fi
fi
mkdir -p "$out"
case "$mode" in
  gopath)
    # A throwaway GOPATH holding this program as src/execgw-example, stubs and all; the
    # libraries come from Debian's /usr/share/gocode. Nothing is downloaded, and nothing
    # but $out is written.
    gopath=$(mktemp -d)
    trap 'rm -rf "$gopath"' EXIT
    mkdir -p "$gopath/src/$module"
    cp "$here/main.go" "$gopath/src/$module/"
    generate "$gopath/src/$module"
    (cd "$gopath/src/$module" &&
      export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= &&
      go vet . && go build -o "$out/execgw-go" .)
    ;;
  module)
    generate "$here"
    (cd "$here" && go mod tidy && go vet . && go build -o "$out/execgw-go" .)
    ;;
  *)
    echo "build.sh: EXECGW_GO_MODE must be gopath or module, not $mode" >&2
    exit 2
    ;;
esac
echo "built $out/execgw-go"
