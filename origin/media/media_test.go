package media

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/segment"
)

func TestClassifyH264ByNalRefIdc(t *testing.T) {
	require.False(t, ClassifyH264([][]byte{{0x65}}).Droppable, "IDR (nal_ref_idc 3)")
	require.False(t, ClassifyH264([][]byte{{0x41}}).Droppable, "P slice with nal_ref_idc 2")
	require.True(t, ClassifyH264([][]byte{{0x09, 0xf0}, {0x01}}).Droppable, "non-reference slice after an AUD")
	require.False(t, ClassifyH264([][]byte{{0x06, 0}}).Droppable, "no VCL NAL unit at all")
}

func TestClassifyH265ByTemporalID(t *testing.T) {
	// NAL header: type in bits 1-6 of byte 0, TemporalId+1 in bits 0-2 of byte 1.
	require.Equal(t, Droppability{}, ClassifyH265([][]byte{{19 << 1, 1}}))
	require.Equal(t, Droppability{Droppable: true, TemporalID: 1}, ClassifyH265([][]byte{{32 << 1, 1}, {1 << 1, 2}}))
}

func TestLayererDealsNonReferenceFramesAcrossEnhancementLayers(t *testing.T) {
	l := Layerer{Layers: 3}
	ref := &Unit{NALUs: [][]byte{{0x41}}}
	nonRef := &Unit{NALUs: [][]byte{{0x01}}}
	audio := &Unit{AU: []byte{1}}
	got := []int{
		l.Layer(segment.CodecH264, ref), l.Layer(segment.CodecH264, nonRef), l.Layer(segment.CodecH264, nonRef),
		l.Layer(segment.CodecH264, nonRef), l.Layer(segment.CodecAAC, audio),
	}
	require.Equal(t, []int{0, 1, 2, 1, 0}, got)
	one := Layerer{Layers: 1}
	require.Equal(t, 0, one.Layer(segment.CodecH264, nonRef))
	h265 := Layerer{Layers: 2}
	require.Equal(t, 1, h265.Layer(segment.CodecH265, &Unit{NALUs: [][]byte{{1 << 1, 4}}}), "TemporalId 3 capped at the top layer")
}

func TestH265RandomAccessHelpers(t *testing.T) {
	require.True(t, IsH265CRA([][]byte{{32 << 1, 1}, {21 << 1, 1}}))
	require.True(t, IsH265RASL([][]byte{{8 << 1, 1}}))
	require.False(t, IsH265RASL([][]byte{{1 << 1, 1}}))
}
