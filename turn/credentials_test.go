package turn

import (
	"errors"
	"testing"
	"time"
)

func TestCredentialRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	c := NewCredential(secret, "ada", now, time.Hour)
	if c.Username != "1800003600:ada" {
		t.Fatalf("username %q", c.Username)
	}
	id, err := Check(c.Username, now.Add(59*time.Minute))
	if err != nil || id != "ada" {
		t.Fatalf("Check = %q, %v", id, err)
	}
	if Password(secret, c.Username) != c.Password {
		t.Fatal("password does not verify")
	}
	if Password([]byte("another secret, also 32 bytes!!!"), c.Username) == c.Password {
		t.Fatal("a different secret gives the same password")
	}
	if Password(secret, "1800003600:bob") == c.Password {
		t.Fatal("another user's username gives the same password")
	}
	if _, err := Check(c.Username, now.Add(61*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired credential: err = %v", err)
	}
	for _, bad := range []string{"", "ada", "x:ada", "1800003600:"} {
		if _, err := Check(bad, now); !errors.Is(err, ErrMalformed) {
			t.Errorf("Check(%q) = %v; want ErrMalformed", bad, err)
		}
	}
}
