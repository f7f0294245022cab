#!/usr/bin/env bash
# Builds the browser peer into webassets/watch/dist, where `go build`
# embeds it (webassets/watch.go): peer.wasm.gz (GOOS=js GOARCH=wasm build of
# ./peer/wasm, gzip -9) and wasm_exec.js from the same Go toolchain.
# Run by `make wasm` (and so `make build`), `go generate ./webassets`, and
# the integration tests before they build the binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO="${GO:-go}"
dist=webassets/watch/dist
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOOS=js GOARCH=wasm "$GO" build -trimpath -ldflags="-s -w" -o "$tmp/peer.wasm" ./peer/wasm
gzip -9 -n -c "$tmp/peer.wasm" >"$tmp/peer.wasm.gz"
cp "$("$GO" env GOROOT)/lib/wasm/wasm_exec.js" "$tmp/wasm_exec.js"
# Replace atomically: a concurrent go build sees the old or the new file.
mv -f "$tmp/peer.wasm.gz" "$dist/peer.wasm.gz"
mv -f "$tmp/wasm_exec.js" "$dist/wasm_exec.js"
echo "$dist/peer.wasm.gz: $(stat -c %s "$tmp/peer.wasm") bytes raw, $(stat -c %s "$dist/peer.wasm.gz") gzip"
