package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/config"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/playback"
	"github.com/coopstreaming/coop/peerproto/scheduler"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/segment"
)

// TestDefaultsAgreeAcrossTheImportBoundary pins the defaults that need a
// copy on each side of the import rules (the P2P core may not import the
// segment format nor the origin): the origin's config, the segmenter's
// package and the P2P core must cut, announce and expect the same.
func TestDefaultsAgreeAcrossTheImportBoundary(t *testing.T) {
	c := config.Default()
	require.Equal(t, segment.DefaultDuration, time.Duration(c.Segment.Duration), "origin config vs segment format")
	require.Equal(t, segment.DefaultDuration, playback.DefaultSegmentDuration, "segment format vs P2P core")
	require.Equal(t, segment.DefaultLayers, c.Segment.Layers, "origin config vs segment format")
	require.Equal(t, segment.DefaultLayers, engine.DefaultLayers, "segment format vs P2P core")
	require.Equal(t, pluginapi.DefaultPartners, partners.DefaultTarget, "M: origin's plugin.partners vs P2P core")
	require.Equal(t, pluginapi.DefaultPartners, c.Plugin.Partners, "M: origin config")
	require.Equal(t, 1500*time.Millisecond, scheduler.DefaultUrgent, "the urgent horizon the simulator's figures were measured with")
}
