package pull

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/rtpunits"
	"github.com/coopstreaming/coop/segment"
)

// pullRTSP reads an RTSP upstream with gortsplib's client until it fails.
func pullRTSP(ctx context.Context, u *url.URL, transport string, timeout time.Duration, pub *publisher) error {
	bu, err := base.ParseURL(u.String())
	if err != nil {
		return fmt.Errorf("rtsp url: %w", err)
	}
	c := &gortsplib.Client{Scheme: bu.Scheme, Host: bu.Host, ReadTimeout: timeout, WriteTimeout: timeout}
	switch transport {
	case "udp":
		t := gortsplib.TransportUDP
		c.Transport = &t
	case "tcp":
		t := gortsplib.TransportTCP
		c.Transport = &t
	}
	if err := c.Start2(); err != nil {
		return fmt.Errorf("rtsp connect: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	desc, _, err := c.Describe(bu)
	if err != nil {
		return fmt.Errorf("rtsp describe: %w", err)
	}
	carried, err := rtpunits.Tracks(desc)
	if err != nil {
		return fmt.Errorf("rtsp: %w", err)
	}
	tracks := make([]segment.Track, len(carried))
	type wired struct {
		medi *description.Media
		f    format.Format
		dec  *rtpunits.Decoder
	}
	ws := make([]wired, len(carried))
	for i, cf := range carried {
		dec, err := rtpunits.NewDecoder(cf.Format, i)
		if err != nil {
			return err
		}
		dec.StrictDTS = true
		tracks[i] = cf.Track
		ws[i] = wired{medi: cf.Media, f: cf.Format, dec: dec}
	}
	for _, w := range ws {
		if _, err := c.Setup(desc.BaseURL, w.medi, 0, 0); err != nil {
			return fmt.Errorf("rtsp setup: %w", err)
		}
	}
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	if err := pub.start(tracks); err != nil {
		return err
	}
	for _, w := range ws {
		// Packets without PTS, partial access units and losses give no
		// units (silently): wait for the next.
		c.OnPacketRTP(w.medi, w.f, w.dec.OnPacket(
			func(pkt *rtp.Packet) (int64, bool) { return c.PacketPTS2(w.medi, pkt) },
			func(u *media.Unit) error {
				err := pub.write(u)
				if err != nil {
					fail(err)
				}
				return err
			}, nil))
	}
	if _, err := c.Play(nil); err != nil {
		return fmt.Errorf("rtsp play: %w", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait() }()
	select {
	case err := <-waitErr:
		return fmt.Errorf("rtsp: %w", err)
	case err := <-failed:
		return err
	case <-pub.done():
		return errors.New("another publisher took the path over")
	case <-ctx.Done():
		return ctx.Err()
	}
}
