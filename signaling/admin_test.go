package signaling_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/rooms/events"
	"github.com/huddle-rtc/huddle/signaling"
	"github.com/huddle-rtc/huddle/signaling/client"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// sseEvent is one message of an SSE stream.
type sseEvent struct {
	id    uint64
	name  string
	data  string
	event events.Event
}

// sseStream reads one GET /events response.
type sseStream struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	events   []sseEvent
	comments int
	err      error
}

func openEvents(t *testing.T, base, token, query, lastID string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Close = true // no idle connection outlives the test (goleak)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /events: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /events: %s %s", resp.Status, b)
	}
	s := &sseStream{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.name != "" || cur.data != "" {
					if cur.name != "gap" {
						if err := json.Unmarshal([]byte(cur.data), &cur.event); err != nil {
							s.fail(fmt.Errorf("event %d: %v", cur.id, err))
						}
					}
					s.mu.Lock()
					s.events = append(s.events, cur)
					s.mu.Unlock()
				}
				cur = sseEvent{}
			case strings.HasPrefix(line, ":"):
				s.mu.Lock()
				s.comments++
				s.mu.Unlock()
			case strings.HasPrefix(line, "id: "):
				cur.id, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				cur.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				cur.data = line[6:]
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *sseStream) close() {
	s.cancel()
	<-s.done
}

func (s *sseStream) snapshot() ([]sseEvent, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events), s.comments, s.err
}

// wait waits until some event satisfies cond and returns it.
func (s *sseStream) wait(t *testing.T, what string, cond func(sseEvent) bool) sseEvent {
	t.Helper()
	var found sseEvent
	if !waitFor(10*time.Second, func() bool {
		evs, _, _ := s.snapshot()
		for _, e := range evs {
			if cond(e) {
				found = e
				return true
			}
		}
		return false
	}) {
		evs, _, err := s.snapshot()
		names := []string{}
		for _, e := range evs {
			names = append(names, e.name)
		}
		t.Fatalf("no event: %s (got %v, err %v)", what, names, err)
	}
	return found
}

func adminToken(t *testing.T, room string) string {
	return token(t, room, "admin", protocol.GrantAdmin)
}

// call does an admin API request and decodes the JSON answer into out.
func call(t *testing.T, method, u, tok string, body io.Reader, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, u, body)
	req.Close = true
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %s: %v: %s", method, u, resp.Status, err, b)
		}
	}
	return resp.StatusCode
}

// TestEventsReplay: a reader that drops its connection and reconnects with
// Last-Event-ID gets exactly the events that a reader that stayed
// connected got; heartbeat comments come; a Last-Event-ID older than the
// buffer gets a gap event first.
func TestEventsReplay(t *testing.T) {
	s, _, reg := startAdminServer(t, signaling.Config{StatsEvery: -1, EventsHeartbeat: 100 * time.Millisecond},
		rooms.Config{Events: events.New(64)})
	tok := adminToken(t, signaling.AllRooms)
	const q = "type=participant,track,room,presence"
	ref := openEvents(t, s.url, tok, q, "")
	flaky := openEvents(t, s.url, tok, q, "")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ada := s.join(t, "r1", "ada")
	bob := s.join(t, "r1", "bob")
	if _, err := ada.publish(ctx, t, protocol.KindAudio); err != nil {
		t.Fatal(err)
	}
	flaky.wait(t, "ada's track", func(e sseEvent) bool { return e.name == events.TrackPublished })
	flaky.close()
	got1, _, _ := flaky.snapshot()
	last := got1[len(got1)-1].id

	// While it is away: more happens.
	cy := s.join(t, "r2", "cy")
	_ = bob.Leave(ctx)
	cy.close()
	ref.wait(t, "cy left", func(e sseEvent) bool {
		return e.name == events.ParticipantLeft && strings.Contains(e.data, `"cy"`)
	})
	again := openEvents(t, s.url, tok, q, strconv.FormatUint(last, 10))
	ids := func(evs []sseEvent) []uint64 {
		var out []uint64
		for _, e := range evs {
			out = append(out, e.id)
		}
		return out
	}
	// The replay and the live events that follow it, together with what
	// came before the drop, are what the connected reader got.
	var refAll, got2 []sseEvent
	var union []uint64
	var comments int
	if !waitFor(10*time.Second, func() bool {
		refAll, comments, _ = ref.snapshot()
		got2, _, _ = again.snapshot()
		union = append(ids(got1), ids(got2)...)
		return slices.Equal(union, ids(refAll))
	}) {
		t.Fatalf("dropped reader got\n%v\nthe connected one\n%v", union, ids(refAll))
	}
	for i := 1; i < len(refAll); i++ {
		if refAll[i].id <= refAll[i-1].id {
			t.Fatalf("ids not increasing: %v", ids(refAll))
		}
	}
	if comments == 0 {
		t.Error("no heartbeat comment within the test (every 100 ms)")
	}
	t.Logf("%d events, %d missed while disconnected and replayed, %d heartbeats", len(refAll), len(got2), comments)
	for _, e := range refAll {
		if e.event.Type != e.name || e.event.ID != e.id {
			t.Fatalf("event %d: name %q, JSON %+v", e.id, e.name, e.event)
		}
	}

	// Too old: 100 more events roll the 64-event buffer over.
	first := refAll[0].id
	for i := range 100 {
		reg.Events().Publish(events.RoomStarted, fmt.Sprintf("filler-%d", i), nil, nil)
	}
	old := openEvents(t, s.url, tok, "", strconv.FormatUint(first, 10))
	gap := old.wait(t, "gap", func(e sseEvent) bool { return e.name == "gap" })
	evs, _, _ := old.snapshot()
	if evs[0].name != "gap" || !strings.Contains(gap.data, `"oldest_id"`) {
		t.Fatalf("the gap is not first: %+v", evs[0])
	}
	old.wait(t, "the last filler after the gap", func(e sseEvent) bool { return e.event.Room == "filler-99" })
	evs, _, _ = old.snapshot()
	if len(evs) != 65 {
		t.Errorf("after the gap: %d messages, want the gap and the 64 held", len(evs))
	}
	ada.close()
}

// TestAdminAPI: tokens are checked; rooms and a room's participants, tracks
// and statistics are listed; remove disconnects the participant; mute
// mutes for everyone; close ends the room.
func TestAdminAPI(t *testing.T) {
	s, _, reg := startAdminServer(t, signaling.Config{StatsEvery: 200 * time.Millisecond}, rooms.Config{})
	tok := adminToken(t, signaling.AllRooms)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var e map[string]string
	if code := call(t, "GET", s.url+"/admin/rooms", "", nil, &e); code != 401 || e["code"] != protocol.CodeTokenInvalid {
		t.Fatalf("no token: %d %v", code, e)
	}
	if code := call(t, "GET", s.url+"/admin/rooms", token(t, "x", "eve", allGrants...), nil, &e); code != 403 || e["code"] != protocol.CodePermissionDenied {
		t.Fatalf("no admin grant: %d %v", code, e)
	}
	if code := call(t, "GET", s.url+"/admin/rooms/nowhere", tok, nil, &e); code != 404 {
		t.Fatalf("unknown room: %d %v", code, e)
	}
	feed := openEvents(t, s.url, tok, "room=team", "")

	ada := s.join(t, "team", "ada")
	bob := s.join(t, "team", "bob")
	sids, err := ada.publish(ctx, t, protocol.KindAudio, protocol.KindVideo)
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Rooms []rooms.RoomInfo }
	call(t, "GET", s.url+"/admin/rooms", tok, nil, &list)
	if len(list.Rooms) != 1 || list.Rooms[0].Name != "team" || list.Rooms[0].Participants != 2 {
		t.Fatalf("rooms: %+v", list)
	}
	// A room admin sees its room only.
	if code := call(t, "GET", s.url+"/admin/rooms/team", adminToken(t, "other"), nil, &e); code != 403 {
		t.Fatalf("admin of another room: %d", code)
	}

	// Statistics: packets flow, bit rates and receiver reports appear.
	type view struct {
		rooms.RoomDetail
		Rates map[string]struct {
			BitrateIn  float64 `json:"bitrate_in"`
			BitrateOut float64 `json:"bitrate_out"`
		}
		Presence []protocol.Person
	}
	var v view
	if !waitFor(10*time.Second, func() bool {
		v = view{}
		call(t, "GET", s.url+"/admin/rooms/team", tok, nil, &v)
		var bobStats rooms.ParticipantStats
		for _, p := range v.Participants {
			if p.Identity == "bob" {
				bobStats = p
			}
		}
		return len(v.Tracks) == 2 && v.Tracks[0].PacketsIn > 0 && v.Tracks[1].PacketsOut > 0 &&
			bobStats.Reports && bobStats.RTTMs > 0 && v.Rates[ada.SID()].BitrateIn > 0 && len(v.Presence) == 2
	}) {
		t.Fatalf("room detail never showed traffic, reports and presence: %+v", v)
	}
	for _, p := range v.Participants {
		t.Logf("%s: in %d B, out %d B, loss %.3f, rtt %.2f ms, rate in %.0f bit/s out %.0f bit/s",
			p.Identity, p.BytesIn, p.BytesOut, p.Loss, p.RTTMs, v.Rates[p.SID].BitrateIn, v.Rates[p.SID].BitrateOut)
	}
	feed.wait(t, "a stats event with ada's bit rate", func(e sseEvent) bool {
		var d struct {
			Participants []struct {
				Identity  string  `json:"identity"`
				BitrateIn float64 `json:"bitrate_in"`
			} `json:"participants"`
		}
		_ = json.Unmarshal(e.event.Data, &d)
		return e.name == events.Stats && slices.ContainsFunc(d.Participants, func(p struct {
			Identity  string  `json:"identity"`
			BitrateIn float64 `json:"bitrate_in"`
		}) bool {
			return p.Identity == "ada" && p.BitrateIn > 0
		})
	})
	var total map[string]any
	call(t, "GET", s.url+"/admin/stats", tok, nil, &total)
	if total["participants"] != float64(2) || total["bitrate_in"].(float64) <= 0 {
		t.Fatalf("server stats: %v", total)
	}

	// The quality hook: an event on the feed, and the detail keeps it.
	reg.PublishQuality("team", bob.SID(), map[string]any{"mos": 4.2, "level": "good"})
	feed.wait(t, "a quality event", func(e sseEvent) bool {
		return e.name == events.Quality && strings.Contains(e.data, `"mos":4.2`) && strings.Contains(e.data, bob.SID())
	})
	call(t, "GET", s.url+"/admin/rooms/team", tok, nil, &v)
	if !slices.ContainsFunc(v.Participants, func(p rooms.ParticipantStats) bool { return p.Identity == "bob" && p.Quality != nil }) {
		t.Fatalf("room detail without bob's quality: %+v", v.Participants)
	}

	// Mute ada's audio: everyone hears of it.
	var muted map[string]any
	if code := call(t, "POST", s.url+"/admin/rooms/team/tracks/"+sids[0]+"/mute", tok, strings.NewReader(`{"muted":true}`), &muted); code != 200 {
		t.Fatalf("mute: %d %v", code, muted)
	}
	for _, p := range []*peer{ada, bob} {
		if !waitFor(5*time.Second, func() bool {
			return slices.ContainsFunc(p.eventsCopy(), func(ev client.Event) bool {
				m, ok := ev.Message.(*protocol.TrackMuted)
				return ok && m.Track == sids[0] && m.Muted
			})
		}) {
			t.Fatalf("%s: no track_muted: %s", p.identity, eventTypes(p))
		}
	}
	if code := call(t, "POST", s.url+"/admin/rooms/team/tracks/TR_nope/mute", tok, nil, &e); code != 404 {
		t.Fatalf("mute unknown track: %d", code)
	}

	// Remove bob: his connection ends with bye "removed".
	if code := call(t, "DELETE", s.url+"/admin/rooms/team/participants/"+bob.SID(), tok, nil, nil); code != 200 {
		t.Fatalf("remove: %d", code)
	}
	select {
	case <-bob.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("bob still connected after remove")
	}
	// The events reach bob's list on their own goroutine: wait for it.
	if !waitFor(2*time.Second, func() bool {
		return slices.ContainsFunc(bob.eventsCopy(), func(ev client.Event) bool {
			m, ok := ev.Message.(*protocol.Bye)
			return ok && m.Reason == "removed"
		})
	}) {
		t.Fatalf("bob: no bye removed: %s", eventTypes(bob))
	}
	feed.wait(t, "bob left, removed", func(e sseEvent) bool {
		return e.name == events.ParticipantLeft && strings.Contains(e.data, `"reason":"removed"`)
	})

	// Close the room: ada is sent away, the room ends.
	var closed map[string]any
	if code := call(t, "DELETE", s.url+"/admin/rooms/team", tok, nil, &closed); code != 200 || closed["removed"] != float64(1) {
		t.Fatalf("close: %d %v", code, closed)
	}
	select {
	case <-ada.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("ada still connected after close")
	}
	feed.wait(t, "room closed", func(e sseEvent) bool { return e.name == events.RoomClosed })
	call(t, "GET", s.url+"/admin/rooms", tok, nil, &list)
	if len(list.Rooms) != 0 {
		t.Fatalf("rooms after close: %+v", list)
	}
	var pres struct{ People []protocol.Person }
	call(t, "GET", s.url+"/admin/presence?identity=ada,bob&identity=zed", tok, nil, &pres)
	if len(pres.People) != 3 || pres.People[0].State != protocol.PresenceOffline {
		t.Fatalf("presence after close: %+v", pres)
	}
}
