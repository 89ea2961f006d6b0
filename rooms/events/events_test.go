package events

import (
	"encoding/json"
	"testing"
)

func TestReplayAndGap(t *testing.T) {
	b := New(8)
	var ids []uint64
	for i := range 20 {
		room := "a"
		if i%2 == 1 {
			room = "b"
		}
		ids = append(ids, b.Publish(ParticipantJoined, room, nil, map[string]int{"i": i}).ID)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			t.Fatalf("ids not consecutive: %v", ids)
		}
	}
	// Inside the buffer: exactly the events after the id.
	r, s := b.Subscribe(Filter{}, true, ids[14], 4)
	defer s.Close()
	if r.Gap || len(r.Events) != 5 || r.Events[0].ID != ids[15] || r.Events[4].ID != ids[19] {
		t.Fatalf("replay after #14: gap=%v events=%d", r.Gap, len(r.Events))
	}
	// Just at the edge: the oldest held is #12, so after #11 is complete.
	r, s2 := b.Subscribe(Filter{}, true, ids[11], 4)
	s2.Close()
	if r.Gap || len(r.Events) != 8 {
		t.Fatalf("replay after #11: gap=%v events=%d", r.Gap, len(r.Events))
	}
	// Too old: a gap, and everything held.
	r, s3 := b.Subscribe(Filter{Rooms: []string{"a"}}, true, ids[3], 4)
	s3.Close()
	if !r.Gap || r.Oldest != ids[12] || len(r.Events) != 4 {
		t.Fatalf("replay after #3 of room a: gap=%v oldest=%d events=%d", r.Gap, r.Oldest, len(r.Events))
	}
	// An id from the future (another run): a gap.
	r, s4 := b.Subscribe(Filter{}, true, ids[19]+100, 4)
	s4.Close()
	if !r.Gap {
		t.Fatal("future id: no gap")
	}
	// Live events after the replay, filtered; a slow subscriber is dropped.
	e := b.Publish(TrackMuted, "b", nil, nil)
	if got := <-s.C; got.ID != e.ID {
		t.Fatalf("live event %d, want %d", got.ID, e.ID)
	}
	for range 5 {
		b.Publish(Presence, "", []string{"a", "c"}, nil)
	}
	n := 0
	for range s.C {
		n++
	}
	if n != 4 || !s.Lagged() {
		t.Fatalf("slow subscriber got %d events, lagged=%v; want 4 and dropped", n, s.Lagged())
	}
}

func TestFilter(t *testing.T) {
	e := Event{Type: ParticipantLeft, Room: "x"}
	p := Event{Type: Presence, Rooms: []string{"x", "y"}}
	cases := []struct {
		f    Filter
		e    *Event
		want bool
	}{
		{Filter{}, &e, true},
		{Filter{Types: []string{"participant"}}, &e, true},
		{Filter{Types: []string{"participant_joined"}}, &e, false},
		{Filter{Types: []string{"participant_left"}, Rooms: []string{"x"}}, &e, true},
		{Filter{Rooms: []string{"y"}}, &e, false},
		{Filter{Rooms: []string{"y"}}, &p, true},
		{Filter{Types: []string{"presence"}, Rooms: []string{"z"}}, &p, false},
	}
	for i, c := range cases {
		if got := c.f.Match(c.e); got != c.want {
			t.Errorf("case %d: %+v matches %s = %v", i, c.f, c.e.Type, got)
		}
	}
	b := New(0)
	ev := b.Publish(Stats, "", nil, func() {}) // does not encode
	if string(ev.Data) != "null" {
		t.Fatalf("unencodable data: %s", ev.Data)
	}
	if _, err := json.Marshal(ev); err != nil {
		t.Fatal(err)
	}
	b.Close()
	_, s := b.Subscribe(Filter{}, false, 0, 1)
	if _, ok := <-s.C; ok {
		t.Fatal("subscription to a closed bus is open")
	}
}

// BenchmarkPublish: one event to 10 subscribers that keep up.
func BenchmarkPublish(b *testing.B) {
	bus := New(0)
	done := make(chan struct{})
	for range 10 {
		_, s := bus.Subscribe(Filter{}, false, 0, 4096)
		go func() {
			for range s.C {
			}
			done <- struct{}{}
		}()
	}
	data := map[string]any{"sid": "PA_X", "identity": "ada", "name": "Ada"}
	b.ReportAllocs()
	for b.Loop() {
		bus.Publish(ParticipantJoined, "room", nil, data)
	}
	bus.Close()
	for range 10 {
		<-done
	}
}
