// Package protocol defines the JSON messages of the Huddle signaling
// protocol v1 (signaling/PROTOCOL.md is the specification) and the stable
// error codes. It is shared by the server, the Go client and the bots, and
// imports nothing of ours.
package protocol

import (
	"encoding/json"
	"fmt"
)

// Version is the protocol version spoken by this build.
const Version = 1

// Message types, client to server.
const (
	TypeJoin        = "join"
	TypeOffer       = "offer"
	TypeAnswer      = "answer"
	TypeCandidate   = "candidate"
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypeMute        = "mute"
	TypeUnpublish   = "unpublish"
	TypeUpdate      = "update"
	TypeLeave       = "leave"
	TypePing        = "ping"
)

// Message types, server to client.
const (
	TypeJoined             = "joined"
	TypeParticipantJoined  = "participant_joined"
	TypeParticipantLeft    = "participant_left"
	TypeParticipantUpdated = "participant_updated"
	TypeTrackPublished     = "track_published"
	TypeTrackUnpublished   = "track_unpublished"
	TypeTrackMuted         = "track_muted"
	TypePong               = "pong"
	TypeError              = "error"
	TypeBye                = "bye"
	// TypeOffer, TypeAnswer and TypeCandidate are used in both directions.
)

// Transports: every participant has two PeerConnections.
const (
	// TransportPublish carries the client's own tracks to the server; the
	// client offers.
	TransportPublish = "publish"
	// TransportSubscribe carries everyone else's tracks and the data
	// channels to the client; the server offers.
	TransportSubscribe = "subscribe"
)

// Track kinds and sources.
const (
	KindAudio = "audio"
	KindVideo = "video"

	SourceCamera      = "camera"
	SourceMicrophone  = "microphone"
	SourceScreen      = "screen"
	SourceScreenAudio = "screen_audio"
)

// Grants name what a token allows.
const (
	GrantPublish   = "publish"
	GrantSubscribe = "subscribe"
	GrantData      = "data"
	GrantEdit      = "edit"
	GrantAdmin     = "admin"
	GrantSuggest   = "suggest" // propose operations and comment, not edit
)

// AllGrants lists every grant, in a stable order.
var AllGrants = []string{GrantPublish, GrantSubscribe, GrantData, GrantEdit, GrantAdmin, GrantSuggest}

// Error codes. They are stable: clients may switch on them.
const (
	CodeBadMessage       = "bad_message"       // not JSON, or a field is missing or invalid
	CodeUnknownType      = "unknown_type"      // the type is not one this server knows
	CodeMessageTooLarge  = "message_too_large" // over the size limit; the message was dropped
	CodeRateLimited      = "rate_limited"      // too many messages; the message was dropped
	CodeNotJoined        = "not_joined"        // the message needs a joined session
	CodeAlreadyJoined    = "already_joined"    // a second join on one socket
	CodeTokenInvalid     = "token_invalid"     // malformed, forged, or signed with an unknown key
	CodeTokenExpired     = "token_expired"     // the token's expiry has passed
	CodeWrongRoom        = "wrong_room"        // the token is for another room
	CodePermissionDenied = "permission_denied" // the token lacks the grant
	CodeUnknownTrack     = "unknown_track"     // no such track in the room
	CodeBadSDP           = "bad_sdp"           // the offer, answer or candidate could not be applied
	CodeRoomFull         = "room_full"         // the room has its maximum of participants
	CodeShuttingDown     = "shutting_down"     // the server is stopping and takes no new joins
	CodeInternal         = "internal"          // a server fault; the session goes on if it can
)

// Envelope is the part every message has. ID is an optional request id
// chosen by the client; the server echoes it on the direct reply (joined,
// answer to a publish offer, pong, error).
type Envelope struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// Join asks to enter the room named by the token.
type Join struct {
	Envelope
	Token string `json:"token"`
	// Room, when set, must equal the token's room.
	Room string `json:"room,omitempty"`
	// AutoSubscribe subscribes to every published track (the default when
	// absent).
	AutoSubscribe *bool `json:"auto_subscribe,omitempty"`
	// Metadata is free application data shown to the others.
	Metadata string `json:"metadata,omitempty"`
}

// Participant describes one session in a room.
type Participant struct {
	SID      string   `json:"sid"`
	Identity string   `json:"identity"`
	Name     string   `json:"name"`
	Metadata string   `json:"metadata,omitempty"`
	JoinedAt int64    `json:"joined_at"` // Unix milliseconds
	Grants   []string `json:"grants,omitempty"`
}

// Track describes one published track.
type Track struct {
	SID         string `json:"sid"`
	Participant string `json:"participant"` // publisher's SID
	Identity    string `json:"identity"`    // publisher's identity
	Kind        string `json:"kind"`        // audio or video
	Source      string `json:"source"`      // camera, microphone, screen, screen_audio
	Muted       bool   `json:"muted"`
	Codec       string `json:"codec,omitempty"` // mime type, e.g. video/VP8
}

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ServerInfo tells the client what it talks to.
type ServerInfo struct {
	Version  string `json:"version"`
	Protocol int    `json:"protocol"`
	Node     string `json:"node,omitempty"`
}

// Joined answers a successful join.
type Joined struct {
	Envelope
	Room         string        `json:"room"`
	You          Participant   `json:"you"`
	Participants []Participant `json:"participants"`
	Tracks       []Track       `json:"tracks"`
	ICEServers   []ICEServer   `json:"ice_servers"`
	Server       ServerInfo    `json:"server"`
	// MaxDataMessage is the largest message accepted on the data channel,
	// in bytes.
	MaxDataMessage int `json:"max_data_message"`
	// Nodes, in cluster mode, are the base URLs of the live nodes, where a
	// client whose node dies can join again.
	Nodes []string `json:"nodes,omitempty"`
}

// TrackInfo is the publisher's description of a track it is about to send,
// keyed by the MediaStreamTrack id that appears in the offer's a=msid.
type TrackInfo struct {
	CID    string `json:"cid"`
	Kind   string `json:"kind"`
	Source string `json:"source"`
	Muted  bool   `json:"muted,omitempty"`
}

// TrackMapping tells a publisher which server track id its track got.
type TrackMapping struct {
	CID string `json:"cid"`
	SID string `json:"sid"`
}

// SessionDescription is an offer or an answer on one transport.
//
// Client to server: an offer on "publish" (with Tracks) or an answer on
// "subscribe". Server to client: an answer on "publish" (with Published) or
// an offer on "subscribe" (with Mids).
type SessionDescription struct {
	Envelope
	Transport string `json:"transport"`
	SDP       string `json:"sdp"`
	// Tracks describes the tracks in a publish offer.
	Tracks []TrackInfo `json:"tracks,omitempty"`
	// Published maps the client's track ids to server track ids, in the
	// answer to a publish offer.
	Published []TrackMapping `json:"published,omitempty"`
	// Mids maps each media section of a subscribe offer to the track it
	// carries.
	Mids map[string]string `json:"mids,omitempty"`
}

// ICECandidate mirrors RTCIceCandidateInit.
type ICECandidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// Candidate trickles one ICE candidate on one transport. A nil Candidate
// means the end of candidates.
type Candidate struct {
	Envelope
	Transport string        `json:"transport"`
	Candidate *ICECandidate `json:"candidate"`
}

// Subscription subscribes to or unsubscribes from tracks.
type Subscription struct {
	Envelope
	Tracks []string `json:"tracks"`
	// Quality, on subscribe, is the highest simulcast layer wanted: q, h
	// or f (the default). Subscribing again to a track changes it.
	Quality string `json:"quality,omitempty"`
	// Paused, on subscribe, asks for no media of these video tracks for
	// now (a hidden tile) while keeping the subscription; false resumes.
	Paused *bool `json:"paused,omitempty"`
	// MaxWidth and MaxHeight, on subscribe, are the size in device pixels
	// the video is shown at (0 or absent: any); the server then sends no
	// simulcast layer larger than the smallest that covers it. Given
	// together: either one present sets both.
	MaxWidth  *int `json:"max_width,omitempty"`
	MaxHeight *int `json:"max_height,omitempty"`
}

// Mute mutes or unmutes one of one's own tracks.
type Mute struct {
	Envelope
	Track string `json:"track"`
	Muted bool   `json:"muted"`
}

// Unpublish stops one of one's own tracks.
type Unpublish struct {
	Envelope
	Track string `json:"track"`
}

// Update changes one's own display name or metadata.
type Update struct {
	Envelope
	Name     *string `json:"name,omitempty"`
	Metadata *string `json:"metadata,omitempty"`
}

// Ping asks for a pong carrying the same TS.
type Ping struct {
	Envelope
	TS int64 `json:"ts,omitempty"`
}

// ParticipantEvent announces a participant joined or updated.
type ParticipantEvent struct {
	Envelope
	Participant Participant `json:"participant"`
}

// ParticipantLeft announces a participant left.
type ParticipantLeft struct {
	Envelope
	SID      string `json:"sid"`
	Identity string `json:"identity"`
	Reason   string `json:"reason"` // "left", "disconnected", "removed", "room_closed", "shutdown"
}

// TrackPublished announces a new track.
type TrackPublished struct {
	Envelope
	Track Track `json:"track"`
}

// TrackUnpublished announces a track went away.
type TrackUnpublished struct {
	Envelope
	Track       string `json:"track"`
	Participant string `json:"participant"`
}

// TrackMuted announces a track's mute state.
type TrackMuted struct {
	Envelope
	Track       string `json:"track"`
	Participant string `json:"participant"`
	Muted       bool   `json:"muted"`
}

// Error reports a refused message. The connection and the room stay up
// unless the code is a join refusal.
type Error struct {
	Envelope
	Code    string `json:"code"`
	Message string `json:"message"`
	// Ref is the type of the message that caused the error, when known.
	Ref string `json:"ref,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Bye tells the client the server ends the session.
type Bye struct {
	Envelope
	Reason string `json:"reason"` // "shutdown", "removed", "room_closed", "left"
}

// Data channel labels. The server creates them on the subscribe transport.
const (
	// ChannelData relays application messages (reliable, ordered).
	ChannelData = "data"
	// ChannelDoc carries the room document's operations (reliable, ordered).
	ChannelDoc = "doc"
	// ChannelCursor carries cursors and selections (unordered, no
	// retransmissions).
	ChannelCursor = "cursor"
)

// DataSend is what a client sends on the data channel.
type DataSend struct {
	// To names identities to deliver to; empty means everyone else in the room.
	To   []string        `json:"to,omitempty"`
	Data json.RawMessage `json:"data"`
}

// DataMessage is what a client receives on the data channel: either a
// relayed message (Type "message") or a refusal (Type "error").
type DataMessage struct {
	Type    string          `json:"type"` // "message" or "error"
	From    string          `json:"from,omitempty"`
	SID     string          `json:"sid,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
}

// Decode reads the envelope of raw and returns it.
func Decode(raw []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, err
	}
	return e, nil
}

// Presence (PROTOCOL.md, "Presence"). Client to server: heartbeat,
// activity, status, and presence as a query. Server to client: presence,
// with the people it concerns (a push when someone changes, or the reply to
// a query, which echoes its id).
const (
	TypeHeartbeat = "heartbeat"
	TypeActivity  = "activity"
	TypeStatus    = "status"
	TypePresence  = "presence"
)

// Presence states and well-known activities.
const (
	PresenceOnline  = "online"
	PresenceBusy    = "busy"
	PresenceAway    = "away"
	PresenceOffline = "offline"

	ActivityInCall        = "in_call"
	ActivityEditing       = "editing"
	ActivityScreenSharing = "screen_sharing"
	ActivityIdle          = "idle"
)

// HeartbeatInterval is how often clients should send heartbeat.
const HeartbeatInterval = 15 // seconds

// MaxPresenceQuery is the most identities one presence query may name.
const MaxPresenceQuery = 100

// Activity reports what this session is doing (in_call, editing,
// screen_sharing, idle, or another short string; empty for nothing).
type Activity struct {
	Envelope
	Activity string `json:"activity"`
}

// Status sets the person's explicit status for all their sessions: State
// busy or away is kept while they are active anywhere; empty or online lets
// their activity decide. Text is a free status text (at most 140
// characters).
type Status struct {
	Envelope
	State string `json:"state,omitempty"`
	Text  string `json:"text,omitempty"`
}

// PresenceQuery asks for the presence of Identities, or, when none are
// named, of everyone in Room (default: one's own room).
type PresenceQuery struct {
	Envelope
	Identities []string `json:"identities,omitempty"`
	Room       string   `json:"room,omitempty"`
}

// Person is one person's merged presence.
type Person struct {
	Identity string   `json:"identity"`
	State    string   `json:"state"` // online, busy, away or offline
	Text     string   `json:"text,omitempty"`
	Activity string   `json:"activity,omitempty"`
	Rooms    []string `json:"rooms,omitempty"`
	Sessions int      `json:"sessions"`
	LastSeen int64    `json:"last_seen,omitempty"` // Unix milliseconds
	Version  uint64   `json:"version"`
}

// PresenceUpdate carries people's presence from the server.
type PresenceUpdate struct {
	Envelope
	People []Person `json:"people"`
}

// Cluster mode (PROTOCOL.md, "Redirects").
const (
	// TypeRedirect, server to client, answers a join on a node that does
	// not serve the room, or moves a joined session (drain, lost lease):
	// the client connects to URL and joins again with the same token.
	TypeRedirect = "redirect"
	// CodeUnavailable refuses a join the cluster cannot place now (no
	// live node, the shared store unreachable); retry with backoff.
	CodeUnavailable = "unavailable"
)

// Redirect sends the client to the node that serves its room.
type Redirect struct {
	Envelope
	// URL is the base URL of the node (http or https; the client derives
	// its /ws address as from any server URL).
	URL  string `json:"url"`
	Room string `json:"room"`
	// Reason is "placement" (answer to join), "drain" or "moved".
	Reason string `json:"reason"`
}

// Simulcast qualities (layers), lowest first: the rid each layer is sent
// with.
const (
	QualityLow    = "q"
	QualityMedium = "h"
	QualityHigh   = "f"
)

// TypeQuality is the server's connection quality message.
const TypeQuality = "quality"

// Connection quality levels, best first.
const (
	LevelExcellent = "excellent"
	LevelGood      = "good"
	LevelPoor      = "poor"
	LevelLost      = "lost"
)

// MediaQuality is the quality of one kind of media of a participant.
type MediaQuality struct {
	Score float64 `json:"score"` // 1 to 5, MOS-like
	Level string  `json:"level"` // excellent, good, poor or lost
}

// Quality reports a participant's connection quality, to the participant
// and to the room, about every 2 s and only when it changed.
type Quality struct {
	Envelope
	Participant string `json:"participant"` // SID
	Identity    string `json:"identity"`
	// Score is the lowest of audio, video and uplink.
	Score float64 `json:"score"`
	Level string  `json:"level"`
	// Audio and Video are the downlink: what the participant receives.
	Audio *MediaQuality `json:"audio,omitempty"`
	Video *MediaQuality `json:"video,omitempty"`
	// Uplink is what the server receives of the participant's published
	// tracks; absent when nothing of them arrived in the interval.
	Uplink *UplinkQuality `json:"uplink,omitempty"`
	// Stats is only in the copy sent to the participant itself.
	Stats *ConnectionStats `json:"stats,omitempty"`
}

// UplinkQuality is what the server measures, as the receiver, of a
// participant's published media over the last interval.
type UplinkQuality struct {
	Score float64 `json:"score"` // the lowest of its tracks
	Level string  `json:"level"`
	// LossPct is the worst track's loss after retransmissions, percent;
	// JitterMs the worst interarrival jitter; RTTMs the round trip to the
	// publisher (ICE consent checks); Kbps the bitrate received of all
	// its tracks.
	LossPct  float64 `json:"loss_pct"`
	JitterMs float64 `json:"jitter_ms"`
	RTTMs    float64 `json:"rtt_ms"`
	Kbps     float64 `json:"kbps"`
	// Tracks has the same figures per published track, by track SID.
	Tracks map[string]TrackUplink `json:"tracks,omitempty"`
}

// TrackUplink is the uplink quality of one published track.
type TrackUplink struct {
	Score    float64 `json:"score"`
	Level    string  `json:"level"`
	LossPct  float64 `json:"loss_pct"`
	JitterMs float64 `json:"jitter_ms"`
	Kbps     float64 `json:"kbps"`
}

// ConnectionStats is what the server measures of one participant's
// downlink (what it receives).
type ConnectionStats struct {
	// EstimateKbps is the server's estimate of the bandwidth towards the
	// participant (GCC from transport-wide feedback), kbit/s.
	EstimateKbps int `json:"est_kbps"`
	// NACKs is how many packets the participant asked to be resent: the
	// sequence numbers in its NACKs, each counted once however often it
	// asked and whether or not the server could resend it. PLIs is how
	// many keyframes it asked for (PLI and FIR), in all.
	NACKs uint64 `json:"nacks"`
	PLIs  uint64 `json:"plis"`
	// Layers maps each received simulcast video track to the layer it
	// gets (q, h or f; "" while switching on or paused).
	Layers map[string]string `json:"layers,omitempty"`
	// AudioOnly lists video tracks withheld because the estimate is
	// below the configured floor (tracks without simulcast).
	AudioOnly []string `json:"audio_only,omitempty"`
	// LossPct is the worst loss in the latest receiver reports, net of
	// what the publisher's uplink lost already.
	LossPct  float64 `json:"loss_pct"`
	RTTMs    float64 `json:"rtt_ms"`
	JitterMs float64 `json:"jitter_ms"`
	// REMBKbps is the latest receiver estimated maximum bitrate the
	// participant sent (browsers may, besides transport-wide feedback),
	// kbit/s; absent when none arrived recently.
	REMBKbps int `json:"remb_kbps,omitempty"`
}

// TypeLayers is the server's hint to a publisher about which simulcast
// layers of a track anyone receives.
const TypeLayers = "layers"

// Layers tells a publisher which simulcast layers (rids) of its track to
// send; it may pause the others (RTCRtpEncodingParameters.active = false)
// until a later layers message lists them again.
type Layers struct {
	Envelope
	Track  string   `json:"track"`
	Active []string `json:"active"`
}
