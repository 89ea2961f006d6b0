// Package auth owns Huddle access tokens: JWTs signed with HS256 that name
// a room, an identity, a display name, grants and an expiry. It mints them
// (for `huddle token`, the bots and the dev-token route) and verifies them
// (for the signaling server), mapping every failure to a stable error.
package auth

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Dev credentials, used when no key is configured. The server binds
// loopback only while it uses them.
const (
	DevAPIKey    = "devkey"
	DevAPISecret = "huddle-dev-secret-not-for-production-use"
)

// MinSecretLen is the shortest accepted API secret, in bytes.
const MinSecretLen = 32

// Errors returned by Verifier.Verify. Callers map them to protocol codes.
var (
	ErrInvalid = errors.New("token invalid")
	ErrExpired = errors.New("token expired")
)

// Grant names are the protocol's (publish, subscribe, data, edit, admin).

// Claims are what a token says.
type Claims struct {
	Room     string   `json:"room"`
	Name     string   `json:"name,omitempty"`
	Grants   []string `json:"grants,omitempty"`
	Identity string   `json:"-"` // the JWT subject
	jwt.RegisteredClaims
}

// Has reports whether the token carries grant g.
func (c *Claims) Has(g string) bool { return slices.Contains(c.Grants, g) }

// Token describes a token to mint.
type Token struct {
	Room     string
	Identity string
	Name     string
	Grants   []string
	TTL      time.Duration
}

// Mint signs t with key and secret.
func Mint(key, secret string, t Token, now time.Time) (string, error) {
	if t.Room == "" || t.Identity == "" {
		return "", errors.New("mint token: room and identity are required")
	}
	if t.TTL <= 0 {
		return "", errors.New("mint token: ttl must be positive")
	}
	name := t.Name
	if name == "" {
		name = t.Identity
	}
	c := Claims{
		Room:   t.Room,
		Name:   name,
		Grants: t.Grants,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    key,
			Subject:   t.Identity,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(t.TTL)),
		},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, &c)
	tok.Header["kid"] = key
	s, err := tok.SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

// Verifier checks tokens against a set of API keys.
type Verifier struct {
	secrets map[string][]byte
	now     func() time.Time
}

// NewVerifier returns a verifier for keys (API key → secret). now may be
// nil for the wall clock.
func NewVerifier(keys map[string]string, now func() time.Time) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("auth: no API keys")
	}
	v := &Verifier{secrets: make(map[string][]byte, len(keys)), now: now}
	for k, s := range keys {
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("auth: secret of key %q is %d bytes; at least %d are required", k, len(s), MinSecretLen)
		}
		v.secrets[k] = []byte(s)
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Verify parses and checks token. The error wraps ErrExpired or ErrInvalid.
func (v *Verifier) Verify(token string) (*Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		key, _ := t.Header["kid"].(string)
		if key == "" {
			key, _ = t.Claims.(*Claims).GetIssuer()
		}
		s, ok := v.secrets[key]
		if !ok {
			return nil, fmt.Errorf("unknown API key %q", key)
		}
		return s, nil
	}, jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(v.now), jwt.WithExpirationRequired())
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, fmt.Errorf("%w: %v", ErrExpired, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c.Identity = c.Subject
	if c.Identity == "" || c.Room == "" {
		return nil, fmt.Errorf("%w: token has no subject or room", ErrInvalid)
	}
	return &c, nil
}
