package manifest

import (
	"crypto/ed25519"
	"sync"
)

// maxCached bounds a Cache: when full it starts over (the manifests of a
// live stream are looked up while their segments travel, then never).
const maxCached = 4096

// Cache remembers manifests whose signature was checked, so that engines
// sharing one process (the simulator runs thousands) check each signature
// once instead of once per engine. A lookup matches the key and every
// byte of the signed manifest, so the answer is the one Verify gives.
// It is safe for concurrent use.
type Cache struct {
	mu sync.Mutex // guards ok and n
	// ok holds, per stream key, the manifests verified under it; looked
	// up as ok[string(key)][string(b)], which allocates nothing.
	ok map[string]map[string]struct{}
	n  int // manifests held, all keys together
}

// Verify is Verify with the signature check skipped for bytes already
// verified under the same key. A nil Cache checks every time.
func (c *Cache) Verify(key ed25519.PublicKey, b []byte) (*Manifest, error) {
	if c == nil {
		return Verify(key, b)
	}
	c.mu.Lock()
	_, hit := c.ok[string(key)][string(b)]
	c.mu.Unlock()
	if hit {
		m, _, err := Decode(b)
		return m, err
	}
	m, err := Verify(key, b)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.ok == nil || c.n >= maxCached {
		c.ok, c.n = make(map[string]map[string]struct{}), 0
	}
	byKey := c.ok[string(key)]
	if byKey == nil {
		byKey = make(map[string]struct{})
		c.ok[string(key)] = byKey
	}
	if _, dup := byKey[string(b)]; !dup {
		byKey[string(b)] = struct{}{}
		c.n++
	}
	c.mu.Unlock()
	return m, nil
}
