package stream

import (
	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// Tap receives every stream's access units on the readers' timeline (the
// HLS muxer is one). Its methods are called from publisher goroutines with
// the stream locked, in order per path, and must not block: a tap queues
// what it needs in a bounded queue and drops (and counts) the rest.
type Tap interface {
	// TapStart is called when a publisher sets its tracks, also when a
	// publisher resumes within the grace period (the timeline continues).
	TapStart(path string, tracks []segment.Track)
	// TapUnit delivers one unit. The tap must not modify it; its payload
	// may be shared with the ingest, so a tap that keeps it copies it.
	TapUnit(path string, u *media.Unit)
	// TapEnd is called when the stream ends (grace period over).
	TapEnd(path string)
}
