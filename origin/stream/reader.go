package stream

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"
)

// readerQueueUnits is each reader's queue, in units (about 1.5 s of a
// 30 fps stream with audio). A reader that falls further behind loses
// whole units, never part of one, and restarts at the next key frame.
const readerQueueUnits = 128

// readerStallLimit is how long a reader's sender waits for room in the
// RTSP library's queue before it gives up on the rest of a unit.
const readerStallLimit = time.Second

// reader is a playing RTSP session. The publisher hands it whole units
// through its own bounded queue (q) and never waits for it; the reader's
// sender goroutine writes them to the session, waiting for room in the
// session's packet queue, so a reader that is briefly slow loses nothing
// and one that stays slow loses whole units, alone. Its packets start at
// a key frame, so a player never decodes a partial GOP: a reader that
// joins mid-GOP, or whose queue overflowed, waits for the next key frame.
type reader struct {
	session *gortsplib.ServerSession
	// medias is what the session set up (fixed once it plays): a reader
	// that took only some tracks gets only those.
	medias map[*description.Media]struct{}
	// hasVideo tells whether the reader set up a video track, so it starts
	// at a video key frame; an audio-only reader starts at once.
	hasVideo bool
	// started, skipRASL and dropped are guarded by the stream's mu.
	started bool
	// skipRASL is set when the reader started at an H.265 CRA: the RASL
	// pictures that follow it reference pictures the reader never got.
	skipRASL bool
	dropped  uint64

	q chan readerUnit
	// resync is set by the sender when it gave up on part of a unit; the
	// publisher then restarts the reader at the next key frame.
	resync atomic.Bool
	closed atomic.Bool
	done   chan struct{}
}

// readerUnit is one unit's packets for one media.
type readerUnit struct {
	medi *description.Media
	pkts []*rtp.Packet
}

func newReader(session *gortsplib.ServerSession) *reader {
	r := &reader{
		session: session, medias: make(map[*description.Media]struct{}),
		q: make(chan readerUnit, readerQueueUnits), done: make(chan struct{}),
	}
	for _, medi := range session.SetuppedMedias() {
		r.medias[medi] = struct{}{}
		r.hasVideo = r.hasVideo || medi.Type == description.MediaTypeVideo
	}
	return r
}

// start runs the sender.
func (r *reader) start() { go r.send() }

// stop ends the sender; the caller holds the stream's mu and has removed r.
func (r *reader) stop() {
	if r.closed.Swap(true) {
		return
	}
	close(r.q)
}

// offer queues a unit without waiting; false means the queue was full.
// Called under the stream's mu, so never after stop.
func (r *reader) offer(u readerUnit) bool {
	select {
	case r.q <- u:
		return true
	default:
		return false
	}
}

func (r *reader) send() {
	defer close(r.done)
	for u := range r.q {
		for _, p := range u.pkts {
			if !r.write(u.medi, p) {
				r.resync.Store(true)
				break // the rest of the unit is useless to the reader
			}
		}
	}
}

// write writes one packet, waiting up to readerStallLimit for room.
func (r *reader) write(medi *description.Media, p *rtp.Packet) bool {
	cp := *p // the library stamps its SSRC on the packet: one copy per reader
	deadline := time.Now().Add(readerStallLimit)
	wait := time.Millisecond
	for {
		err := writeRTP(r.session, medi, &cp)
		if err == nil {
			return true
		}
		if !errors.As(err, new(liberrors.ErrServerWriteQueueFull)) || r.closed.Load() || time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// writeRTP writes one packet to one reader. Whatever goes wrong there —
// a full queue, a closed session, a fault inside the RTSP library — is
// that reader's loss alone: it is returned as an error, never a panic.
func writeRTP(session *gortsplib.ServerSession, medi *description.Media, p *rtp.Packet) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("stream: writing to a reader: %v", v)
		}
	}()
	return session.WritePacketRTP(medi, p)
}
