package rtcnode

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// pair connects an offerer and an answerer on loopback, the signalling
// carried in memory, and returns both ends' connections.
func pair(t *testing.T, counters *Counters) (*Conn, *Conn) {
	t.Helper()
	o := Options{Loopback: true}
	api := o.API()
	var offerer, answerer *Session
	ready := make(chan struct{})
	// Candidates go to the other side once it exists (Release holds them
	// until the SDP is "sent", i.e. the other session is built).
	toAnswerer := func(c *webrtc.ICECandidateInit) {
		<-ready
		_ = answerer.Candidate(candJSON(c))
	}
	toOfferer := func(c *webrtc.ICECandidateInit) {
		<-ready
		_ = offerer.Candidate(candJSON(c))
	}
	offerer, offer, err := Offer(api, o, "0000000000000001", "b", counters, toAnswerer)
	if err != nil {
		t.Fatal(err)
	}
	answerer, answer, err := Answer(api, o, "0000000000000001", "a", offer, counters, toOfferer)
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	if err := offerer.Answered(answer); err != nil {
		t.Fatal(err)
	}
	offerer.Release()
	answerer.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := answerer.Wait(ctx)
		ch <- res{c, err}
	}()
	a, err := offerer.Wait(ctx)
	if err != nil {
		t.Fatal("offerer:", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal("answerer:", r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

func candJSON(c *webrtc.ICECandidateInit) json.RawMessage {
	if c == nil {
		return json.RawMessage("null")
	}
	return mustJSON(c)
}

// TestConnCarriesTheFrameStream: frames far larger than a data channel
// message (a 1 MiB Data frame) cross in pieces of at most 16 KiB and are
// read back whole, in order, by wire.Reader.
func TestConnCarriesTheFrameStream(t *testing.T) {
	var counters Counters
	a, b := pair(t, &counters)
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	msgs := []wire.Message{
		&wire.Ping{Nonce: 7},
		&wire.Data{Seq: 3, Layer: 0, Payload: payload},
		&wire.Pong{Nonce: 7},
	}
	go func() {
		for _, m := range msgs {
			if _, err := a.Write(wire.Marshal(m)); err != nil {
				t.Error("write:", err)
				return
			}
		}
	}()
	_ = b.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := wire.NewReader(b)
	for i, want := range msgs {
		got, _, err := r.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(wire.Marshal(got), wire.Marshal(want)) {
			t.Fatalf("frame %d differs: %v", i, got.Type())
		}
	}
	if counters.BytesIn.Load() == 0 || counters.BytesOut.Load() < uint64(len(payload)) {
		t.Fatalf("counters in %d out %d", counters.BytesIn.Load(), counters.BytesOut.Load())
	}
}

// TestOversizedMessageClosesThatConnectionOnly: a peer that sends a
// message over 64 KiB (bypassing the 16 KiB pieces) gets its connection
// closed; another connection of the node goes on.
func TestOversizedMessageClosesThatConnectionOnly(t *testing.T) {
	var counters Counters
	a, b := pair(t, &counters)
	c, d := pair(t, &counters)
	big := make([]byte, MaxMessage+1024)
	if _, err := a.raw.Write(big); err != nil {
		t.Fatal("raw write:", err)
	}
	_ = b.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	var err error
	for err == nil {
		_, err = b.Read(buf)
	}
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("read error %v, want ErrMessageTooLarge", err)
	}
	if counters.Oversized.Load() != 1 {
		t.Fatalf("oversized %d", counters.Oversized.Load())
	}
	// The other connection still carries data both ways.
	go func() { _, _ = c.Write([]byte("still here")) }()
	_ = d.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := make([]byte, 10)
	if _, err := io.ReadFull(d, got); err != nil || string(got) != "still here" {
		t.Fatalf("other connection: %q %v", got, err)
	}
}

// TestTextMessageClosesTheConnection: the channel carries binary only.
func TestTextMessageClosesTheConnection(t *testing.T) {
	a, b := pair(t, nil)
	if _, err := a.raw.WriteDataChannel([]byte("hello"), true); err != nil {
		t.Fatal(err)
	}
	_ = b.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := b.Read(make([]byte, 16)); !errors.Is(err, ErrTextMessage) {
		t.Fatalf("read error %v, want ErrTextMessage", err)
	}
}

// TestCloseEndsTheOtherSide: closing one end makes the other's read fail
// (the engine then sees the partner leave).
func TestCloseEndsTheOtherSide(t *testing.T) {
	a, b := pair(t, nil)
	a.Close()
	_ = b.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := b.Read(make([]byte, 16)); err == nil {
		t.Fatal("read after the other side closed succeeded")
	} else if strings.Contains(err.Error(), "deadline") {
		t.Fatalf("read timed out instead of seeing the close: %v", err)
	}
}
