package doc

import (
	"context"
	"maps"
	"sort"
	"sync"
	"time"
)

// Action says what produced a log entry.
type Action string

// Actions of log entries.
const (
	ActionEdit    Action = "edit"    // an operation a client submitted
	ActionUndo    Action = "undo"    // Undo: reverts the client's entry Ref
	ActionRedo    Action = "redo"    // Redo: reverts the undo entry Ref
	ActionRestore Action = "restore" // Restore: brings back the text of version Ref
)

// Entry is one committed version in a document's operation log.
type Entry struct {
	Version uint64    `json:"v"` // the version this entry produced; the first is 1
	Client  string    `json:"c"` // the author's client id
	Seq     uint64    `json:"s"` // the author's sequence number for the request
	Time    time.Time `json:"t"` // when the server committed it
	Action  Action    `json:"a"`
	Ref     uint64    `json:"r,omitempty"` // see Action
	Op      Op        `json:"o"`           // applies to version Version-1
	Note    *Note     `json:"n,omitempty"` // comments and suggestions: see Action
}

// Snapshot is the whole text of a document at a version.
type Snapshot struct {
	Version uint64 `json:"v"`
	Epoch   string `json:"e"` // the document's epoch: a server-made random id fixed at creation
	Text    string `json:"x"`
	// Clients holds, per client id, the last committed request, so that
	// resubmissions are recognised after a reopen. Store records only; the
	// snapshots a Document hands out leave it nil.
	Clients map[string]Mark `json:"c,omitempty"`
	// Threads are the comment threads and Suggestions the open suggestions
	// at Version, ordered by id.
	Threads     []Thread     `json:"threads,omitempty"`
	Suggestions []Suggestion `json:"suggestions,omitempty"`
}

// Mark is a client's last committed request: its sequence number and the
// version it produced.
type Mark struct {
	Seq     uint64 `json:"s"`
	Version uint64 `json:"v"`
}

// Batch is what a Store commits at once: log entries with consecutive
// versions following the last stored one (possibly none), and snapshots of
// versions up to the last of those entries. A new document is created by a
// first batch holding only its version 0 snapshot.
type Batch struct {
	Entries   []Entry
	Snapshots []Snapshot
}

// Store keeps documents durably: each one's operation log and snapshots.
// Implementations must be safe for concurrent use; they may keep the entries
// and snapshots they are given (a Document never modifies them after) but
// not the Batch's slices.
type Store interface {
	// Commit appends b to document id and returns once it is durable.
	// It fails with ErrVersionConflict if the entries do not follow the
	// last stored version.
	Commit(ctx context.Context, id string, b Batch) error
	// Snapshot returns document id's newest snapshot whose version is at
	// most atOrBefore, or ErrNotFound if the document does not exist.
	Snapshot(ctx context.Context, id string, atOrBefore uint64) (Snapshot, error)
	// Entries returns document id's entries with versions in [from, to], in
	// order; fewer if the log ends before to.
	Entries(ctx context.Context, id string, from, to uint64) ([]Entry, error)
}

// MemStore is a Store in memory, for tests and for documents that need not
// outlive the process.
type MemStore struct {
	mu      sync.Mutex
	docs    map[string]*memDoc
	commits uint64
}

type memDoc struct {
	chunks [][]Entry  // entries in chunks of memChunk; version v is chunks[(v-1)/memChunk][(v-1)%memChunk]
	n      uint64     // entries held
	snaps  []Snapshot // by version
}

// memChunk is how many entries a MemStore keeps per allocation, so that a
// long log is never copied to grow.
const memChunk = 4096

func (d *memDoc) append(es []Entry) {
	for _, e := range es {
		if d.n%memChunk == 0 {
			d.chunks = append(d.chunks, make([]Entry, 0, memChunk))
		}
		last := len(d.chunks) - 1
		d.chunks[last] = append(d.chunks[last], e)
		d.n++
	}
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{docs: make(map[string]*memDoc)}
}

// Commit implements Store.
func (s *MemStore) Commit(ctx context.Context, id string, b Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.docs[id]
	if d == nil {
		d = &memDoc{}
	}
	if err := checkBatch(id, d.n, len(d.snaps) > 0, b); err != nil {
		return err
	}
	s.docs[id] = d
	d.append(b.Entries)
	for _, sn := range b.Snapshots {
		if n := len(d.snaps); n > 0 && d.snaps[n-1].Version >= sn.Version {
			continue // snapshots come in version order; keep the first of a version
		}
		sn.Clients = maps.Clone(sn.Clients)
		d.snaps = append(d.snaps, sn)
	}
	s.commits++
	return nil
}

// checkBatch checks that b fits after a log whose last version is last.
func checkBatch(id string, last uint64, exists bool, b Batch) error {
	creates := len(b.Snapshots) > 0 && b.Snapshots[0].Version == 0
	if !exists && !creates {
		return errf(ErrNotFound, "document %q: the first commit must hold its version 0 snapshot", id)
	}
	if exists && creates {
		return errf(ErrVersionConflict, "document %q already exists", id)
	}
	for i, e := range b.Entries {
		if e.Version != last+1+uint64(i) {
			return errf(ErrVersionConflict, "document %q: entry version %d does not follow %d", id, e.Version, last+uint64(i))
		}
	}
	top := last + uint64(len(b.Entries))
	for _, sn := range b.Snapshots {
		if sn.Version > top {
			return errf(ErrVersionConflict, "document %q: snapshot of version %d beyond the log's %d", id, sn.Version, top)
		}
	}
	return nil
}

// Snapshot implements Store.
func (s *MemStore) Snapshot(ctx context.Context, id string, atOrBefore uint64) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.docs[id]
	if d == nil {
		return Snapshot{}, errf(ErrNotFound, "document %q", id)
	}
	i := sort.Search(len(d.snaps), func(i int) bool { return d.snaps[i].Version > atOrBefore })
	if i == 0 {
		return Snapshot{}, errf(ErrNotFound, "document %q has no snapshot at or before version %d", id, atOrBefore)
	}
	sn := d.snaps[i-1]
	sn.Clients = maps.Clone(sn.Clients)
	return sn, nil
}

// Entries implements Store.
func (s *MemStore) Entries(ctx context.Context, id string, from, to uint64) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.docs[id]
	if d == nil {
		return nil, errf(ErrNotFound, "document %q", id)
	}
	from = max(from, 1)
	to = min(to, d.n)
	if from > to {
		return nil, nil
	}
	out := make([]Entry, 0, to-from+1)
	for v := from; v <= to; v++ {
		out = append(out, d.chunks[(v-1)/memChunk][(v-1)%memChunk])
	}
	return out, nil
}

// Commits returns how many batches were committed.
func (s *MemStore) Commits() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}
