// Package turn owns the embedded TURN server and its short-lived
// credentials. Credentials follow the TURN REST convention: the username is
// "<expiry unix seconds>:<identity>" and the password is the base64
// HMAC-SHA1 of the username under the server's secret, so any node that
// knows the secret can check them without shared state.
package turn

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors from Check.
var (
	ErrMalformed = errors.New("turn: malformed username")
	ErrExpired   = errors.New("turn: credential expired")
)

// Credential is a username and password pair for one participant.
type Credential struct {
	Username string
	Password string
	Expires  time.Time
}

// NewCredential returns a credential for identity valid for ttl from now.
func NewCredential(secret []byte, identity string, now time.Time, ttl time.Duration) Credential {
	exp := now.Add(ttl).Truncate(time.Second)
	user := strconv.FormatInt(exp.Unix(), 10) + ":" + identity
	return Credential{Username: user, Password: Password(secret, user), Expires: exp}
}

// Password is the password that goes with username.
func Password(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Check parses username and reports the identity it names, refusing an
// expired or malformed one. The caller derives the password with Password
// (TURN checks it through the message integrity, not in clear).
func Check(username string, now time.Time) (identity string, err error) {
	exp, id, ok := strings.Cut(username, ":")
	if !ok || id == "" {
		return "", ErrMalformed
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: expiry %q", ErrMalformed, exp)
	}
	if now.After(time.Unix(sec, 0)) {
		return "", ErrExpired
	}
	return id, nil
}
