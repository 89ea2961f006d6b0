package presence

import (
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"
)

// State is how present a person is.
type State string

// The states, from most to least present.
const (
	Online  State = "online"
	Busy    State = "busy"
	Away    State = "away"
	Offline State = "offline"
)

// Activity is what a session is doing. Besides the constants below, any
// other short string (at most MaxActivityLen bytes) is accepted as is.
type Activity string

// Well-known activities.
const (
	NoActivity    Activity = ""
	InCall        Activity = "in_call"
	Editing       Activity = "editing"
	ScreenSharing Activity = "screen_sharing"
	// Idle means the client saw no input for a while: the session counts
	// as away until it reports another activity.
	Idle Activity = "idle"
)

// Limits on what clients may send.
const (
	MaxNameLen     = 256 // bytes in an identity, a session id or a room name
	MaxTextLen     = 140 // characters in a status text
	MaxActivityLen = 64  // bytes in an activity
	MaxRooms       = 64  // rooms per session
)

// Errors returned (wrapped) by this package.
var (
	ErrInvalid = errors.New("presence: invalid argument")
	ErrClosed  = errors.New("presence: closed")
)

// Status is what a person chose to show: an explicit state and a free text.
type Status struct {
	// State is Busy or Away to keep that state while the person is active
	// anywhere, or empty (Online is accepted and stored as empty) to let
	// activity decide.
	State State  `json:"state,omitempty"`
	Text  string `json:"text,omitempty"`
}

// Presence is the merged view of one person.
type Presence struct {
	Identity string   `json:"identity"`
	State    State    `json:"state"`
	Text     string   `json:"text,omitempty"`
	Activity Activity `json:"activity,omitempty"`
	// Rooms the person is in through any session, sorted.
	Rooms []string `json:"rooms,omitempty"`
	// Sessions is the number of live sessions.
	Sessions int `json:"sessions"`
	// LastSeen is the last heartbeat or report of any session; zero if never seen.
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Version grows with every stored change of this person; an event with
	// a lower version than one already seen is stale.
	Version uint64 `json:"version"`
}

// Event tells that a person's presence changed.
type Event struct {
	Presence Presence `json:"presence"`
	// Rooms to notify, sorted: the person's rooms and the rooms they just left.
	Rooms []string `json:"rooms,omitempty"`
	// At is when the change was computed, by the publishing node's clock.
	At time.Time `json:"at"`
}

// SessionInfo is one session as a Backend stores it.
type SessionInfo struct {
	ID       string   `json:"id"`
	Identity string   `json:"identity"`
	Node     string   `json:"node,omitempty"`
	Rooms    []string `json:"rooms,omitempty"` // sorted, unique
	Activity Activity `json:"activity,omitempty"`
	// LastSeen is the session's last heartbeat or report.
	LastSeen time.Time `json:"last_seen"`
	// Deadline is when the session is gone unless renewed: LastSeen plus
	// OfflineAfter.
	Deadline time.Time `json:"deadline"`
}

// Record is everything a Backend stores about one person.
type Record struct {
	Identity string
	Status   Status
	LastSeen time.Time
	Version  uint64
	// Sessions, sorted by ID; they may include sessions past their deadline
	// that were not reaped yet.
	Sessions []SessionInfo
}

// liveness is the state of one session at some instant.
type liveness int

const (
	gone liveness = iota
	idle
	active
)

func sessionLiveness(s SessionInfo, now time.Time, awayAfter time.Duration) liveness {
	switch {
	case !now.Before(s.Deadline):
		return gone
	case s.Activity == Idle || now.Sub(s.LastSeen) >= awayAfter:
		return idle
	default:
		return active
	}
}

// activityRank orders activities by how much they tell about the person.
func activityRank(a Activity) int {
	switch a {
	case ScreenSharing:
		return 4
	case InCall:
		return 3
	case Editing:
		return 2
	case NoActivity:
		return 0
	default:
		return 1
	}
}

// merge computes a person's presence at now from what is stored.
func merge(r Record, now time.Time, awayAfter time.Duration) Presence {
	p := Presence{
		Identity: r.Identity,
		State:    Offline,
		Text:     r.Status.Text,
		LastSeen: r.LastSeen,
		Version:  r.Version,
	}
	var best *SessionInfo
	actives := 0
	for i := range r.Sessions {
		s := &r.Sessions[i]
		l := sessionLiveness(*s, now, awayAfter)
		if l == gone {
			continue
		}
		p.Sessions++
		p.Rooms = append(p.Rooms, s.Rooms...)
		if s.LastSeen.After(p.LastSeen) {
			p.LastSeen = s.LastSeen
		}
		if l != active {
			continue
		}
		actives++
		if best == nil || activityRank(s.Activity) > activityRank(best.Activity) ||
			activityRank(s.Activity) == activityRank(best.Activity) && s.LastSeen.After(best.LastSeen) {
			best = s
		}
	}
	slices.Sort(p.Rooms)
	p.Rooms = slices.Compact(p.Rooms)
	switch {
	case p.Sessions == 0:
		p.Rooms = nil
	case actives == 0:
		p.State, p.Activity = Away, Idle
	default:
		p.Activity = best.Activity
		switch r.Status.State {
		case Busy, Away:
			p.State = r.Status.State
		default:
			p.State = Online
		}
	}
	return p
}

// sameView reports whether a and b look the same to a watcher: everything
// but LastSeen and Version.
func sameView(a, b Presence) bool {
	return a.Identity == b.Identity && a.State == b.State && a.Text == b.Text &&
		a.Activity == b.Activity && a.Sessions == b.Sessions && slices.Equal(a.Rooms, b.Rooms)
}

func checkName(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalid, kind)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, kind, MaxNameLen)
	}
	return checkText(kind, s)
}

func checkText(kind, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, kind)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s contains a control character", ErrInvalid, kind)
		}
	}
	return nil
}

func checkActivity(a Activity) error {
	if len(a) > MaxActivityLen {
		return fmt.Errorf("%w: activity longer than %d bytes", ErrInvalid, MaxActivityLen)
	}
	return checkText("activity", string(a))
}

// normalStatus validates st and returns it as stored.
func normalStatus(st Status) (Status, error) {
	switch st.State {
	case "", Online:
		st.State = ""
	case Busy, Away:
	default:
		return Status{}, fmt.Errorf("%w: status state %q (want online, busy or away)", ErrInvalid, st.State)
	}
	if n := utf8.RuneCountInString(st.Text); n > MaxTextLen {
		return Status{}, fmt.Errorf("%w: status text of %d characters (at most %d)", ErrInvalid, n, MaxTextLen)
	}
	if err := checkText("status text", st.Text); err != nil {
		return Status{}, err
	}
	return st, nil
}

// union returns the sorted, unique elements of a and b.
func union(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	slices.Sort(out)
	return slices.Compact(out)
}
