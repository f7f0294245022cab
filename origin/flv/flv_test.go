package flv

import (
	"testing"

	"github.com/stretchr/testify/require"
)

var avcConfig = []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xee}

func TestParseVideoReadsAVCHeaderAndNegativeCompositionTime(t *testing.T) {
	tag, err := ParseVideo([]byte{0x17, 1, 0xff, 0xff, 0xfe, 0, 0, 0, 1, 0x65})
	require.NoError(t, err)
	require.Equal(t, VideoTag{Codec: VideoH264, PacketType: VideoNALUs, KeyFrame: true, CompositionTime: -2, Data: []byte{0, 0, 0, 1, 0x65}}, tag)
}

func TestParseAVCConfigReadsParameterSets(t *testing.T) {
	c, err := ParseAVCConfig(avcConfig)
	require.NoError(t, err)
	require.Equal(t, [][]byte{{0x67, 0x64, 0, 0x1f}}, c.SPS)
	require.Equal(t, [][]byte{{0x68, 0xee}}, c.PPS)
}

func TestParseEnhancedHEVCCodedFrames(t *testing.T) {
	tag, err := ParseVideo(append([]byte{0x80 | 0x10 | exCodedFrames, 'h', 'v', 'c', '1', 0, 0, 33}, 0, 0, 0, 1, 0x26))
	require.NoError(t, err)
	require.Equal(t, VideoH265, tag.Codec)
	require.Equal(t, int32(33), tag.CompositionTime)
	require.True(t, tag.KeyFrame)
}

func TestParsersRejectBadInput(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":             {},
		"short AVC":         {0x17, 1, 0},
		"VP6":               {0x14, 0},
		"bad packet type":   {0x17, 9, 0, 0, 0},
		"enhanced av01":     {0x90, 'a', 'v', '0', '1'},
		"enhanced bad type": {0x9f, 'h', 'v', 'c', '1'},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseVideo(b)
			require.Error(t, err)
		})
	}
	_, err := ParseAudio([]byte{0x2f, 1})
	require.ErrorIs(t, err, ErrUnsupported)
	_, err = ParseAVCConfig(avcConfig[:len(avcConfig)-1])
	require.ErrorIs(t, err, ErrTruncated)
	_, err = ParseHEVCConfig(make([]byte, 10))
	require.ErrorIs(t, err, ErrTruncated)
}

func FuzzParseVideo(f *testing.F) {
	f.Add([]byte{0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65})
	f.Add(append([]byte{0x17, 0, 0, 0, 0}, avcConfig...))
	f.Add([]byte{0x90, 'h', 'v', 'c', '1', 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		tag, err := ParseVideo(b)
		if err == nil && tag.PacketType == VideoSequenceHeader {
			if tag.Codec == VideoH264 {
				_, _ = ParseAVCConfig(tag.Data)
			} else {
				_, _ = ParseHEVCConfig(tag.Data)
			}
		}
	})
}

func FuzzParseAVCConfig(f *testing.F) {
	f.Add(avcConfig)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAVCConfig(b)
		if err == nil {
			require.NotEmpty(t, c.SPS)
		}
	})
}

func FuzzParseHEVCConfig(f *testing.F) {
	f.Add(make([]byte, 23))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseHEVCConfig(b) })
}

func FuzzParseAudio(f *testing.F) {
	f.Add([]byte{0xaf, 0, 0x12, 0x10})
	f.Add([]byte{0xaf, 1, 0x21})
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseAudio(b) })
}
