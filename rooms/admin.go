package rooms

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/huddle-rtc/huddle/rooms/events"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// Room returns the name of the participant's room.
func (p *Participant) Room() string { return p.room.name }

// Identity returns the participant's identity.
func (p *Participant) Identity() string { return p.info.Identity }

// Events returns the registry's event bus.
func (r *Registry) Events() *events.Bus { return r.cfg.Events }

// emit publishes a room event.
func (r *Registry) emit(typ, room string, data any) { r.cfg.Events.Publish(typ, room, nil, data) }

// roomEvent is the data of room_started and room_closed.
type roomEvent struct {
	Room string `json:"room"`
}

// participantLeft is the data of participant_left.
type participantLeft struct {
	SID      string `json:"sid"`
	Identity string `json:"identity"`
	Reason   string `json:"reason"`
}

// ErrNotFound is returned (wrapped) by the admin calls for an unknown
// room, participant or track.
var ErrNotFound = errors.New("rooms: not found")

// RoomInfo summarises one room.
type RoomInfo struct {
	Name         string `json:"name"`
	Participants int    `json:"participants"`
	Tracks       int    `json:"tracks"`
	CreatedAt    int64  `json:"created_at"` // Unix milliseconds
}

// TrackStats is one published track and its counters.
type TrackStats struct {
	protocol.Track
	Subscribers      int    `json:"subscribers"`
	PacketsIn        uint64 `json:"packets_in"`  // from the publisher
	BytesIn          uint64 `json:"bytes_in"`    //
	PacketsOut       uint64 `json:"packets_out"` // to all subscribers, retransmissions included
	BytesOut         uint64 `json:"bytes_out"`   //
	KeyframeRequests uint64 `json:"keyframe_requests"`
}

// ParticipantStats is one participant and its counters: what it publishes
// (In) and what it receives (Out), with the loss and round trip time its
// receiver reports give (means over the tracks it receives).
type ParticipantStats struct {
	protocol.Participant
	Published  []string `json:"published"`
	Subscribed int      `json:"subscribed"`
	PacketsIn  uint64   `json:"packets_in"`
	BytesIn    uint64   `json:"bytes_in"`
	PacketsOut uint64   `json:"packets_out"`
	BytesOut   uint64   `json:"bytes_out"`
	NACKs      uint64   `json:"nacks"`
	PLIs       uint64   `json:"plis"`
	// Reports tells whether Loss and RTTMs are known.
	Reports bool    `json:"reports"`
	Loss    float64 `json:"loss"`   // fraction 0..1
	RTTMs   float64 `json:"rtt_ms"` // 0 when unknown
	// Quality is the last quality event published for the participant.
	Quality any `json:"quality,omitempty"`
}

// RoomDetail is one room with its participants and tracks.
type RoomDetail struct {
	RoomInfo
	Participants []ParticipantStats `json:"participants"`
	Tracks       []TrackStats       `json:"tracks"`
}

// List returns the rooms, sorted by name.
func (r *Registry) List() []RoomInfo {
	r.mu.Lock()
	rms := make([]*Room, 0, len(r.rooms))
	for _, rm := range r.rooms {
		rms = append(rms, rm)
	}
	r.mu.Unlock()
	out := make([]RoomInfo, 0, len(rms))
	for _, rm := range rms {
		rm.mu.Lock()
		out = append(out, rm.infoLocked())
		rm.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b RoomInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (rm *Room) infoLocked() RoomInfo {
	return RoomInfo{Name: rm.name, Participants: len(rm.participants), Tracks: len(rm.tracks), CreatedAt: rm.created.UnixMilli()}
}

func (r *Registry) room(name string) *Room {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rooms[name]
}

// Detail returns a room's participants and tracks with their counters.
func (r *Registry) Detail(name string) (RoomDetail, error) {
	rm := r.room(name)
	if rm == nil {
		return RoomDetail{}, fmt.Errorf("%w: room %q", ErrNotFound, name)
	}
	rm.mu.Lock()
	d := RoomDetail{RoomInfo: rm.infoLocked(), Participants: []ParticipantStats{}, Tracks: []TrackStats{}}
	ps := make([]*Participant, 0, len(rm.participants))
	for _, p := range rm.participants {
		ps = append(ps, p)
	}
	published := map[*Participant][]TrackStats{}
	for _, t := range rm.tracks {
		ts := TrackStats{Track: t.info, Subscribers: t.up.Subscribers(), KeyframeRequests: t.up.KeyframeRequests()}
		ts.PacketsIn, ts.BytesIn, ts.PacketsOut, ts.BytesOut = t.up.Stats()
		d.Tracks = append(d.Tracks, ts)
		published[t.owner] = append(published[t.owner], ts)
	}
	rm.mu.Unlock()
	for _, p := range ps {
		s := ParticipantStats{Participant: p.publicInfo(), Published: []string{}}
		for _, ts := range published[p] {
			s.Published = append(s.Published, ts.SID)
			s.PacketsIn += ts.PacketsIn
			s.BytesIn += ts.BytesIn
		}
		slices.Sort(s.Published)
		var lossSum, rttSum float64
		var nLoss, nRTT int
		for _, sid := range p.peer.Subscribed() {
			dt := p.peer.DownTrack(sid)
			if dt == nil {
				continue
			}
			s.Subscribed++
			pk, b, nacks, plis := dt.Stats()
			s.PacketsOut += pk
			s.BytesOut += b
			s.NACKs += nacks
			s.PLIs += plis
			if rs := dt.ReceiverStats(); !rs.At.IsZero() {
				lossSum += rs.FractionLost
				nLoss++
				if rs.RTT > 0 {
					rttSum += float64(rs.RTT) / float64(time.Millisecond)
					nRTT++
				}
			}
		}
		if nLoss > 0 {
			s.Reports, s.Loss = true, lossSum/float64(nLoss)
		}
		if nRTT > 0 {
			s.RTTMs = rttSum / float64(nRTT)
		}
		s.Quality = r.quality.get(p.info.SID)
		d.Participants = append(d.Participants, s)
	}
	slices.SortFunc(d.Participants, func(a, b ParticipantStats) int { return strings.Compare(a.SID, b.SID) })
	slices.SortFunc(d.Tracks, func(a, b TrackStats) int { return strings.Compare(a.SID, b.SID) })
	return d, nil
}

// participant finds a participant of a room.
func (r *Registry) participant(room, sid string) (*Participant, error) {
	rm := r.room(room)
	if rm == nil {
		return nil, fmt.Errorf("%w: room %q", ErrNotFound, room)
	}
	rm.mu.Lock()
	p := rm.participants[sid]
	rm.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("%w: participant %q in room %q", ErrNotFound, sid, room)
	}
	return p, nil
}

// kick ends p's session: bye with reason, leave, close the connection.
func (p *Participant) kick(reason string) {
	p.sink.Send(&protocol.Bye{Envelope: protocol.Envelope{Type: protocol.TypeBye}, Reason: reason})
	p.Leave(reason)
	p.sink.Close()
}

// Remove disconnects a participant (bye and participant_left with reason
// "removed").
func (r *Registry) Remove(room, sid string) error {
	p, err := r.participant(room, sid)
	if err != nil {
		return err
	}
	p.kick("removed")
	return nil
}

// MuteTrack mutes or unmutes any track of a room, as its publisher would.
func (r *Registry) MuteTrack(room, sid string, muted bool) error {
	rm := r.room(room)
	if rm == nil {
		return fmt.Errorf("%w: room %q", ErrNotFound, room)
	}
	t := rm.track(sid)
	if t == nil {
		return fmt.Errorf("%w: track %q in room %q", ErrNotFound, sid, room)
	}
	return t.owner.Mute(sid, muted)
}

// CloseRoom disconnects everyone in a room (bye with reason
// "room_closed") and returns how many there were; the room ends with its
// last participant.
func (r *Registry) CloseRoom(room string) (int, error) {
	rm := r.room(room)
	if rm == nil {
		return 0, fmt.Errorf("%w: room %q", ErrNotFound, room)
	}
	rm.mu.Lock()
	ps := make([]*Participant, 0, len(rm.participants))
	for _, p := range rm.participants {
		ps = append(ps, p)
	}
	rm.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.kick("room_closed")
		}()
	}
	wg.Wait()
	return len(ps), nil
}

// PublishQuality publishes a quality event about participant sid of room
// (data is the scorer's JSON-encodable report) and keeps it as the
// participant's latest quality, shown by Detail. The quality package's
// adaptation loop calls it.
func (r *Registry) PublishQuality(room, sid string, data any) {
	r.quality.set(sid, data)
	r.cfg.Events.Publish(events.Quality, room, nil, map[string]any{"participant": sid, "quality": data})
}

// latestQuality keeps the last quality report per participant SID.
type latestQuality struct {
	mu sync.Mutex
	m  map[string]any
}

func (q *latestQuality) set(sid string, v any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.m == nil {
		q.m = map[string]any{}
	}
	q.m[sid] = v
}

func (q *latestQuality) get(sid string) any {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.m[sid]
}

func (q *latestQuality) forget(sid string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.m, sid)
}
