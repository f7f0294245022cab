package jointoken

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMintCheck(t *testing.T) {
	secret := []byte("s3cret")
	now := time.Unix(1_800_000_000, 0)
	tok := Mint(secret, "live/a", now.Add(time.Hour))
	require.NoError(t, Check(secret, "live/a", tok, now))
	require.ErrorIs(t, Check(secret, "live/b", tok, now), ErrSignature)
	require.ErrorIs(t, Check([]byte("other"), "live/a", tok, now), ErrSignature)
	require.ErrorIs(t, Check(secret, "live/a", tok, now.Add(2*time.Hour)), ErrExpired)
	for _, bad := range []string{"", "v1", "v2.1.x", "v1.abc.x", "v1.1.!!", strings.Repeat("v", MaxLen+1)} {
		require.ErrorIs(t, Check(secret, "live/a", bad, now), ErrMalformed, bad)
	}
	require.NoError(t, Check(nil, "live/a", "anything", now), "no secret: open")
}

func FuzzCheck(f *testing.F) {
	f.Add("v1.1800003600.abc")
	f.Add(Mint([]byte("k"), "s", time.Unix(1_900_000_000, 0)))
	f.Fuzz(func(t *testing.T, tok string) {
		_ = Check([]byte("k"), "s", tok, time.Unix(1_800_000_000, 0))
	})
}

// A 32-byte MAC in unpadded base64 ends in a character that carries 2
// padding bits: lax decoding accepted 4 spellings of every token.
func TestATokenHasExactlyOneSpelling(t *testing.T) {
	secret := []byte("s3cret")
	now := time.Unix(1_800_000_000, 0)
	tok := Mint(secret, "live/a", now.Add(time.Hour))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	accepted := 0
	for bits := 0; bits < 4; bits++ {
		variant := tok[:len(tok)-1] + string(alphabet[last&^3|bits])
		if Check(secret, "live/a", variant, now) == nil {
			accepted++
		} else {
			require.NotEqual(t, tok, variant)
		}
	}
	require.Equal(t, 1, accepted, "only the canonical spelling is accepted")
}
