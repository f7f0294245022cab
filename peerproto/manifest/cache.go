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
	mu sync.Mutex // guards ok
	ok map[string]struct{}
}

// Verify is Verify with the signature check skipped for bytes already
// verified under the same key. A nil Cache checks every time.
func (c *Cache) Verify(key ed25519.PublicKey, b []byte) (*Manifest, error) {
	if c == nil {
		return Verify(key, b)
	}
	id := string(key) + string(b)
	c.mu.Lock()
	_, hit := c.ok[id]
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
	if c.ok == nil || len(c.ok) >= maxCached {
		c.ok = make(map[string]struct{})
	}
	c.ok[id] = struct{}{}
	c.mu.Unlock()
	return m, nil
}
