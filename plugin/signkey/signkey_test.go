package signkey

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCreateThenLoadSameKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "stream.key")
	k1, created, err := LoadOrCreate(path)
	require.NoError(t, err)
	require.True(t, created)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	k2, created, err := LoadOrCreate(path)
	require.NoError(t, err)
	require.False(t, created)
	require.True(t, k1.Equal(k2))
}

func TestBadFilesAreErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	require.NoError(t, os.WriteFile(garbage, []byte("not a key"), 0o600))
	_, _, err := LoadOrCreate(garbage)
	require.ErrorContains(t, err, "PEM")
	big := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(big, make([]byte, maxFile+10), 0o600))
	_, err = Load(big)
	require.ErrorContains(t, err, "over")
}
