package doc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Options tune a Document. Zero fields take the defaults.
type Options struct {
	// SnapshotEvery is how many versions apart snapshots are stored
	// (default 1000). At rebuilds a version from the snapshot before it, so
	// this bounds the operations it replays.
	SnapshotEvery int
	// MaxBehind is how many versions behind the head a submitted
	// operation's base version may be (default 10000). It is also how many
	// log entries are kept in memory, and how far back undo reaches.
	MaxBehind int
	// Now returns the time recorded in log entries (default time.Now).
	Now func() time.Time
	// MaxThreads and MaxSuggestions bound the comment threads (default
	// 10000) and the open suggestions (default 1000) of a document.
	MaxThreads, MaxSuggestions int
}

func (o Options) withDefaults() Options {
	if o.SnapshotEvery <= 0 {
		o.SnapshotEvery = 1000
	}
	if o.MaxBehind <= 0 {
		o.MaxBehind = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxThreads <= 0 {
		o.MaxThreads = 10000
	}
	if o.MaxSuggestions <= 0 {
		o.MaxSuggestions = 1000
	}
	return o
}

// Document is the authoritative state of one shared text: its text,
// version, epoch, operation log and, per client, the last committed request
// and the undo and redo stacks. Clients submit operations against the
// version they have seen; the Document transforms each past everything
// committed since, applies it and makes it durable in its Store before the
// call returns. Many concurrent calls share one Store commit (group commit).
// A Document is safe for concurrent use.
//
// Only durable state is ever handed out: Snapshot, Since, History and At
// never show a version that a crash could still lose.
//
// How to wire it to a transport: each participant gets a sender goroutine
// running Follow, which sends, in version order, an acknowledgement for
// each entry the participant authored with Action ActionEdit and the
// operation of every other entry (undo, redo and restore entries go to
// their author too, who did not apply them). Sending acknowledgements from
// that loop, not from the return of Submit, keeps each one behind every
// operation that precedes it, which the client's state machine needs.
// Submit's own result serves for errors and metrics.
type Document struct {
	id    string
	store Store
	opts  Options
	epoch string

	mu       sync.Mutex
	text     *Text
	head     uint64  // the version of text
	durable  uint64  // the newest version the store has committed
	log      logRing // the newest MaxBehind entries
	clients  map[string]*clientState
	notes    annotations // comment threads and open suggestions at head
	pending  []Entry     // applied, not yet handed to the store
	spare    []Entry     // a reusable buffer for pending
	snaps    []Snapshot  // taken, not yet handed to the store
	flushing bool        // a store commit is under way
	waiters  int         // calls waiting for a commit under way
	flushed  chan struct{}
	watched  bool  // flushed was handed out: close it after the next commit
	err      error // a commit failed; the document must be reopened
	closed   bool
	commits  uint64
	scratch  []rune
}

type logEntry struct {
	Entry
	removed []rune // the code points Op deleted, in order
}

type clientState struct {
	mark       Mark
	undo, redo []uint64 // versions
}

// Result is the outcome of a committed request.
type Result struct {
	// Version is the version the request produced.
	Version uint64
	// Op is the operation as committed: it applies to Version-1. It is nil
	// for a duplicate older than the retained log.
	Op Op
	// Duplicate is true when the request had been committed before (a
	// resubmission): nothing was applied this time.
	Duplicate bool
}

// Stats are counters of a Document.
type Stats struct {
	Version uint64 // the newest version, committed or not
	Durable uint64 // the newest durable version
	Commits uint64 // store commits made; Version/Commits is the batching factor
}

// Open loads document id from store, or creates it (with a new epoch, at
// version 0, empty) if the store does not have it. It replays the retained
// log, so it costs up to MaxBehind+SnapshotEvery operations.
func Open(ctx context.Context, store Store, id string, opts Options) (*Document, error) {
	opts = opts.withDefaults()
	latest, err := store.Snapshot(ctx, id, math.MaxUint64)
	if KindOf(err) == ErrNotFound {
		latest = Snapshot{Epoch: rand.Text()}
		if err := store.Commit(ctx, id, Batch{Snapshots: []Snapshot{latest}}); err != nil {
			return nil, fmt.Errorf("doc: create %q: %w", id, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("doc: open %q: %w", id, err)
	}
	tail, err := store.Entries(ctx, id, latest.Version+1, math.MaxUint64)
	if err != nil {
		return nil, fmt.Errorf("doc: open %q: %w", id, err)
	}
	head := latest.Version + uint64(len(tail))
	start, entries := latest, tail
	want := head - min(head, uint64(opts.MaxBehind)) // the oldest base to accept
	if want < latest.Version {
		start, err = store.Snapshot(ctx, id, want)
		if err != nil {
			return nil, fmt.Errorf("doc: open %q: %w", id, err)
		}
		mid, err := store.Entries(ctx, id, start.Version+1, latest.Version)
		if err != nil {
			return nil, fmt.Errorf("doc: open %q: %w", id, err)
		}
		entries = append(mid, tail...)
	}
	d := &Document{
		id:      id,
		store:   store,
		opts:    opts,
		epoch:   start.Epoch,
		text:    NewText(start.Text),
		head:    start.Version,
		log:     newLogRing(opts.MaxBehind, start.Version+1),
		clients: make(map[string]*clientState, len(start.Clients)),
		flushed: make(chan struct{}),
	}
	for c, m := range start.Clients {
		d.clients[c] = &clientState{mark: m}
	}
	d.notes.load(start.Threads, start.Suggestions)
	for _, e := range entries {
		if e.Version != d.head+1 {
			return nil, errf(ErrCorrupt, "document %q: entry %d follows version %d", id, e.Version, d.head)
		}
		base, _, err := e.Op.lengths()
		if err != nil {
			return nil, fmt.Errorf("doc: open %q: entry %d: %w", id, e.Version, err)
		}
		if base != d.text.Len() {
			return nil, errf(ErrCorrupt, "document %q: entry %d spans %d code points, text has %d", id, e.Version, base, d.text.Len())
		}
		d.record(e)
	}
	d.durable = d.head
	return d, nil
}

// ID returns the document's id.
func (d *Document) ID() string { return d.id }

// Epoch returns the document's epoch: a random id made when the document
// was created. A client that finds a different epoch than the one it knew
// must drop its state, not resubmit or re-seed it.
func (d *Document) Epoch() string { return d.epoch }

// Version returns the newest durable version.
func (d *Document) Version() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.durable
}

// Stats returns the document's counters.
func (d *Document) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Stats{Version: d.head, Durable: d.durable, Commits: d.commits}
}

func checkRequest(client string, seq uint64) error {
	if client == "" {
		return errf(ErrBadRequest, "empty client id")
	}
	if seq == 0 {
		return errf(ErrBadRequest, "sequence numbers start at 1")
	}
	return nil
}

// Submit commits op, made by client against version base, and returns once
// it is durable. op is transformed past every version committed after base
// (their inserts at the same position go first), applied and logged as
// version Version. seq is the client's sequence number for the request;
// they must grow, and a client has one request in flight at a time. A
// request whose seq equals the client's last committed one is a
// resubmission: its original Result is returned with Duplicate set and
// nothing is applied. Refusals, with nothing applied: *Error of an
// operation kind, ErrFutureVersion, ErrStaleSeq, ErrBadRequest, ErrClosed,
// and *BehindError (ErrTooFarBehind) with a snapshot to start again from.
func (d *Document) Submit(ctx context.Context, client string, seq, base uint64, op Op) (Result, error) {
	if err := checkRequest(client, seq); err != nil {
		return Result{}, err
	}
	d.mu.Lock()
	res, dup, err := d.dedupLocked(client, seq)
	if !dup && err == nil {
		var e Entry
		e, err = d.commitLocked(client, seq, base, op, ActionEdit, 0, nil)
		res = Result{Version: e.Version, Op: e.Op}
	}
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

// Undo reverts client's newest operation that is not undone yet (an edit,
// a restore or a redo), transformed past everything committed since, as a
// new version authored by client. seq is as for Submit. It fails with
// ErrNothingToUndo if there is none within the retained log.
func (d *Document) Undo(ctx context.Context, client string, seq uint64) (Result, error) {
	return d.revert(ctx, client, seq, ActionUndo)
}

// Redo reverts client's newest undo that is not redone yet, like Undo. A
// new edit by the client empties its redo stack.
func (d *Document) Redo(ctx context.Context, client string, seq uint64) (Result, error) {
	return d.revert(ctx, client, seq, ActionRedo)
}

func (d *Document) revert(ctx context.Context, client string, seq uint64, action Action) (Result, error) {
	if err := checkRequest(client, seq); err != nil {
		return Result{}, err
	}
	d.mu.Lock()
	res, dup, err := d.dedupLocked(client, seq)
	if !dup && err == nil {
		res, err = d.revertLocked(client, seq, action)
	}
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

func (d *Document) revertLocked(client string, seq uint64, action Action) (Result, error) {
	c := d.clients[client]
	var stack *[]uint64
	if c != nil {
		stack = &c.undo
		if action == ActionRedo {
			stack = &c.redo
		}
	}
	if stack != nil && len(*stack) > 0 {
		v := (*stack)[len(*stack)-1]
		if d.log.has(v) {
			le := d.log.at(v)
			e, err := d.commitLocked(client, seq, v, invertRemoved(le.Op, le.removed), action, v, nil)
			if err != nil {
				return Result{}, err
			}
			return Result{Version: e.Version, Op: e.Op}, nil
		}
		// Out of reach, and so is everything under it.
		*stack = (*stack)[:0]
	}
	return Result{}, errf(ErrNothingToUndo, "client %q has nothing to %s within the last %d versions", client, action, d.opts.MaxBehind)
}

// Restore brings back the text of version as a new version authored by
// client: an ordinary operation (computed with Diff) that others receive
// and that client can undo. seq is as for Submit.
func (d *Document) Restore(ctx context.Context, client string, seq, version uint64) (Result, error) {
	if err := checkRequest(client, seq); err != nil {
		return Result{}, err
	}
	target, err := d.At(ctx, version)
	if err != nil {
		return Result{}, err
	}
	d.mu.Lock()
	res, dup, err := d.dedupLocked(client, seq)
	if !dup && err == nil {
		var e Entry
		e, err = d.commitLocked(client, seq, d.head, Diff(d.text.String(), target), ActionRestore, version, nil)
		res = Result{Version: e.Version, Op: e.Op}
	}
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

// dedupLocked recognises a resubmission (dup) or an old request (err).
func (d *Document) dedupLocked(client string, seq uint64) (res Result, dup bool, err error) {
	c := d.clients[client]
	if c == nil || seq > c.mark.Seq {
		return Result{}, false, nil
	}
	if seq < c.mark.Seq {
		return Result{}, false, errf(ErrStaleSeq, "client %q sent sequence number %d after %d", client, seq, c.mark.Seq)
	}
	res = Result{Version: c.mark.Version, Duplicate: true}
	if v := c.mark.Version; d.log.has(v) {
		res.Op = d.log.at(v).Op
	}
	return res, true, nil
}

// finish waits until res is durable, or completes a *BehindError with a
// durable snapshot.
func (d *Document) finish(ctx context.Context, client string, res Result, err error) (Result, error) {
	if err != nil {
		var be *BehindError
		if errors.As(err, &be) {
			return Result{}, d.fillBehind(ctx, client, be)
		}
		return Result{}, err
	}
	if err := d.awaitDurable(ctx, res.Version); err != nil {
		return Result{}, err
	}
	return res, nil
}

func (d *Document) fillBehind(ctx context.Context, client string, be *BehindError) error {
	d.mu.Lock()
	if c := d.clients[client]; c != nil {
		be.LastSeq = c.mark.Seq
	}
	sn, err := d.snapshotLocked()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if err := d.awaitDurable(ctx, sn.Version); err != nil {
		return err
	}
	be.Snapshot = sn
	return be
}

// commitLocked transforms op from version base to the head, applies it and
// queues it for the store.
func (d *Document) commitLocked(client string, seq, base uint64, op Op, action Action, ref uint64, note *Note) (Entry, error) {
	if d.err != nil {
		return Entry{}, d.err
	}
	if d.closed {
		return Entry{}, errf(ErrClosed, "document %q is closed", d.id)
	}
	if base > d.head {
		return Entry{}, errf(ErrFutureVersion, "base version %d, document %q is at %d", base, d.id, d.head)
	}
	if base < d.head && !d.log.has(base+1) {
		return Entry{}, &BehindError{Base: base} // finish adds the snapshot
	}
	n, _, err := op.lengths()
	if err != nil {
		return Entry{}, err
	}
	want := d.text.Len()
	if base < d.head {
		want = d.log.at(base + 1).Op.BaseLen()
	}
	if n != want {
		return Entry{}, errf(ErrLengthMismatch, "operation spans %d code points, version %d has %d", n, base, want)
	}
	for v := base + 1; v <= d.head; v++ {
		op = transformOne(op, d.log.at(v).Op, Right)
	}
	e := Entry{
		Version: d.head + 1,
		Client:  client,
		Seq:     seq,
		Time:    d.opts.Now(),
		Action:  action,
		Ref:     ref,
		Op:      op,
		Note:    note,
	}
	d.appendLocked(e)
	return e, nil
}

// appendLocked records a new entry and queues it, and every
// SnapshotEvery versions a snapshot, for the store.
func (d *Document) appendLocked(e Entry) {
	d.record(e)
	d.pending = append(d.pending, e)
	if e.Version%uint64(d.opts.SnapshotEvery) == 0 {
		sn, _ := d.snapshotLocked()
		sn.Clients = make(map[string]Mark, len(d.clients))
		for id, c := range d.clients {
			if c.mark.Seq != 0 {
				sn.Clients[id] = c.mark
			}
		}
		d.snaps = append(d.snaps, sn)
	}
}

// record applies a valid entry of the right length and logs it.
func (d *Document) record(e Entry) {
	d.scratch = d.scratch[:0]
	d.text.apply(e.Op, &d.scratch)
	var removed []rune
	if len(d.scratch) > 0 {
		removed = slices.Clone(d.scratch)
	}
	d.head = e.Version
	d.log.push(logEntry{Entry: e, removed: removed})
	if e.Action == ActionAccept {
		d.notes.apply(&e) // the suggestion is gone before its own op moves the rest
	}
	if !e.Action.IsNote() {
		d.notes.move(e.Op)
	} else {
		d.notes.apply(&e)
		return // a note is neither a request (no seq) nor undoable
	}
	c := d.clients[e.Client]
	if c == nil {
		c = &clientState{}
		d.clients[e.Client] = c
	}
	c.mark = Mark{Seq: e.Seq, Version: e.Version}
	switch e.Action {
	case ActionUndo:
		c.undo = remove(c.undo, e.Ref)
		c.redo = d.push(c.redo, e.Version)
	case ActionRedo:
		c.redo = remove(c.redo, e.Ref)
		c.undo = d.push(c.undo, e.Version)
	default:
		c.undo = d.push(c.undo, e.Version)
		c.redo = c.redo[:0]
	}
}

// push pushes v on an undo or redo stack, forgetting the oldest half when
// the stack grows past the retained log.
func (d *Document) push(stack []uint64, v uint64) []uint64 {
	if len(stack) >= d.opts.MaxBehind {
		stack = append(stack[:0], stack[len(stack)/2:]...)
	}
	return append(stack, v)
}

func remove(stack []uint64, v uint64) []uint64 {
	for i := len(stack) - 1; i >= 0; i-- {
		if stack[i] == v {
			return append(stack[:i], stack[i+1:]...)
		}
	}
	return stack
}

// snapshotLocked returns the text at the head (not necessarily durable yet).
func (d *Document) snapshotLocked() (Snapshot, error) {
	if d.err != nil {
		return Snapshot{}, d.err
	}
	ts, ss := d.notes.copyOut()
	return Snapshot{Version: d.head, Epoch: d.epoch, Text: d.text.String(), Threads: ts, Suggestions: ss}, nil
}

// Snapshot returns the document's text, version and epoch, durable: what a
// joining client starts from.
func (d *Document) Snapshot(ctx context.Context) (Snapshot, error) {
	d.mu.Lock()
	sn, err := d.snapshotLocked()
	d.mu.Unlock()
	if err != nil {
		return Snapshot{}, err
	}
	if err := d.awaitDurable(ctx, sn.Version); err != nil {
		return Snapshot{}, err
	}
	return sn, nil
}

// Wait blocks until the durable version is newer than after, and returns
// it. It fails when ctx ends, when the document is closed, or when a commit
// failed.
func (d *Document) Wait(ctx context.Context, after uint64) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.durable <= after {
		if d.err != nil {
			return d.durable, d.err
		}
		if d.closed && !d.flushing && len(d.pending) == 0 {
			return d.durable, errf(ErrClosed, "document %q is closed", d.id)
		}
		ch := d.watchLocked()
		d.mu.Unlock()
		select {
		case <-ch:
			d.mu.Lock()
		case <-ctx.Done():
			d.mu.Lock()
			return d.durable, ctx.Err()
		}
	}
	return d.durable, nil
}

// Since returns the durable entries after version after, oldest first, at
// most limit of them (all if limit <= 0). Entries older than the retained
// log are read from the store.
func (d *Document) Since(ctx context.Context, after uint64, limit int) ([]Entry, error) {
	d.mu.Lock()
	to := d.durable
	if after >= to {
		d.mu.Unlock()
		return nil, nil
	}
	if limit > 0 && to-after > uint64(limit) {
		to = after + uint64(limit)
	}
	if d.log.has(after + 1) {
		out := make([]Entry, 0, to-after)
		for v := after + 1; v <= to; v++ {
			out = append(out, d.log.at(v).Entry)
		}
		d.mu.Unlock()
		return out, nil
	}
	d.mu.Unlock()
	es, err := d.store.Entries(ctx, d.id, after+1, to)
	if err != nil {
		return nil, fmt.Errorf("doc: read %q versions %d to %d: %w", d.id, after+1, to, err)
	}
	return es, nil
}

// Follow calls send with the durable entries after version after, in
// version order and in batches of at most limit (all if limit <= 0), as
// they are committed, until ctx ends, send fails or the document closes;
// it returns why it stopped. It is the body of a participant's sender
// goroutine: send acknowledges the participant's own edits and forwards
// every other entry (see Document).
func (d *Document) Follow(ctx context.Context, after uint64, limit int, send func([]Entry) error) error {
	for {
		if _, err := d.Wait(ctx, after); err != nil {
			return err
		}
		es, err := d.Since(ctx, after, limit)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			continue
		}
		if err := send(es); err != nil {
			return err
		}
		after = es[len(es)-1].Version
	}
}

// History returns the durable log entries with versions in [from, to]
// (author, time, action and operation of each version), oldest first.
func (d *Document) History(ctx context.Context, from, to uint64) ([]Entry, error) {
	from = max(from, 1)
	if from > to {
		return nil, nil
	}
	limit := to - from + 1
	if limit > math.MaxInt32 {
		limit = math.MaxInt32
	}
	return d.Since(ctx, from-1, int(limit))
}

// At returns the text of a past durable version, rebuilt from the snapshot
// before it and the log. It fails with ErrOutOfRange for a version that is
// not durable yet.
func (d *Document) At(ctx context.Context, version uint64) (string, error) {
	if durable := d.Version(); version > durable {
		return "", errf(ErrOutOfRange, "version %d of document %q: the newest is %d", version, d.id, durable)
	}
	sn, err := d.store.Snapshot(ctx, d.id, version)
	if err != nil {
		return "", fmt.Errorf("doc: version %d of %q: %w", version, d.id, err)
	}
	if sn.Version == version {
		return sn.Text, nil
	}
	es, err := d.store.Entries(ctx, d.id, sn.Version+1, version)
	if err != nil {
		return "", fmt.Errorf("doc: version %d of %q: %w", version, d.id, err)
	}
	if uint64(len(es)) != version-sn.Version {
		return "", errf(ErrCorrupt, "document %q: the store has %d entries after version %d, want %d", d.id, len(es), sn.Version, version-sn.Version)
	}
	t := NewText(sn.Text)
	for _, e := range es {
		if err := t.Apply(e.Op); err != nil {
			return "", fmt.Errorf("doc: version %d of %q: entry %d: %w", version, d.id, e.Version, err)
		}
	}
	return t.String(), nil
}

// Close commits what is pending and refuses further requests. Wait calls
// return ErrClosed once they have seen every version.
func (d *Document) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	head := d.head
	d.mu.Unlock()
	err := d.awaitDurable(ctx, head)
	d.mu.Lock()
	d.notifyLocked()
	d.mu.Unlock()
	return err
}

// awaitDurable returns once version v is durable. The caller that finds no
// commit under way commits everything pending itself (the leader of group
// commit); the others wait for that commit, then check again.
func (d *Document) awaitDurable(ctx context.Context, v uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Whoever leaves last with no commit under way commits what is left,
	// so an operation never waits for an unrelated request to be durable.
	defer func() {
		if !d.flushing && d.waiters == 0 && len(d.pending) > 0 && d.err == nil {
			d.flushLocked(ctx)
		}
	}()
	for d.durable < v {
		if d.err != nil {
			return d.err
		}
		if !d.flushing {
			d.flushLocked(ctx)
			continue
		}
		ch := d.watchLocked()
		d.waiters++
		d.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
		d.mu.Lock()
		d.waiters--
		if err != nil {
			return fmt.Errorf("doc: waiting for version %d of %q to be durable: %w", v, d.id, err)
		}
	}
	return nil
}

// flushLocked commits everything pending, and keeps doing so while no one
// else waits to. d.mu is held on entry and exit, and released during the
// store's commit.
func (d *Document) flushLocked(ctx context.Context) {
	for len(d.pending) > 0 && d.err == nil {
		d.flushing = true
		b := Batch{Entries: d.pending, Snapshots: d.snaps}
		d.pending, d.spare, d.snaps = d.spare[:0], nil, nil
		last := b.Entries[len(b.Entries)-1].Version
		d.mu.Unlock()
		cctx := ctx
		if ctx.Done() != nil {
			cctx = context.WithoutCancel(ctx) // a commit under way is never abandoned
		}
		err := d.store.Commit(cctx, d.id, b)
		d.mu.Lock()
		d.flushing = false
		clear(b.Entries)
		d.spare = b.Entries[:0]
		if err != nil {
			d.err = fmt.Errorf("doc: committing versions up to %d of %q (reopen the document): %w", last, d.id, err)
		} else {
			d.durable = last
			d.commits++
		}
		d.notifyLocked()
		if d.waiters > 0 {
			return
		}
	}
}

func (d *Document) watchLocked() chan struct{} {
	d.watched = true
	return d.flushed
}

func (d *Document) notifyLocked() {
	if d.watched {
		close(d.flushed)
		d.flushed = make(chan struct{})
		d.watched = false
	}
}
