// Package signkey keeps the Ed25519 key that signs segment manifests: read
// from a PEM (PKCS#8) file, or generated and written there on first run so
// peers keep trusting the stream across plugin restarts.
package signkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const pemType = "PRIVATE KEY"

// maxFile bounds the key file read.
const maxFile = 16 << 10

// LoadOrCreate returns the key stored at path, creating it (mode 0600)
// when the file does not exist. created tells whether it was generated.
func LoadOrCreate(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = Load(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("signing key: %w", err)
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, false, fmt.Errorf("signing key: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("signing key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: pemType, Bytes: der}); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("signing key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("signing key %s: %w", path, err)
	}
	return key, true, nil
}

// Load reads an Ed25519 key from a PEM PKCS#8 file.
func Load(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxFile+1)
	n, err := f.Read(b)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	if n > maxFile {
		return nil, fmt.Errorf("signing key %s: file over %d bytes", path, maxFile)
	}
	block, _ := pem.Decode(b[:n])
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("signing key %s: no %q PEM block", path, pemType)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: %T is not an Ed25519 key", path, k)
	}
	return ek, nil
}
