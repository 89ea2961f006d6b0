package signaling_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/signaling"
	"github.com/huddle-rtc/huddle/signaling/auth"
)

// TestDevTokenAnswersJSON: /dev/token answers JSON, a refusal included,
// as PROTOCOL.md says, so the page can read the error's code.
func TestDevTokenAnswersJSON(t *testing.T) {
	s := startTestServerWith(t, rooms.Config{}, signaling.Config{Dev: true, DevKey: auth.DevAPIKey, DevSecret: auth.DevAPISecret})
	for _, tc := range []struct {
		query  string
		status int
		field  string
	}{
		{"?room=standup&name=Ada", http.StatusOK, "token"},
		{"", http.StatusBadRequest, "code"},
	} {
		resp, err := http.Get(s.url + "/dev/token" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("/dev/token%s: body is not JSON: %v", tc.query, err)
		}
		if resp.StatusCode != tc.status || body[tc.field] == "" {
			t.Errorf("/dev/token%s: %d %v, want %d with %q", tc.query, resp.StatusCode, body, tc.status, tc.field)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("/dev/token%s: Content-Type %q, want application/json", tc.query, ct)
		}
	}
}
