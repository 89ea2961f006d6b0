// Package client is the Go client of the Huddle signaling protocol
// (signaling/PROTOCOL.md): it joins a room over the WebSocket, answers the
// server's subscribe offers, publishes local tracks on its own
// PeerConnection, trickles candidates both ways, relays data-channel
// messages and hands room events to its caller. The bots and the server's
// integration tests use it.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/huddle-rtc/huddle/signaling/protocol"
)

// Limits of the client's side of the socket.
const (
	maxFrame      = 1 << 20 // the server never sends more; protects us
	writeTimeout  = 10 * time.Second
	defaultEvents = 256
)

// ErrClosed is returned by calls on a client whose connection has ended.
var ErrClosed = errors.New("client: connection closed")

// Options configure Dial. The zero value joins the token's room,
// subscribed to everything.
type Options struct {
	// Room, when set, must be the token's room.
	Room string
	// AutoSubscribe subscribes to every track in the room, now and later;
	// nil means true. new(false) joins without it (publisher bots).
	AutoSubscribe *bool
	// Metadata is shown to the others.
	Metadata string

	// API builds the PeerConnections; nil builds one with NewAPI and
	// LoopbackOnly. Many clients may share one API.
	API          *webrtc.API
	LoopbackOnly bool
	// ICEServers replaces the ice_servers of joined when not nil.
	ICEServers []webrtc.ICEServer
	// ICETransportPolicy is webrtc.ICETransportPolicyRelay to connect
	// only through the TURN servers of ice_servers; zero means all.
	ICETransportPolicy webrtc.ICETransportPolicy

	// OnTrack is called, on its own goroutine, for every track the server
	// sends. info.SID is the server track SID (from the offer's mids); the
	// other fields are filled when the track is known from joined or
	// track_published. The function should read the track until Read
	// fails; Close waits for it to return. When OnTrack is nil, tracks are
	// read and discarded.
	OnTrack func(info protocol.Track, track *webrtc.TrackRemote, recv *webrtc.RTPReceiver)
	// OnData is called for every message on the "data" channel, one at a
	// time, on Pion's goroutine: it must not block.
	OnData func(protocol.DataMessage)
	// OnChannel is called, on Pion's goroutine, for every data channel the
	// server opens other than "data" (for example "doc" and "cursor"); the
	// caller sets its handlers. Without it those channels are ignored.
	OnChannel func(*webrtc.DataChannel)
	// OnQuality is called, in the read loop, for every quality message
	// (the room's and this participant's own, which carries Stats); it
	// must not block.
	OnQuality func(*protocol.Quality)
	// OnLayers is called, in the read loop, when the server says which
	// simulcast layers of a published track anyone receives; it must not
	// block.
	OnLayers func(*protocol.Layers)

	// EventBuffer is the size of the Events channel (default 256). When it
	// is full, further events are dropped and counted (DroppedEvents).
	EventBuffer int

	// Dialer and Header configure the WebSocket handshake.
	Dialer *websocket.Dialer
	Header http.Header
	// Logger gets debug and warning lines; nil discards them.
	Logger *slog.Logger
	// HeartbeatInterval is how often the client sends a presence
	// heartbeat: 0 means every 15 s, a negative value never.
	HeartbeatInterval time.Duration
}

// Client is one session in one room. Its methods are safe for concurrent
// use.
type Client struct {
	url    string // the server this client joined, after redirects
	opts   Options
	log    *slog.Logger
	api    *webrtc.API
	conn   *websocket.Conn
	nextID atomic.Uint64

	writeMu sync.Mutex // one writer on the socket at a time

	// publishMu serialises publish negotiations (Publish, Unpublish).
	publishMu sync.Mutex

	events  chan Event // written by the read loop only; closed when it ends
	dropped atomic.Uint64

	readDone chan struct{} // closed when the read loop has ended
	byeSeen  chan struct{} // closed on bye
	dataOpen chan struct{} // closed when the data channel opens

	wg sync.WaitGroup // every goroutine the client starts or lends out

	mu        sync.Mutex
	closing   bool
	joiningID string // the join request's id
	readErr   error
	pending   map[string]chan reply
	joined    protocol.Joined
	moved     *protocol.Redirect        // a redirect received after joined
	tracks    map[string]protocol.Track // published tracks known in the room
	mids      map[string]string         // subscribe mid → track SID
	sub       *transport
	pub       *transport
	outgoing  []*localTrack // published (or being published) tracks
	data      *webrtc.DataChannel
	byeOnce   sync.Once
	dataOnce  sync.Once
}

// reply is what the read loop hands to a waiting request.
type reply struct {
	joined   *protocol.Joined
	answer   *protocol.SessionDescription
	pong     *protocol.Ping
	presence *protocol.PresenceUpdate
	err      error // a *protocol.Error from the server, or a local failure
}

// maxRedirects bounds the redirects Dial follows.
const maxRedirects = 5

// RedirectError is what a join that a cluster node redirected returns
// from one dial; Dial follows it.
type RedirectError struct{ protocol.Redirect }

func (e *RedirectError) Error() string {
	return fmt.Sprintf("redirected to %s (%s)", e.URL, e.Reason)
}

// Dial connects to the server at rawURL (http(s)://host:port, or a
// ws(s):// URL), joins with token and waits for joined. A node of a
// cluster that does not serve the room answers with a redirect, which
// Dial follows (up to 5). A refusal is returned as a wrapped
// *protocol.Error (use errors.As to read its Code).
func Dial(ctx context.Context, rawURL, token string, opts Options) (*Client, error) {
	for range maxRedirects {
		c, err := dialOnce(ctx, rawURL, token, opts)
		var re *RedirectError
		if !errors.As(err, &re) {
			return c, err
		}
		if re.URL == "" {
			return nil, err
		}
		rawURL = re.URL
	}
	return nil, fmt.Errorf("client: more than %d redirects", maxRedirects)
}

func dialOnce(ctx context.Context, rawURL, token string, opts Options) (*Client, error) {
	wsURL, err := WebSocketURL(rawURL)
	if err != nil {
		return nil, err
	}
	api := opts.API
	if api == nil {
		if api, err = NewAPI(APIOptions{LoopbackOnly: opts.LoopbackOnly}); err != nil {
			return nil, err
		}
	}
	dialer := opts.Dialer
	if dialer == nil {
		dialer = websocket.DefaultDialer
	}
	conn, resp, err := dialer.DialContext(ctx, wsURL, opts.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("client: dial %s: %w (HTTP %s)", wsURL, err, resp.Status)
		}
		return nil, fmt.Errorf("client: dial %s: %w", wsURL, err)
	}
	conn.SetReadLimit(maxFrame)

	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := opts.EventBuffer
	if n <= 0 {
		n = defaultEvents
	}
	c := &Client{
		url:      rawURL,
		opts:     opts,
		log:      log,
		api:      api,
		conn:     conn,
		events:   make(chan Event, n),
		readDone: make(chan struct{}),
		byeSeen:  make(chan struct{}),
		dataOpen: make(chan struct{}),
		pending:  make(map[string]chan reply),
		tracks:   make(map[string]protocol.Track),
		mids:     make(map[string]string),
	}
	c.goOwned(c.readLoop)

	id := c.newID()
	c.mu.Lock()
	c.joiningID = id
	c.mu.Unlock()
	join := protocol.Join{
		Envelope:      protocol.Envelope{Type: protocol.TypeJoin, ID: id},
		Token:         token,
		Room:          opts.Room,
		AutoSubscribe: opts.AutoSubscribe,
		Metadata:      opts.Metadata,
	}
	r, err := c.roundTrip(ctx, id, join, nil)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("client: join: %w", err)
	}
	if r.joined == nil {
		_ = c.Close()
		return nil, errors.New("client: join: no joined message")
	}
	if every := opts.HeartbeatInterval; every >= 0 {
		if every == 0 {
			every = protocol.HeartbeatInterval * time.Second
		}
		c.goOwned(func() { c.heartbeatLoop(every) })
	}
	return c, nil
}

// WebSocketURL turns http(s)://host:port[/prefix] into
// ws(s)://host:port[/prefix]/ws; a ws(s) URL is kept, with /ws added when
// it has no path.
func WebSocketURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("client: bad server URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
		u.Path = strings.TrimSuffix(u.Path, "/") + "/ws"
	case "https":
		u.Scheme = "wss"
		u.Path = strings.TrimSuffix(u.Path, "/") + "/ws"
	case "ws", "wss":
		if u.Path == "" || u.Path == "/" {
			u.Path = "/ws"
		}
	default:
		return "", fmt.Errorf("client: bad server URL %q: scheme must be http, https, ws or wss", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("client: bad server URL %q: no host", raw)
	}
	return u.String(), nil
}

// Joined returns the server's answer to join.
func (c *Client) Joined() protocol.Joined {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined
}

// URL returns the URL of the server this client joined (the node a
// cluster redirected it to).
func (c *Client) URL() string { return c.url }

// Moved returns the redirect the server sent after joined (drain, the
// room moved), or nil. The session has ended then: dial again (with the
// redirect's URL) to go on.
func (c *Client) Moved() *protocol.Redirect {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.moved
}

// SID returns this session's participant SID.
func (c *Client) SID() string { return c.Joined().You.SID }

// Tracks returns the tracks published in the room as this client knows
// them (from joined and later events), including its own.
func (c *Client) Tracks() []protocol.Track {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]protocol.Track, 0, len(c.tracks))
	for _, t := range c.tracks {
		out = append(out, t)
	}
	return out
}

// Track returns what is known of the track sid.
func (c *Client) Track(sid string) (protocol.Track, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tracks[sid]
	return t, ok
}

// Events delivers room events in order. The channel is closed when the
// connection ends. The client never blocks on it: when the caller falls
// more than EventBuffer events behind, newer events are dropped and
// counted by DroppedEvents.
func (c *Client) Events() <-chan Event { return c.events }

// DroppedEvents returns how many events were dropped because Events was
// full.
func (c *Client) DroppedEvents() uint64 { return c.dropped.Load() }

// Done is closed when the connection to the server has ended.
func (c *Client) Done() <-chan struct{} { return c.readDone }

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// Subscribe asks for tracks (when not auto-subscribed). Refusals arrive as
// error events.
func (c *Client) Subscribe(sids ...string) error {
	return c.send(protocol.Subscription{Envelope: c.envelope(protocol.TypeSubscribe), Tracks: sids})
}

// SetQuality changes subscriptions to video tracks: quality (q, h, f;
// empty keeps it) is the highest simulcast layer wanted, paused (nil keeps
// it) stops or resumes their media.
func (c *Client) SetQuality(quality string, paused *bool, sids ...string) error {
	return c.send(protocol.Subscription{Envelope: c.envelope(protocol.TypeSubscribe), Tracks: sids, Quality: quality, Paused: paused})
}

// SetVideoSize tells the server the size in pixels the video of these
// tracks is shown at (0, 0: any), so that it sends no simulcast layer
// larger than what covers it.
func (c *Client) SetVideoSize(width, height int, sids ...string) error {
	return c.send(protocol.Subscription{Envelope: c.envelope(protocol.TypeSubscribe), Tracks: sids, MaxWidth: &width, MaxHeight: &height})
}

// Unsubscribe stops tracks.
func (c *Client) Unsubscribe(sids ...string) error {
	return c.send(protocol.Subscription{Envelope: c.envelope(protocol.TypeUnsubscribe), Tracks: sids})
}

// Update changes this participant's display name and/or metadata; nil
// leaves a field as it is.
func (c *Client) Update(name, metadata *string) error {
	return c.send(protocol.Update{Envelope: c.envelope(protocol.TypeUpdate), Name: name, Metadata: metadata})
}

// Ping sends a ping and returns the round-trip time to its pong.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	id := c.newID()
	start := time.Now()
	if _, err := c.roundTrip(ctx, id, protocol.Ping{Envelope: protocol.Envelope{Type: protocol.TypePing, ID: id}, TS: start.UnixMilli()}, nil); err != nil {
		return 0, fmt.Errorf("client: ping: %w", err)
	}
	return time.Since(start), nil
}

// Leave says goodbye, waits for the server's bye (or the end of the
// connection, or ctx) and closes the client.
func (c *Client) Leave(ctx context.Context) error {
	err := c.send(protocol.Envelope{Type: protocol.TypeLeave})
	if err == nil {
		select {
		case <-c.byeSeen:
		case <-c.readDone:
		case <-ctx.Done():
			err = fmt.Errorf("client: leave: waiting for bye: %w", ctx.Err())
		}
	}
	return errors.Join(err, c.Close())
}

// Close ends the session at once: the socket, both PeerConnections, and
// every goroutine the client started or lent to callbacks (OnTrack
// functions must return once their track's Read fails). It is safe to call
// more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.wg.Wait()
		return nil
	}
	c.closing = true
	sub, pub := c.sub, c.pub
	c.mu.Unlock()

	var errs []error
	c.writeMu.Lock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.writeMu.Unlock()
	if err := c.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close socket: %w", err))
	}
	for _, t := range []*transport{sub, pub} {
		if t != nil {
			if err := t.pc.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s transport: %w", t.name, err))
			}
		}
	}
	c.wg.Wait()
	return errors.Join(errs...)
}

// goOwned runs f on a goroutine that Close waits for. It returns false,
// and does not run f, once the client is closing.
func (c *Client) goOwned(f func()) bool {
	if !c.enter() {
		return false
	}
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// enter counts the calling goroutine as one Close must wait for; the
// caller must call c.wg.Done when enter returned true.
func (c *Client) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	return true
}

func (c *Client) newID() string { return "c" + strconv.FormatUint(c.nextID.Add(1), 10) }

// envelope returns an envelope with a fresh id, so that an error reply can
// be matched to the message by the caller (Event.Message.(*protocol.Error).ID).
func (c *Client) envelope(typ string) protocol.Envelope {
	return protocol.Envelope{Type: typ, ID: c.newID()}
}

// send writes one message.
func (c *Client) send(msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("client: encode: %w", err)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	select {
	case <-c.readDone:
		return ErrClosed
	default:
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}

// roundTrip sends msg, whose id is id, runs after (when not nil) once it is
// written, and waits for the reply with that id.
func (c *Client) roundTrip(ctx context.Context, id string, msg any, after func()) (reply, error) {
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return reply{}, err
	}
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	if err := c.send(msg); err != nil {
		return reply{}, err
	}
	if after != nil {
		after()
	}
	select {
	case r := <-ch:
		return r, r.err
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

// resolve hands r to the request waiting for id; it reports whether one
// was.
func (c *Client) resolve(id string, r reply) bool {
	if id == "" {
		return false
	}
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ok {
		ch <- r // buffered, and each id is resolved once
	}
	return ok
}
