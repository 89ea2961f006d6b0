// Package signaling owns the wire: the WebSocket endpoint and its JSON
// protocol (PROTOCOL.md), token checks, message size and rate limits, the
// dev-token route, health and metrics endpoints. It turns messages into
// calls on rooms and room events into messages.
package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/huddle-rtc/huddle/presence"
	"github.com/huddle-rtc/huddle/rooms"
	"github.com/huddle-rtc/huddle/signaling/auth"
	"github.com/huddle-rtc/huddle/signaling/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
)

// Limits of the protocol (PROTOCOL.md, "Transport").
const (
	MaxMessage     = 64 << 10
	maxFrame       = 1 << 20
	messageRate    = 50
	messageBurst   = 200
	joinTimeout    = 10 * time.Second
	pingInterval   = 10 * time.Second
	pongTimeout    = 30 * time.Second
	writeTimeout   = 10 * time.Second
	sendQueueLen   = 512
	devTokenTTL    = 6 * time.Hour
	maxRoomNameLen = 128
)

// Config sets up a Server.
type Config struct {
	Registry *rooms.Registry
	Verifier *auth.Verifier
	Logger   *slog.Logger
	// Dev enables the dev-token route, minting with DevKey/DevSecret.
	Dev       bool
	DevKey    string
	DevSecret string
	// Web serves the pages at "/" (optional).
	Web http.Handler
	// Presence tracks who is here; nil starts an in-process tracker that
	// Shutdown stops.
	Presence *presence.Tracker
	// StatsEvery is the period of the stats events (default 2 s; negative
	// turns them off). EventsHeartbeat is the period of the comment lines
	// on /events (default 15 s).
	StatsEvery      time.Duration
	EventsHeartbeat time.Duration
	// Placement, in cluster mode, decides which node serves a room; nil
	// serves every room here.
	Placement Placement
	// Collectors are more metrics for /metrics (the TURN server's, the
	// cluster's).
	Collectors []prometheus.Collector
}

// Placement decides where a room is served (implemented by
// rooms/cluster).
type Placement interface {
	// Place returns "" when this node serves room, or the base URL of
	// the node that does.
	Place(ctx context.Context, room string) (string, error)
}

// NodeLister is optionally implemented by a Placement (rooms/cluster
// does): the base URLs of the live nodes, sent in joined as nodes.
type NodeLister interface {
	NodeURLs(ctx context.Context) ([]string, error)
}

// placeTimeout bounds one placement decision.
const placeTimeout = 5 * time.Second

// Server is the signaling endpoint.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	metrics  *prometheus.Registry
	joinLat  prometheus.Histogram

	presence    *presence.Tracker
	ownPresence bool
	bg          background

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
	wg       sync.WaitGroup
}

// New returns a Server.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[*conn]struct{}{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		// Browsers from any origin may connect: the token is the
		// credential, not the cookie.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.metrics = prometheus.NewRegistry()
	s.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.joinLat = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "huddle_join_seconds",
		Help:    "Time from a join message to the joined reply.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	s.metrics.MustRegister(s.joinLat, registryCollector{cfg.Registry})
	s.presence = cfg.Presence
	if s.presence == nil {
		// The in-process default cannot fail.
		s.presence, _ = presence.New(context.Background(), presence.Config{Logger: s.log})
		s.ownPresence = true
	}
	s.startBackground()
	s.metrics.MustRegister(qualityCollector{cfg.Registry})
	s.metrics.MustRegister(cfg.Collectors...)
	return s
}

// Handler routes /ws, /healthz, /metrics, /dev/token (dev mode) and the
// web pages.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	if s.cfg.Dev {
		mux.HandleFunc("GET /dev/token", s.serveDevToken)
	}
	s.adminRoutes(mux)
	if s.cfg.Web != nil {
		mux.Handle("/", s.cfg.Web)
	}
	return mux
}

// serveDevToken mints a token for any room and name: dev mode only.
func (s *Server) serveDevToken(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	name := strings.TrimSpace(r.URL.Query().Get("name"))
	identity := r.URL.Query().Get("identity")
	if room == "" || len(room) > maxRoomNameLen {
		adminError(w, http.StatusBadRequest, protocol.CodeBadMessage, "room is required (at most %d bytes)", maxRoomNameLen)
		return
	}
	if name == "" {
		name = "guest"
	}
	if identity == "" {
		identity = strings.ToLower(strings.ReplaceAll(name, " ", "-")) + "-" + strings.ToLower(newSuffix())
	}
	grants := []string{protocol.GrantPublish, protocol.GrantSubscribe, protocol.GrantData, protocol.GrantEdit}
	if r.URL.Query().Get("admin") == "1" {
		// For the dashboard: room "*" is every room.
		grants = append(grants, protocol.GrantAdmin)
	}
	tok, err := auth.Mint(s.cfg.DevKey, s.cfg.DevSecret, auth.Token{
		Room: room, Identity: identity, Name: name, TTL: devTokenTTL,
		Grants: grants,
	}, time.Now())
	if err != nil {
		adminError(w, http.StatusInternalServerError, protocol.CodeInternal, "mint token: %v", err)
		return
	}
	writeJSON(w, map[string]string{"token": tok, "identity": identity, "room": room})
}

// Shutdown tells every client the server stops, ends their sessions and
// waits for the connections to finish, or for ctx.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.cfg.Registry.Close("shutdown")
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		s.stopBackground()
		if s.ownPresence {
			_ = s.presence.Close()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader wrote the error
	}
	c := &conn{
		srv:     s,
		ws:      ws,
		out:     make(chan any, sendQueueLen),
		closed:  make(chan struct{}),
		limiter: rate.NewLimiter(messageRate, messageBurst),
		log:     s.log.With("remote", r.RemoteAddr),
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.run()
}

// conn is one WebSocket client.
type conn struct {
	srv     *Server
	ws      *websocket.Conn
	out     chan any
	closed  chan struct{}
	once    sync.Once
	limiter *rate.Limiter
	log     *slog.Logger
	p       *rooms.Participant
	pres    *connPresence
}

// Send implements rooms.Sink: it queues msg; a client too slow to keep a
// queue of sendQueueLen messages is disconnected.
func (c *conn) Send(msg any) {
	select {
	case <-c.closed:
	case c.out <- msg:
	default:
		c.log.Warn("client too slow; disconnecting")
		c.Close()
	}
}

// Close implements rooms.Sink.
func (c *conn) Close() { c.once.Do(func() { close(c.closed) }) }

func (c *conn) run() {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.writeLoop()
	}()
	c.readLoop()
	c.Close()
	if c.p != nil {
		c.p.Leave("disconnected")
	}
	c.closePresence()
	wg.Wait()
	_ = c.ws.Close()
}

func (c *conn) writeLoop() {
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	write := func(msg any) bool {
		_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := c.ws.WriteJSON(msg); err != nil {
			c.Close()
			return false
		}
		return true
	}
	for {
		select {
		case msg := <-c.out:
			if !write(msg) {
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				c.Close()
				return
			}
		case <-c.closed:
			// Flush what is queued (a bye, a last error), then close.
			for {
				select {
				case msg := <-c.out:
					if !write(msg) {
						return
					}
				default:
					_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
					// Unblock the reader.
					_ = c.ws.SetReadDeadline(time.Now())
					return
				}
			}
		}
	}
}

func (c *conn) sendError(id, ref, code, format string, args ...any) {
	c.Send(&protocol.Error{Envelope: protocol.Envelope{Type: protocol.TypeError, ID: id}, Code: code, Message: fmt.Sprintf(format, args...), Ref: ref})
}

func (c *conn) readLoop() {
	c.ws.SetReadLimit(maxFrame)
	_ = c.ws.SetReadDeadline(time.Now().Add(joinTimeout))
	c.ws.SetPongHandler(func(string) error {
		if c.p != nil {
			return c.ws.SetReadDeadline(time.Now().Add(pongTimeout))
		}
		return nil
	})
	buf := make([]byte, MaxMessage+1)
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		n, err := io.ReadFull(r, buf)
		if err == nil {
			// Over the limit: drop the rest of the frame.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
			c.sendError("", "", protocol.CodeMessageTooLarge, "message is over %d bytes; dropped", MaxMessage)
			continue
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return
		}
		if c.p != nil {
			_ = c.ws.SetReadDeadline(time.Now().Add(pongTimeout))
		}
		if !c.limiter.Allow() {
			c.sendError("", "", protocol.CodeRateLimited, "over %d messages per second; dropped", messageRate)
			continue
		}
		if !c.handle(buf[:n]) {
			return
		}
	}
}

// handle processes one message; false ends the connection.
func (c *conn) handle(raw []byte) bool {
	env, err := protocol.Decode(raw)
	if err != nil {
		c.sendError("", "", protocol.CodeBadMessage, "not a JSON object: %v", err)
		return true
	}
	decode := func(v any) bool {
		if err := json.Unmarshal(raw, v); err != nil {
			c.sendError(env.ID, env.Type, protocol.CodeBadMessage, "bad %s message: %v", env.Type, err)
			return false
		}
		return true
	}
	if env.Type == protocol.TypePing {
		var m protocol.Ping
		if decode(&m) {
			c.Send(&protocol.Ping{Envelope: protocol.Envelope{Type: protocol.TypePong, ID: m.ID}, TS: m.TS})
		}
		return true
	}
	if env.Type == protocol.TypeJoin {
		var m protocol.Join
		if decode(&m) {
			c.join(&m)
		}
		return true
	}
	if !knownType(env.Type) {
		c.sendError(env.ID, env.Type, protocol.CodeUnknownType, "unknown message type %q", env.Type)
		return true
	}
	if c.p == nil {
		c.sendError(env.ID, env.Type, protocol.CodeNotJoined, "send join first")
		return true
	}
	if isPresenceType(env.Type) {
		c.presenceMessage(env, raw)
		return true
	}
	var herr error
	switch env.Type {
	case protocol.TypeOffer:
		var m protocol.SessionDescription
		if !decode(&m) {
			return true
		}
		if m.Transport != protocol.TransportPublish {
			herr = &protocol.Error{Code: protocol.CodeBadMessage, Message: "clients offer only on the publish transport"}
			break
		}
		var answer *protocol.SessionDescription
		if answer, herr = c.p.PublishOffer(&m); herr == nil {
			c.Send(answer)
		}
	case protocol.TypeAnswer:
		var m protocol.SessionDescription
		if !decode(&m) {
			return true
		}
		if m.Transport != protocol.TransportSubscribe {
			herr = &protocol.Error{Code: protocol.CodeBadMessage, Message: "clients answer only on the subscribe transport"}
			break
		}
		herr = c.p.SubscribeAnswer(m.SDP)
	case protocol.TypeCandidate:
		var m protocol.Candidate
		if !decode(&m) {
			return true
		}
		if m.Transport != protocol.TransportPublish && m.Transport != protocol.TransportSubscribe {
			herr = &protocol.Error{Code: protocol.CodeBadMessage, Message: "transport must be publish or subscribe"}
			break
		}
		herr = c.p.Candidate(m.Transport, m.Candidate)
	case protocol.TypeSubscribe, protocol.TypeUnsubscribe:
		var m protocol.Subscription
		if !decode(&m) {
			return true
		}
		if len(m.Tracks) == 0 || len(m.Tracks) > 256 {
			herr = &protocol.Error{Code: protocol.CodeBadMessage, Message: "tracks must list 1 to 256 track SIDs"}
		} else if env.Type == protocol.TypeSubscribe {
			herr = c.p.SubscribeWith(m.Tracks, rooms.SubscribeOptions{Quality: m.Quality, Paused: m.Paused, MaxWidth: m.MaxWidth, MaxHeight: m.MaxHeight})
		} else {
			herr = c.p.Unsubscribe(m.Tracks)
		}
	case protocol.TypeMute:
		var m protocol.Mute
		if decode(&m) {
			herr = c.p.Mute(m.Track, m.Muted)
		}
	case protocol.TypeUnpublish:
		var m protocol.Unpublish
		if decode(&m) {
			herr = c.p.Unpublish(m.Track)
		}
	case protocol.TypeUpdate:
		var m protocol.Update
		if decode(&m) {
			herr = c.p.Update(m.Name, m.Metadata)
		}
	case protocol.TypeLeave:
		c.Send(&protocol.Bye{Envelope: protocol.Envelope{Type: protocol.TypeBye}, Reason: "left"})
		c.p.Leave("left")
		c.Close()
		return false
	}
	if herr != nil {
		c.replyError(env.ID, env.Type, herr)
	}
	return true
}

// replyError sends err as an error message: a *protocol.Error keeps its
// code, anything else is internal.
func (c *conn) replyError(id, ref string, err error) {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		c.sendError(id, ref, pe.Code, "%s", pe.Message)
		return
	}
	c.sendError(id, ref, protocol.CodeInternal, "%v", err)
}

func knownType(t string) bool {
	switch t {
	case protocol.TypeOffer, protocol.TypeAnswer, protocol.TypeCandidate, protocol.TypeSubscribe,
		protocol.TypeUnsubscribe, protocol.TypeMute, protocol.TypeUnpublish, protocol.TypeUpdate, protocol.TypeLeave:
		return true
	}
	return isPresenceType(t)
}

func (c *conn) join(m *protocol.Join) {
	start := time.Now()
	if c.p != nil {
		c.sendError(m.ID, protocol.TypeJoin, protocol.CodeAlreadyJoined, "this connection has joined already")
		return
	}
	c.srv.mu.Lock()
	down := c.srv.shutdown
	c.srv.mu.Unlock()
	if down {
		c.sendError(m.ID, protocol.TypeJoin, protocol.CodeShuttingDown, "the server is shutting down")
		c.Close()
		return
	}
	claims, err := c.srv.cfg.Verifier.Verify(m.Token)
	switch {
	case errors.Is(err, auth.ErrExpired):
		c.sendError(m.ID, protocol.TypeJoin, protocol.CodeTokenExpired, "the token has expired")
		return
	case err != nil:
		c.sendError(m.ID, protocol.TypeJoin, protocol.CodeTokenInvalid, "the token is not valid: %v", err)
		return
	}
	if m.Room != "" && m.Room != claims.Room {
		c.sendError(m.ID, protocol.TypeJoin, protocol.CodeWrongRoom, "the token is for room %q, not %q", claims.Room, m.Room)
		return
	}
	if len(claims.Room) > maxRoomNameLen {
		c.sendError(m.ID, protocol.TypeJoin, protocol.CodeBadMessage, "room name over %d bytes", maxRoomNameLen)
		return
	}
	if !c.place(m.ID, claims.Room) {
		return
	}
	nodes := c.nodes()
	auto := m.AutoSubscribe == nil || *m.AutoSubscribe
	p, joined, err := c.srv.cfg.Registry.Join(rooms.JoinRequest{
		Room: claims.Room, Identity: claims.Identity, Name: claims.Name, Metadata: m.Metadata,
		Grants: claims.Grants, AutoSubscribe: auto,
	}, c)
	if err != nil {
		c.replyError(m.ID, protocol.TypeJoin, err)
		return
	}
	c.p = p
	c.log = c.log.With("room", claims.Room, "identity", claims.Identity)
	joined.ID = m.ID
	joined.Nodes = nodes
	c.Send(joined)
	_ = c.ws.SetReadDeadline(time.Now().Add(pongTimeout))
	p.Start()
	c.openPresence(claims.Identity, claims.Room, p.SID())
	c.srv.joinLat.Observe(time.Since(start).Seconds())
	c.log.Info("joined", "participant", p.SID())
}

// place asks the cluster where room is served: true to join here; else
// the client got a redirect (and the socket closes) or an unavailable
// error.
func (c *conn) place(id, room string) bool {
	pl := c.srv.cfg.Placement
	if pl == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), placeTimeout)
	url, err := pl.Place(ctx, room)
	cancel()
	if err != nil {
		c.log.Warn("placement", "room", room, "err", err)
		c.sendError(id, protocol.TypeJoin, protocol.CodeUnavailable, "the room cannot be placed now, retry shortly: %v", err)
		c.Close()
		return false
	}
	if url == "" {
		return true
	}
	c.Send(&protocol.Redirect{Envelope: protocol.Envelope{Type: protocol.TypeRedirect, ID: id}, URL: url, Room: room, Reason: "placement"})
	c.Close()
	return false
}

// nodes lists the cluster's live nodes for joined (nil outside cluster
// mode, or when Redis does not answer: the list is a hint).
func (c *conn) nodes() []string {
	nl, ok := c.srv.cfg.Placement.(NodeLister)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), placeTimeout)
	defer cancel()
	urls, err := nl.NodeURLs(ctx)
	if err != nil {
		c.log.Warn("list the cluster's nodes", "err", err)
		return nil
	}
	return urls
}

// registryCollector exports the registry's gauges and counters at scrape
// time, so the packet path only bumps per-track atomics.
type registryCollector struct{ reg *rooms.Registry }

var (
	descRooms        = prometheus.NewDesc("huddle_rooms", "Rooms open on this node.", nil, nil)
	descParticipants = prometheus.NewDesc("huddle_participants", "Participants in all rooms.", nil, nil)
	descTracks       = prometheus.NewDesc("huddle_published_tracks", "Published tracks in all rooms.", nil, nil)
	descFwdPackets   = prometheus.NewDesc("huddle_forwarded_packets_total", "RTP packets sent to subscribers.", nil, nil)
	descFwdBytes     = prometheus.NewDesc("huddle_forwarded_bytes_total", "RTP bytes sent to subscribers.", nil, nil)
)

func (c registryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRooms
	ch <- descParticipants
	ch <- descTracks
	ch <- descFwdPackets
	ch <- descFwdBytes
}

func (c registryCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.reg.Stats()
	ch <- prometheus.MustNewConstMetric(descRooms, prometheus.GaugeValue, float64(s.Rooms))
	ch <- prometheus.MustNewConstMetric(descParticipants, prometheus.GaugeValue, float64(s.Participants))
	ch <- prometheus.MustNewConstMetric(descTracks, prometheus.GaugeValue, float64(s.Tracks))
	ch <- prometheus.MustNewConstMetric(descFwdPackets, prometheus.CounterValue, float64(s.ForwardedPackets))
	ch <- prometheus.MustNewConstMetric(descFwdBytes, prometheus.CounterValue, float64(s.ForwardedBytes))
}

func newSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
