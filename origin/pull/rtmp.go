package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	rtmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/handshake"
	rtmpmsg "github.com/yutopp/go-rtmp/message"

	"github.com/coopstreaming/coop/origin/flvunits"
	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/rtmpguard"
	"github.com/coopstreaming/coop/segment"
)

// go-rtmp v0.0.7's ClientConn cannot play: a stream it creates has no
// state handler, so the first media message on it panics inside the
// library. pullRTMP therefore drives the protocol itself with the
// library's exported pieces (handshake, ChunkStreamer, message codecs),
// behind the rtmpguard framer that bounds what the upstream may send (the
// same guard as ingest: AMF0 counts and depth, message and chunk sizes).

// playCmd is the body of the "play" command (go-rtmp's NetStreamPlay
// cannot encode).
type playCmd struct{ name string }

func (p *playCmd) FromArgs(...interface{}) error { return errors.New("not decoded") }

func (p *playCmd) ToArgs(rtmpmsg.EncodingType) ([]interface{}, error) {
	return []interface{}{nil, p.name, float64(-1000)}, nil
}

// pullRTMP plays an RTMP upstream until it fails.
func pullRTMP(ctx context.Context, u *url.URL, timeout time.Duration, pub *publisher) (err error) {
	defer func() {
		// go-rtmp panics on some protocol states it does not expect; one
		// upstream must never take the origin down.
		if r := recover(); r != nil {
			err = fmt.Errorf("rtmp: library panic: %v", r)
		}
	}()
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "1935")
	}
	parts := strings.SplitN(strings.Trim(u.Path, "/"), "/", 2)
	app, name := parts[0], ""
	if len(parts) == 2 {
		name = parts[1]
	}
	if u.RawQuery != "" {
		name += "?" + u.RawQuery
	}
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("rtmp connect: %w", err)
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	g := rtmpguard.NewConn(raw, rtmpguard.Limits{}, timeout)
	if err := handshake.HandshakeWithServer(g, g, &handshake.Config{SkipHandshakeVerification: true}); err != nil {
		return fmt.Errorf("rtmp handshake: %w", err)
	}
	// The library's own acknowledgements need the connection type's
	// control writer (nil here: it would panic), so its ack window stays
	// at the default 2^31-1 and the window the upstream asks for is
	// acknowledged below from the bytes counted on the way in.
	in := &countingReader{r: g}
	cs := rtmp.NewChunkStreamer(in, g, nil)
	defer cs.Close()
	var ackWindow, acked uint64
	send := func(streamID uint32, csid int, cmd string, txn int64, body rtmpmsg.AMFConvertible) error {
		buf := new(bytes.Buffer)
		if err := rtmpmsg.EncodeBodyAnyValues(rtmpmsg.NewAMFEncoder(buf, rtmpmsg.EncodingTypeAMF0), body); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return cs.Write(wctx, csid, 0, &rtmp.ChunkMessage{StreamID: streamID, Message: &rtmpmsg.CommandMessage{
			CommandName: cmd, TransactionID: txn, Encoding: rtmpmsg.EncodingTypeAMF0, Body: buf,
		}})
	}
	tcURL := (&url.URL{Scheme: "rtmp", Host: u.Host, Path: "/" + app}).String()
	if err := send(0, 3, "connect", 1, &rtmpmsg.NetConnectionConnect{Command: rtmpmsg.NetConnectionConnectCommand{
		App: app, Type: "nonprivate", FlashVer: "LNX 9,0,124,2", TCURL: tcURL,
	}}); err != nil {
		return fmt.Errorf("rtmp connect command: %w", err)
	}
	// The same conversion as RTMP ingest (flvunits): bad tags are
	// skipped silently here, the upstream is not ours to report.
	conv := &flvunits.Converter{Sink: flvSink{pub: pub}}
	var cmsg rtmp.ChunkMessage
	for {
		select {
		case <-pub.done():
			return errors.New("another publisher took the path over")
		default:
		}
		if ackWindow > 0 && in.n-acked >= ackWindow/2 {
			wctx, cancel := context.WithTimeout(ctx, timeout)
			err := cs.Write(wctx, 2, 0, &rtmp.ChunkMessage{Message: &rtmpmsg.Ack{SequenceNumber: uint32(in.n)}})
			cancel()
			if err != nil {
				return fmt.Errorf("rtmp ack: %w", err)
			}
			acked = in.n
		}
		if _, ts, err := cs.Read(&cmsg); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("rtmp read: %w", err)
		} else {
			switch m := cmsg.Message.(type) {
			case *rtmpmsg.SetChunkSize:
				if err := cs.PeerState().SetChunkSize(m.ChunkSize); err != nil {
					return fmt.Errorf("rtmp: %w", err)
				}
			case *rtmpmsg.WinAckSize:
				if m.Size > 0 {
					ackWindow = uint64(m.Size)
				}
			case *rtmpmsg.CommandMessage:
				if err := onCommand(m, send, name); err != nil {
					return err
				}
			case *rtmpmsg.VideoMessage:
				if err := feed(conv.Video, ts, m.Payload); err != nil {
					return err
				}
			case *rtmpmsg.AudioMessage:
				if err := feed(conv.Audio, ts, m.Payload); err != nil {
					return err
				}
			}
		}
	}
}

// feed reads one tag body and hands it to a converter method.
func feed(conv func(uint32, []byte) error, ts uint32, payload io.Reader) error {
	body, err := flvunits.ReadTag(payload)
	if err != nil {
		return err
	}
	return conv(ts, body)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// onCommand follows connect → createStream → play.
func onCommand(m *rtmpmsg.CommandMessage, send func(uint32, int, string, int64, rtmpmsg.AMFConvertible) error, name string) error {
	switch m.CommandName {
	case "_result":
		switch m.TransactionID {
		case 1: // connect accepted
			return send(0, 3, "createStream", 2, &rtmpmsg.NetConnectionCreateStream{})
		case 2:
			var v rtmpmsg.AMFConvertible
			if err := rtmpmsg.DecodeBodyCreateStreamResult(m.Body, rtmpmsg.NewAMFDecoder(m.Body, m.Encoding), &v); err != nil {
				return fmt.Errorf("rtmp createStream result: %w", err)
			}
			res, ok := v.(*rtmpmsg.NetConnectionCreateStreamResult)
			if !ok {
				return errors.New("rtmp: bad createStream result")
			}
			return send(res.StreamID, 8, "play", 0, &playCmd{name: name})
		}
	case "_error":
		return fmt.Errorf("rtmp: upstream refused (transaction %d)", m.TransactionID)
	case "onStatus":
		// NetStream.Play.Start, .StreamNotFound, .Failed…: the level says.
		body, _ := io.ReadAll(io.LimitReader(m.Body, 4096))
		if bytes.Contains(body, []byte("error")) {
			return fmt.Errorf("rtmp: upstream play status %q", printable(body))
		}
	}
	return nil
}

func printable(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			out = append(out, c)
		}
	}
	return string(out)
}

// flvSink delivers an RTMP upstream's tracks and units to its publisher.
type flvSink struct{ pub *publisher }

func (f flvSink) Start(tracks []segment.Track) error { return f.pub.start(tracks) }
func (f flvSink) Write(u *media.Unit) error          { return f.pub.write(u) }
