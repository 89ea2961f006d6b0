package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/huddle-rtc/huddle/presence"
	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/rooms/events"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// Defaults of the event feed and the statistics sampler.
const (
	DefaultEventsHeartbeat = 15 * time.Second
	DefaultStatsEvery      = 2 * time.Second
	// sseBuffer is how many events may wait for one /events reader; a
	// reader further behind is dropped and reconnects with Last-Event-ID.
	sseBuffer = 1024
	// AllRooms is the room claim of an admin token valid for every room.
	AllRooms = "*"
)

// background is the server's own work: the presence feed and the
// statistics sampler, and the end signal of /events streams.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	rates map[string]pRate // by participant SID, from the last sample
	total serverStats
}

// pRate is a participant's bit rates over the last sampling period.
type pRate struct {
	at                   time.Time
	bytesIn, bytesOut    uint64
	bitrateIn, bitrateOt float64
}

// startBackground starts the presence feed (every presence change becomes
// an event) and the statistics sampler.
func (s *Server) startBackground() {
	b := &s.bg
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.rates = map[string]pRate{}
	bus := s.cfg.Registry.Events()
	w := s.presence.Watch(b.ctx, presence.Filter{Buffer: 1024})
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for e := range w.Events() {
			bus.Publish(events.Presence, "", e.Rooms, personOf(e.Presence))
		}
	}()
	every := s.cfg.StatsEvery
	if every == 0 {
		every = DefaultStatsEvery
	}
	if every > 0 {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-b.ctx.Done():
					return
				case now := <-tick.C:
					s.sampleStats(now)
				}
			}
		}()
	}
}

func (s *Server) stopBackground() {
	s.bg.cancel()
	s.bg.wg.Wait()
}

// participantRate is one participant in a stats event.
type participantRate struct {
	SID        string  `json:"sid"`
	Identity   string  `json:"identity"`
	Name       string  `json:"name"`
	BitrateIn  float64 `json:"bitrate_in"`  // bits per second it publishes
	BitrateOut float64 `json:"bitrate_out"` // bits per second it receives
	PacketsIn  uint64  `json:"packets_in"`
	PacketsOut uint64  `json:"packets_out"`
	Loss       float64 `json:"loss"`   // fraction its receiver reports give
	RTTMs      float64 `json:"rtt_ms"` // 0 when unknown
	Reports    bool    `json:"reports"`
}

// roomStats is the data of a room's stats event.
type roomStats struct {
	Scope        string            `json:"scope"` // "room"
	Participants []participantRate `json:"participants"`
	BitrateIn    float64           `json:"bitrate_in"`
	BitrateOut   float64           `json:"bitrate_out"`
}

// serverStats is the data of the server-wide stats event (room "").
type serverStats struct {
	Scope            string  `json:"scope"` // "server"
	Rooms            int     `json:"rooms"`
	Participants     int     `json:"participants"`
	Tracks           int     `json:"tracks"`
	BitrateIn        float64 `json:"bitrate_in"`
	BitrateOut       float64 `json:"bitrate_out"`
	ForwardedPackets uint64  `json:"forwarded_packets"`
	ForwardedBytes   uint64  `json:"forwarded_bytes"`
	Loss             float64 `json:"loss"`   // mean over participants with reports
	RTTMs            float64 `json:"rtt_ms"` // mean over participants with an RTT
}

func bitrate(now, then time.Time, bytes, prev uint64) float64 {
	dt := now.Sub(then).Seconds()
	if then.IsZero() || dt <= 0 || bytes < prev {
		return 0
	}
	return float64(bytes-prev) * 8 / dt
}

// sampleStats publishes one stats event per room and one for the server.
func (s *Server) sampleStats(now time.Time) {
	reg := s.cfg.Registry
	bus := reg.Events()
	b := &s.bg
	b.mu.Lock()
	prev := b.rates
	b.mu.Unlock()
	next := make(map[string]pRate, len(prev))
	st := reg.Stats()
	total := serverStats{Scope: "server", Rooms: st.Rooms, Participants: st.Participants, Tracks: st.Tracks,
		ForwardedPackets: st.ForwardedPackets, ForwardedBytes: st.ForwardedBytes}
	var lossSum, rttSum float64
	var nLoss, nRTT int
	for _, info := range reg.List() {
		d, err := reg.Detail(info.Name)
		if err != nil {
			continue // ended meanwhile
		}
		rs := roomStats{Scope: "room", Participants: make([]participantRate, 0, len(d.Participants))}
		for _, p := range d.Participants {
			old := prev[p.SID]
			r := pRate{at: now, bytesIn: p.BytesIn, bytesOut: p.BytesOut,
				bitrateIn: bitrate(now, old.at, p.BytesIn, old.bytesIn), bitrateOt: bitrate(now, old.at, p.BytesOut, old.bytesOut)}
			next[p.SID] = r
			rs.Participants = append(rs.Participants, participantRate{
				SID: p.SID, Identity: p.Identity, Name: p.Name, BitrateIn: r.bitrateIn, BitrateOut: r.bitrateOt,
				PacketsIn: p.PacketsIn, PacketsOut: p.PacketsOut, Loss: p.Loss, RTTMs: p.RTTMs, Reports: p.Reports,
			})
			rs.BitrateIn += r.bitrateIn
			rs.BitrateOut += r.bitrateOt
			if p.Reports {
				lossSum += p.Loss
				nLoss++
			}
			if p.RTTMs > 0 {
				rttSum += p.RTTMs
				nRTT++
			}
		}
		total.BitrateIn += rs.BitrateIn
		total.BitrateOut += rs.BitrateOut
		if len(rs.Participants) > 0 {
			bus.Publish(events.Stats, info.Name, nil, rs)
		}
	}
	if nLoss > 0 {
		total.Loss = lossSum / float64(nLoss)
	}
	if nRTT > 0 {
		total.RTTMs = rttSum / float64(nRTT)
	}
	bus.Publish(events.Stats, "", nil, total)
	b.mu.Lock()
	b.rates, b.total = next, total
	b.mu.Unlock()
}

// --- authentication ----------------------------------------------------------

// adminError writes a JSON error with a stable code.
func adminError(w http.ResponseWriter, status int, code, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// admin checks the request's admin token (Authorization: Bearer, or the
// token query parameter for EventSource, which cannot set headers) and
// returns the room it is limited to ("" for every room). It writes the
// error and returns false when the token does not admit.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) (scope string, ok bool) {
	tok := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		tok = strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	} else {
		tok = r.URL.Query().Get("token")
	}
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="huddle"`)
		adminError(w, http.StatusUnauthorized, protocol.CodeTokenInvalid, "an admin token is required (Authorization: Bearer <token>)")
		return "", false
	}
	claims, err := s.cfg.Verifier.Verify(tok)
	switch {
	case errors.Is(err, auth.ErrExpired):
		adminError(w, http.StatusUnauthorized, protocol.CodeTokenExpired, "the token has expired")
		return "", false
	case err != nil:
		adminError(w, http.StatusUnauthorized, protocol.CodeTokenInvalid, "the token is not valid: %v", err)
		return "", false
	case !claims.Has(protocol.GrantAdmin):
		adminError(w, http.StatusForbidden, protocol.CodePermissionDenied, "the token has no admin grant")
		return "", false
	}
	if claims.Room == AllRooms {
		return "", true
	}
	return claims.Room, true
}

// inScope reports whether room is visible with scope, writing a 403 if not.
func inScope(w http.ResponseWriter, scope, room string) bool {
	if scope != "" && scope != room {
		adminError(w, http.StatusForbidden, protocol.CodePermissionDenied, "the token is for room %q only", scope)
		return false
	}
	return true
}

func roomsError(w http.ResponseWriter, err error) {
	var pe *protocol.Error
	switch {
	case errors.Is(err, rooms.ErrNotFound):
		adminError(w, http.StatusNotFound, "not_found", "%v", err)
	case errors.As(err, &pe):
		adminError(w, http.StatusBadRequest, pe.Code, "%s", pe.Message)
	default:
		adminError(w, http.StatusInternalServerError, protocol.CodeInternal, "%v", err)
	}
}

// --- the admin API -------------------------------------------------------------

func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /events", s.serveEvents)
	mux.HandleFunc("GET /admin/rooms", s.adminRooms)
	mux.HandleFunc("GET /admin/rooms/{room}", s.adminRoom)
	mux.HandleFunc("DELETE /admin/rooms/{room}", s.adminCloseRoom)
	mux.HandleFunc("DELETE /admin/rooms/{room}/participants/{sid}", s.adminRemove)
	mux.HandleFunc("POST /admin/rooms/{room}/tracks/{sid}/mute", s.adminMute)
	mux.HandleFunc("GET /admin/presence", s.adminPresence)
	mux.HandleFunc("GET /admin/stats", s.adminStats)
}

func (s *Server) adminRooms(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	if !ok {
		return
	}
	list := s.cfg.Registry.List()
	if scope != "" {
		list = slices.DeleteFunc(list, func(ri rooms.RoomInfo) bool { return ri.Name != scope })
	}
	writeJSON(w, map[string]any{"rooms": list})
}

// roomView is GET /admin/rooms/{room}: the room, its participants with
// their bit rates and presence, its tracks.
type roomView struct {
	rooms.RoomDetail
	Rates    map[string]rateView `json:"rates"` // by participant SID
	Presence []protocol.Person   `json:"presence"`
}

type rateView struct {
	BitrateIn  float64 `json:"bitrate_in"`
	BitrateOut float64 `json:"bitrate_out"`
}

func (s *Server) adminRoom(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	room := r.PathValue("room")
	if !ok || !inScope(w, scope, room) {
		return
	}
	d, err := s.cfg.Registry.Detail(room)
	if err != nil {
		roomsError(w, err)
		return
	}
	v := roomView{RoomDetail: d, Rates: map[string]rateView{}, Presence: []protocol.Person{}}
	s.bg.mu.Lock()
	for _, p := range d.Participants {
		if rt, ok := s.bg.rates[p.SID]; ok {
			v.Rates[p.SID] = rateView{BitrateIn: rt.bitrateIn, BitrateOut: rt.bitrateOt}
		}
	}
	s.bg.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), presenceTimeout)
	defer cancel()
	if people, err := s.presence.Room(ctx, room); err == nil {
		for _, p := range people {
			v.Presence = append(v.Presence, personOf(p))
		}
	}
	writeJSON(w, v)
}

func (s *Server) adminCloseRoom(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	room := r.PathValue("room")
	if !ok || !inScope(w, scope, room) {
		return
	}
	n, err := s.cfg.Registry.CloseRoom(room)
	if err != nil {
		roomsError(w, err)
		return
	}
	writeJSON(w, map[string]any{"room": room, "removed": n})
}

func (s *Server) adminRemove(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	room := r.PathValue("room")
	if !ok || !inScope(w, scope, room) {
		return
	}
	if err := s.cfg.Registry.Remove(room, r.PathValue("sid")); err != nil {
		roomsError(w, err)
		return
	}
	writeJSON(w, map[string]any{"room": room, "removed": r.PathValue("sid")})
}

func (s *Server) adminMute(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	room := r.PathValue("room")
	if !ok || !inScope(w, scope, room) {
		return
	}
	body := struct {
		Muted *bool `json:"muted"`
	}{}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
			adminError(w, http.StatusBadRequest, protocol.CodeBadMessage, "body must be {\"muted\": true|false}: %v", err)
			return
		}
	}
	muted := body.Muted == nil || *body.Muted
	if err := s.cfg.Registry.MuteTrack(room, r.PathValue("sid"), muted); err != nil {
		roomsError(w, err)
		return
	}
	writeJSON(w, map[string]any{"room": room, "track": r.PathValue("sid"), "muted": muted})
}

func (s *Server) adminPresence(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	ctx, cancel := context.WithTimeout(r.Context(), presenceTimeout)
	defer cancel()
	var people []presence.Presence
	var err error
	switch ids := splitList(q["identity"]); {
	case len(ids) > protocol.MaxPresenceQuery:
		adminError(w, http.StatusBadRequest, protocol.CodeBadMessage, "at most %d identities", protocol.MaxPresenceQuery)
		return
	case len(ids) > 0:
		if scope != "" {
			adminError(w, http.StatusForbidden, protocol.CodePermissionDenied, "a room admin token queries its room only")
			return
		}
		for _, id := range ids {
			var p presence.Presence
			if p, err = s.presence.Get(ctx, id); err != nil {
				break
			}
			people = append(people, p)
		}
	case q.Get("room") != "":
		if !inScope(w, scope, q.Get("room")) {
			return
		}
		people, err = s.presence.Room(ctx, q.Get("room"))
	default:
		adminError(w, http.StatusBadRequest, protocol.CodeBadMessage, "give identity=… (repeatable) or room=…")
		return
	}
	if errors.Is(err, presence.ErrInvalid) {
		adminError(w, http.StatusBadRequest, protocol.CodeBadMessage, "%v", err)
		return
	} else if err != nil {
		adminError(w, http.StatusInternalServerError, protocol.CodeInternal, "%v", err)
		return
	}
	out := make([]protocol.Person, 0, len(people))
	for _, p := range people {
		out = append(out, personOf(p))
	}
	writeJSON(w, map[string]any{"people": out})
}

func (s *Server) adminStats(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	if !ok {
		return
	}
	if scope != "" {
		adminError(w, http.StatusForbidden, protocol.CodePermissionDenied, "server statistics need an admin token for every room (room \"*\")")
		return
	}
	s.bg.mu.Lock()
	total := s.bg.total
	s.bg.mu.Unlock()
	total.Scope = "server"
	writeJSON(w, total)
}

// splitList splits repeated and comma-separated query values.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
	}
	return out
}

// --- GET /events -----------------------------------------------------------------

// serveEvents streams the event bus as Server-Sent Events: filters room=
// and type= (repeatable or comma-separated), replay after Last-Event-ID
// (header, or the last_event_id parameter), a gap event when the replay is
// incomplete, a comment every heartbeat period.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	scope, ok := s.admin(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := events.Filter{Rooms: splitList(q["room"]), Types: splitList(q["type"])}
	if scope != "" {
		if len(f.Rooms) > 0 && !slices.Equal(f.Rooms, []string{scope}) {
			adminError(w, http.StatusForbidden, protocol.CodePermissionDenied, "the token is for room %q only", scope)
			return
		}
		f.Rooms = []string{scope}
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = q.Get("last_event_id")
	}
	var after uint64
	replay := lastID != ""
	if replay {
		var err error
		if after, err = strconv.ParseUint(lastID, 10, 64); err != nil {
			adminError(w, http.StatusBadRequest, protocol.CodeBadMessage, "Last-Event-ID %q is not an event id", lastID)
			return
		}
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	rep, sub := s.cfg.Registry.Events().Subscribe(f, replay, after, sseBuffer)
	defer sub.Close()
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 1000\n\n")) {
		return
	}
	if rep.Gap {
		gap, _ := json.Marshal(map[string]any{"last_event_id": after, "oldest_id": rep.Oldest,
			"message": "events after last_event_id are no longer kept; some were lost"})
		if !write(fmt.Appendf(nil, "event: gap\ndata: %s\n\n", gap)) {
			return
		}
	}
	for i := range rep.Events {
		if !write(sseFrame(&rep.Events[i])) {
			return
		}
	}
	every := s.cfg.EventsHeartbeat
	if every <= 0 {
		every = DefaultEventsHeartbeat
	}
	beat := time.NewTicker(every)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.bg.ctx.Done():
			return
		case <-beat.C:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
		case e, ok := <-sub.C:
			if !ok {
				// Too slow: the client reconnects with Last-Event-ID.
				return
			}
			if !write(sseFrame(&e)) {
				return
			}
		}
	}
}

// sseFrame encodes e as one SSE message: its id, its type as the event
// name, and the whole event as JSON data.
func sseFrame(e *events.Event) []byte {
	data, _ := json.Marshal(e)
	return fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", e.ID, e.Type, data)
}
