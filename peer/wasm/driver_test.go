//go:build js && wasm

package main

import (
	"encoding/binary"
	"syscall/js"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peer/wasm/frames"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Run with make test-wasm (GOOS=js GOARCH=wasm, under Node).

// fakeChan is a channel object as the page hands it in: it records what
// the driver sends and whether it closed it.
type fakeChan struct {
	obj    js.Value
	sent   []byte
	closed bool
}

func newFakeChan(t *testing.T) *fakeChan {
	f := &fakeChan{obj: js.Global().Get("Object").New()}
	send := js.FuncOf(func(_ js.Value, args []js.Value) any {
		b := make([]byte, args[0].Get("byteLength").Int())
		js.CopyBytesToGo(b, args[0])
		require.LessOrEqual(t, len(b), frames.PieceSize, "the driver sends pieces of at most 16 KiB")
		f.sent = append(f.sent, b...)
		return true
	})
	cl := js.FuncOf(func(js.Value, []js.Value) any { f.closed = true; return nil })
	f.obj.Set("send", send)
	f.obj.Set("close", cl)
	f.obj.Set("bufferedAmount", 0)
	return f // its funcs stay alive: the driver closes channels when it stops
}

// received decodes every frame the driver sent on the channel.
func (f *fakeChan) received(t *testing.T) []wire.Message {
	var s frames.Splitter
	var out []wire.Message
	b := f.sent
	for len(b) > 0 {
		n := min(len(b), frames.MaxMessage)
		require.NoError(t, s.Push(b[:n]))
		b = b[n:]
		for {
			m, ok, err := s.Next()
			require.NoError(t, err)
			if !ok {
				break
			}
			out = append(out, m)
		}
	}
	return out
}

// startDriver starts a driver for stream live/test with a host that
// records the peers it is asked to dial.
func startDriver(t *testing.T) (*driver, *[]string) {
	t.Helper()
	d := newDriver()
	dials := &[]string{}
	host := js.Global().Get("Object").New()
	dial := js.FuncOf(func(_ js.Value, args []js.Value) any { *dials = append(*dials, args[0].String()); return nil })
	nop := js.FuncOf(func(js.Value, []js.Value) any { return nil })
	host.Set("dial", dial)
	for _, name := range []string{"init", "fragment", "missed", "log"} {
		host.Set(name, nop)
	}
	opts := js.Global().Get("Object").New()
	opts.Set("stream", "live/test")
	opts.Set("peer", "00000000000000aa")
	opts.Set("host", host)
	require.Equal(t, "00000000000000aa", d.jsStart([]js.Value{opts}))
	t.Cleanup(func() {
		d.jsStop(nil)
		dial.Release()
		nop.Release()
	})
	return d, dials
}

func (d *driver) open(c *fakeChan, peer string, outbound bool) int {
	return d.jsOpen([]js.Value{c.obj, js.ValueOf(peer), js.ValueOf(outbound)}).(int)
}

func (d *driver) push(h int, b []byte) {
	a := js.Global().Get("Uint8Array").New(len(b))
	js.CopyBytesToJS(a, b)
	d.jsMessage([]js.Value{js.ValueOf(h), a})
}

func peerHello(id wire.PeerID, role wire.Role, stream string) *wire.Hello {
	return &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: role, Stream: stream, Peer: id, ListenAddr: "rtc:"}
}

// TestDriverAsksThePageForTheServer: once started, the driver asks the
// page to dial the server partner; a server channel answered with a
// Reject is closed and the dial retried later, not at once.
func TestDriverAsksThePageForTheServer(t *testing.T) {
	d, dials := startDriver(t)
	require.Equal(t, []string{serverName}, *dials)
	c := newFakeChan(t)
	h := d.open(c, serverName, true)
	msgs := c.received(t)
	require.Len(t, msgs, 1)
	hello, ok := msgs[0].(*wire.Hello)
	require.True(t, ok, "the dialler speaks first: %T", msgs[0])
	require.Equal(t, "rtc:", hello.ListenAddr)
	require.Equal(t, "live/test", hello.Stream)
	d.push(h, wire.Marshal(&wire.Reject{Reason: wire.RejectAuth}))
	require.True(t, c.closed)
	d.do(d.tick)
	require.Len(t, *dials, 1, "no immediate re-dial after a refusal (back-off)")
	require.False(t, d.serverNextDial.IsZero())
}

// TestDriverClosesOnlyTheBadConnection: an oversized message, a frame
// declaring more than its type allows, and a peer posing as the server
// each close that connection alone; a proper peer is admitted beside
// them and answered with the driver's Hello.
func TestDriverClosesOnlyTheBadConnection(t *testing.T) {
	d, _ := startDriver(t)
	good := newFakeChan(t)
	gh := d.open(good, "", false)

	big := newFakeChan(t)
	d.push(d.open(big, "", false), make([]byte, frames.MaxMessage+1))
	require.True(t, big.closed, "a message over 64 KiB")

	liar := newFakeChan(t)
	hdr := binary.BigEndian.AppendUint32(nil, 1<<20)
	d.push(d.open(liar, "", false), append(hdr, byte(wire.TypePing)))
	require.True(t, liar.closed, "a Ping declaring 1 MiB")

	first := newFakeChan(t)
	d.push(d.open(first, "", false), wire.Marshal(&wire.Ping{Nonce: 1}))
	require.True(t, first.closed, "a first frame that is not a Hello")

	fake := newFakeChan(t)
	d.push(d.open(fake, "", false), wire.Marshal(peerHello(7, wire.RoleServer, "live/test")))
	require.True(t, fake.closed, "a server on an inbound peer connection")

	other := newFakeChan(t)
	d.push(d.open(other, "", false), wire.Marshal(peerHello(8, wire.RolePeer, "live/other")))
	require.True(t, other.closed, "another stream")
	require.IsType(t, &wire.Reject{}, other.received(t)[0], "refused with a Reject")

	// Cut into tiny pieces: boundaries mean nothing.
	hello := wire.Marshal(peerHello(9, wire.RolePeer, "live/test"))
	for i := 0; i < len(hello); i += 3 {
		d.push(gh, hello[i:min(i+3, len(hello))])
	}
	require.False(t, good.closed)
	var types []string
	for _, m := range good.received(t) {
		types = append(types, m.Type().String())
	}
	require.NotEmpty(t, types)
	require.IsType(t, &wire.Hello{}, good.received(t)[0], "answered with our Hello: %v", types)
	require.Len(t, d.byPeer, 1)
	require.NotNil(t, d.byPeer[9])
	require.Contains(t, d.jsStats(nil).(string), `"partners":1`)
}
