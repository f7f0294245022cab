package manifest

import (
	"crypto/ed25519"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSignVerifyCheck(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	chunks := [][]byte{[]byte("base"), []byte("enh")}
	b, err := Sign(priv, New("live/x", 7, 1000, 1, chunks))
	require.NoError(t, err)
	m, err := Verify(pub, b)
	require.NoError(t, err)
	require.Equal(t, uint64(7), m.Seq)
	require.Zero(t, m.Epoch)

	withEpoch := New("live/x", 7, 1000, 1, chunks)
	withEpoch.Epoch = 0xfeedface
	be, err := Sign(priv, withEpoch)
	require.NoError(t, err)
	me, err := Verify(pub, be)
	require.NoError(t, err)
	require.Equal(t, uint64(0xfeedface), me.Epoch, "the epoch is signed with the segment")
	require.NoError(t, m.Check(1, []byte("enh")))
	require.ErrorIs(t, m.Check(1, []byte("enx")), ErrMismatch)
	require.ErrorIs(t, m.Check(2, nil), ErrInvalid)

	tampered := append([]byte{}, b...)
	tampered[10] ^= 1
	_, err = Verify(pub, tampered)
	require.Error(t, err)
	other, _, _ := ed25519.GenerateKey(nil)
	_, err = Verify(other, b)
	require.ErrorIs(t, err, ErrSignature)
	_, err = Verify(pub, b[:len(b)-1])
	require.Error(t, err)
	_, err = Verify(pub, make([]byte, MaxSize+1))
	require.ErrorIs(t, err, ErrTooLarge)
}

func FuzzDecode(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(nil)
	b, _ := Sign(priv, New("s", 1, 1000, 0, [][]byte{{1}}))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, sig, err := Decode(b)
		if err == nil {
			require.Equal(t, b, append(m.body(), sig...))
		}
	})
}
