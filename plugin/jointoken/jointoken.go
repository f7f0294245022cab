// Package jointoken mints and checks the tokens peers present to join a
// stream: "v1.<expiry unix seconds>.<base64url HMAC-SHA256>" over the
// stream name and the expiry, keyed by the operator's secret. With no
// secret, joining is open and every token is accepted.
package jointoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxLen bounds a token.
const MaxLen = 256

// Errors of Check.
var (
	ErrMalformed = errors.New("join token: malformed")
	ErrExpired   = errors.New("join token: expired")
	ErrSignature = errors.New("join token: bad signature")
)

// Mint returns a token for stream valid until expiry.
func Mint(secret []byte, stream string, expiry time.Time) string {
	exp := strconv.FormatInt(expiry.Unix(), 10)
	return "v1." + exp + "." + base64.RawURLEncoding.EncodeToString(mac(secret, stream, exp))
}

// Check verifies token for stream at now. An empty secret accepts anything.
func Check(secret []byte, stream, token string, now time.Time) error {
	if len(secret) == 0 {
		return nil
	}
	if len(token) > MaxLen {
		return ErrMalformed
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return ErrMalformed
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return fmt.Errorf("%w: expiry: %w", ErrMalformed, err)
	}
	// Strict decoding refuses non-zero padding bits, and the comparison
	// is on the canonical text: a token has exactly one spelling.
	if _, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil {
		return fmt.Errorf("%w: signature: %w", ErrMalformed, err)
	}
	want := base64.RawURLEncoding.EncodeToString(mac(secret, stream, parts[1]))
	if !hmac.Equal([]byte(parts[2]), []byte(want)) {
		return ErrSignature
	}
	if now.Unix() > exp {
		return ErrExpired
	}
	return nil
}

func mac(secret []byte, stream, exp string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("coop-join-v1\n" + stream + "\n" + exp))
	return h.Sum(nil)
}
