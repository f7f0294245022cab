package manifest

import (
	"crypto/ed25519"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCacheAnswersAsVerifyDoes(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	b, err := Sign(priv, New("live/x", 7, 500, 1, [][]byte{{1, 2, 3}, {4}}))
	require.NoError(t, err)
	var c Cache
	for range 2 { // a miss, then a hit
		m, err := c.Verify(pub, b)
		require.NoError(t, err)
		require.Equal(t, uint64(7), m.Seq)
	}
	_, err = c.Verify(otherPub, b)
	require.ErrorIs(t, err, ErrSignature, "a hit needs the same key")
	bad := append([]byte(nil), b...)
	bad[len(bad)-1] ^= 1
	for range 2 { // a bad signature is never remembered
		_, err = c.Verify(pub, bad)
		require.ErrorIs(t, err, ErrSignature)
	}
	require.Len(t, c.ok, 1)
	var none *Cache // checks every time
	_, err = none.Verify(pub, bad)
	require.ErrorIs(t, err, ErrSignature)
	m, err := none.Verify(pub, b)
	require.NoError(t, err)
	require.Equal(t, uint64(7), m.Seq)
}

func TestCacheStaysBounded(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	var c Cache
	for seq := range uint64(maxCached + 10) {
		b, err := Sign(priv, New("live/x", seq, 500, 1, [][]byte{{1}}))
		require.NoError(t, err)
		_, err = c.Verify(pub, b)
		require.NoError(t, err)
		held := 0
		for _, byKey := range c.ok {
			held += len(byKey)
		}
		require.LessOrEqual(t, held, maxCached)
		require.Equal(t, held, c.n)
	}
}

// TestCacheHitCostsADecode: a hit allocates what decoding the manifest
// allocates and nothing more (no key is built to look it up; the
// simulator checks thousands of copies of each manifest).
func TestCacheHitCostsADecode(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	b, err := Sign(priv, New("live/x", 1, 500, 1, [][]byte{{1}}))
	require.NoError(t, err)
	var c Cache
	_, err = c.Verify(pub, b)
	require.NoError(t, err)
	decode := testing.AllocsPerRun(100, func() { _, _, _ = Decode(b) })
	hit := testing.AllocsPerRun(100, func() { _, _ = c.Verify(pub, b) })
	require.Equal(t, decode, hit)
}
