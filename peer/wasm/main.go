//go:build js && wasm

// Command wasm is the CoopStreaming peer in a browser tab: the engine
// (peerproto/engine, unchanged: partners, buffer maps, push and pull, QoS,
// manifest verification) driven through syscall/js, and its played
// segments converted to fragmented MP4 (peer/fmp4) for the page's
// MediaSource. Build: GOOS=js GOARCH=wasm go build -o peer.wasm ./peer/wasm
// (make wasm); webassets/watch serves it with its page.
//
// The page's JavaScript owns everything Go cannot reach: the signalling
// WebSocket, RTCPeerConnections and their data channels, MediaSource.
// The driver owns the engine. Interface (docs/webrtc.md has the wire side):
//
//	globalThis.coopPeer.start(opts)   opts: {stream, token, peer (16 hex), streamKey (hex, optional),
//	                                  playLayers (0: all), uploadCap (bytes/s), playoutDelayMs (0: the
//	                                  engine's default), host}
//	coopPeer.open(conn, peer, outbound) → handle   a channel that opened; conn has send(Uint8Array),
//	                                  close() and bufferedAmount; peer: 16 hex, "server" or "" (inbound)
//	coopPeer.message(handle, Uint8Array) / coopPeer.closed(handle) / coopPeer.drained(handle)
//	coopPeer.dialFailed(peer)         a dial asked by host.dial did not open
//	coopPeer.stats() → JSON string
//	coopPeer.stop()
//
// host (from the page): dial(peer) (peer: "server" or 16 hex digits),
// init(mime, Uint8Array), fragment(seq, Uint8Array, layers), missed(seq),
// log(level, text).
//
// Every entry point runs on the page's event loop; the driver queues the
// calls and runs them one at a time, so the engine never re-enters itself
// (a host call that calls back is handled after it returns).
package main

import (
	"syscall/js"
)

func main() {
	d := newDriver()
	api := js.Global().Get("Object").New()
	export := func(name string, f func(args []js.Value) any) {
		api.Set(name, js.FuncOf(func(_ js.Value, args []js.Value) any { return f(args) }))
	}
	export("start", d.jsStart)
	export("open", d.jsOpen)
	export("message", d.jsMessage)
	export("closed", d.jsClosed)
	export("drained", d.jsDrained)
	export("dialFailed", d.jsDialFailed)
	export("stats", d.jsStats)
	export("stop", d.jsStop)
	js.Global().Set("coopPeer", api)
	if ready := js.Global().Get("coopPeerReady"); ready.Type() == js.TypeFunction {
		ready.Invoke(api)
	}
	<-d.done // the Go program must stay alive for the callbacks
}
