package rtcnode

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestDecodeAcceptsTheDocumentedMessages(t *testing.T) {
	for _, s := range []string{
		`{"type":"join","stream":"live/KEY","peer":"9f3c01d2a4b5c6d7","token":""}`,
		`{"type":"joined","server":"0000000000000001","iceServers":[{"urls":["stun:stun.example.org:3478"]}]}`,
		`{"type":"offer","to":"0a1b2c3d4e5f6071","session":"5e1d0c2b3a495867","sdp":"v=0"}`,
		`{"type":"offer","to":"server","session":"5e1d0c2b3a495867","sdp":"v=0"}`,
		`{"type":"answer","from":"9f3c01d2a4b5c6d7","session":"5e1d0c2b3a495867","sdp":"v=0"}`,
		`{"type":"candidate","to":"0a1b2c3d4e5f6071","session":"5e1d0c2b3a495867","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}}`,
		`{"type":"candidate","to":"0a1b2c3d4e5f6071","session":"5e1d0c2b3a495867","candidate":null}`,
		`{"type":"bye","to":"0a1b2c3d4e5f6071","session":"5e1d0c2b3a495867","reason":"refused"}`,
		`{"type":"error","code":"unknown-peer","session":"5e1d0c2b3a495867","message":"x"}`,
	} {
		if _, err := Decode([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

func TestDecodeRefusesBadMessages(t *testing.T) {
	for _, s := range []string{
		``, `null`, `[]`, `{}`, `{"type":"hello"}`,
		`{"type":"join","stream":"live/KEY","peer":"0000000000000000"}`, // id 0
		`{"type":"join","stream":"live/KEY","peer":"9F3C01D2A4B5C6D7"}`, // upper case
		`{"type":"join","stream":"","peer":"9f3c01d2a4b5c6d7"}`,
		`{"type":"join","stream":"a","peer":"9f3c01d2a4b5c6d7"} {}`,               // trailing
		`{"type":"offer","to":"0a1b2c3d4e5f6071","session":"5e1d0c2b3a495867"}`,   // no sdp
		`{"type":"offer","to":"nobody","session":"5e1d0c2b3a495867","sdp":"v=0"}`, // bad name
		`{"type":"offer","to":"server","session":"1","sdp":"v=0"}`,                // bad session
		`{"type":"candidate","to":"server","session":"5e1d0c2b3a495867","candidate":{"sdpMid":"0"}}`,
		`{"type":"candidate","to":"server","session":"5e1d0c2b3a495867","candidate":7}`,
		`{"type":"offer","to":"server","session":"5e1d0c2b3a495867","sdp":"` + strings.Repeat("a", maxSDP+1) + `"}`,
	} {
		if _, err := Decode([]byte(s)); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%.80s: %v, want ErrBadMessage", s, err)
		}
	}
	big := []byte(`{"type":"join","stream":"` + strings.Repeat("a", MaxMessageSize) + `"}`)
	if _, err := Decode(big); !errors.Is(err, ErrBadMessage) {
		t.Errorf("oversized: %v", err)
	}
}

// FuzzDecode: Decode never panics, refuses what is over the limit, and
// what it accepts encodes to a message it accepts again, unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"join","stream":"live/KEY","peer":"9f3c01d2a4b5c6d7","token":"t"}`))
	f.Add([]byte(`{"type":"candidate","to":"server","session":"5e1d0c2b3a495867","candidate":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if len(b) > MaxMessageSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		enc := m.Encode()
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		if !bytes.Equal(m2.Encode(), enc) {
			t.Fatalf("not stable: %s vs %s", m2.Encode(), enc)
		}
	})
}
