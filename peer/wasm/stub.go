//go:build !(js && wasm)

// Command wasm is the browser peer; it builds only for the browser
// (GOOS=js GOARCH=wasm, make wasm). This stub keeps `go build ./...` and
// `go vet ./...` working on every other platform.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "peer/wasm runs in a browser: build it with GOOS=js GOARCH=wasm (make wasm)")
	os.Exit(2)
}
