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

func TestPiecesAreCheckedOneByOne(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	base := make([]byte, 40000) // 3 pieces of 16 KiB: 16384, 16384, 7232
	for i := range base {
		base[i] = byte(i*7 + i/1000) // no two pieces alike
	}
	chunks := [][]byte{base, nil, []byte("top")}
	b, err := Sign(priv, New("live/x", 3, 500, 1, chunks))
	require.NoError(t, err)
	m, err := Verify(pub, b)
	require.NoError(t, err)
	require.Equal(t, uint32(DefaultPieceSize), m.PieceSize)
	require.Equal(t, []int{3, 1, 1}, []int{m.Pieces(0), m.Pieces(1), m.Pieces(2)})
	require.Equal(t, 7232, m.PieceLen(0, 2))
	require.Zero(t, m.PieceLen(1, 0), "an empty chunk is one empty piece")
	for i := range 3 {
		require.NoError(t, m.CheckPiece(0, i, m.Piece(base, i)))
	}
	require.ErrorIs(t, m.CheckPiece(0, 1, m.Piece(base, 0)), ErrMismatch, "piece 0's bytes are not piece 1")
	require.ErrorIs(t, m.CheckPiece(0, 2, base[:100]), ErrMismatch, "wrong length")
	require.ErrorIs(t, m.CheckPiece(0, 3, nil), ErrInvalid, "no piece 3")
	require.ErrorIs(t, m.CheckPiece(3, 0, nil), ErrInvalid, "no layer 3")
	require.NoError(t, m.CheckPiece(1, 0, nil))
	require.NoError(t, m.Check(0, base))
	require.ErrorIs(t, m.Check(0, base[:len(base)-1]), ErrMismatch)

	tampered := append([]byte{}, b...)
	tampered[len(tampered)-ed25519.SignatureSize-1] ^= 1 // last byte of the last piece hash
	_, err = Verify(pub, tampered)
	require.ErrorIs(t, err, ErrSignature, "piece hashes are signed")
}

func TestALargeSegmentGetsLargerPiecesNotMoreThanMaxPieces(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	chunks := [][]byte{make([]byte, 2<<20), make([]byte, 100)}
	m := New("s", 1, 2000, 1, chunks)
	require.LessOrEqual(t, m.Pieces(0)+m.Pieces(1), MaxPieces)
	require.Equal(t, uint32(64<<10), m.PieceSize)
	b, err := Sign(priv, m)
	require.NoError(t, err)
	require.LessOrEqual(t, len(b), MaxSize)
	_, _, err = Decode(b)
	require.NoError(t, err)

	bad := New("s", 1, 2000, 1, chunks)
	bad.PieceSize = 1 << 10 // 2049 pieces, but the hashes were cut for 64 KiB
	_, err = Sign(priv, bad)
	require.ErrorIs(t, err, ErrInvalid)
}

func BenchmarkCheckPiece(b *testing.B) {
	chunk := make([]byte, DefaultPieceSize)
	m := New("s", 1, 500, 1, [][]byte{chunk})
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if err := m.CheckPiece(0, 0, chunk); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	raw, _ := Sign(priv, New("live/demo", 1, 500, 1, [][]byte{make([]byte, 30000), make([]byte, 20000), make([]byte, 12500)}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(pub, raw); err != nil {
			b.Fatal(err)
		}
	}
}
