package doc

import (
	"context"
	"slices"
)

// Actions of comment and suggestion log entries. Every one but ActionAccept
// carries an identity operation (the text does not change) and a Note.
const (
	ActionComment Action = "comment" // opens thread Version with Note's range and text
	ActionReply   Action = "reply"   // adds Note.Text to thread Ref
	ActionResolve Action = "resolve" // marks thread Ref resolved
	ActionReopen  Action = "reopen"  // marks thread Ref open again
	ActionSuggest Action = "suggest" // proposes Note.Op as suggestion Version
	ActionReject  Action = "reject"  // drops suggestion Ref
	ActionAccept  Action = "accept"  // applies suggestion Ref: Op is its operation
)

// More kinds of refusals, of comments and suggestions.
const (
	// ErrUnknownThread: no comment thread has that id.
	ErrUnknownThread ErrorKind = "unknown_thread"
	// ErrUnknownSuggestion: no open suggestion has that id.
	ErrUnknownSuggestion ErrorKind = "unknown_suggestion"
	// ErrTooMany: the document holds its maximum of threads or of open
	// suggestions.
	ErrTooMany ErrorKind = "too_many"
	// ErrForbidden: the client may not do this (reject someone else's
	// suggestion without being allowed to).
	ErrForbidden ErrorKind = "permission_denied"
)

// MaxNoteText is the longest comment text, in bytes.
const MaxNoteText = 4096

// Note is what a comment or suggestion entry adds: see its Action.
type Note struct {
	Name  string `json:"name,omitempty"` // the author's display name
	From  int    `json:"from,omitempty"` // comment: the range, at the entry's version
	To    int    `json:"to,omitempty"`
	Quote string `json:"quote,omitempty"` // comment: the text of the range
	Text  string `json:"text,omitempty"`  // comment, reply
	Op    Op     `json:"op,omitempty"`    // suggest: the proposed operation, at the entry's version
}

// Thread is a comment thread anchored to the range [From, To) of the
// text. The range moves with edits: From as a position with inserts at it
// going before it (Right), To with inserts at it going after it (Left), so
// text typed at either edge stays outside. Once an edit deletes the whole
// range the thread is Orphaned: it keeps its comments and Quote, and From
// (= To) moves as one position (Left) from then on.
type Thread struct {
	ID       uint64    `json:"id"` // the version that opened it
	From     int       `json:"from"`
	To       int       `json:"to"`
	Quote    string    `json:"quote"` // the text of the range when opened
	Resolved bool      `json:"resolved"`
	Orphaned bool      `json:"orphaned"`
	Comments []Comment `json:"comments"`
}

// Comment is one message of a thread.
type Comment struct {
	Client string `json:"client"`
	Name   string `json:"name"`
	Text   string `json:"text"`
	Time   int64  `json:"time"` // Unix milliseconds
}

// Suggestion is a proposed operation, kept transformed to the newest
// version (past every later operation, which goes first) until it is
// accepted or rejected.
type Suggestion struct {
	ID     uint64 `json:"id"` // the version that proposed it
	Client string `json:"client"`
	Name   string `json:"name"`
	Op     Op     `json:"op"`
	Time   int64  `json:"time"` // Unix milliseconds
}

// IsNote reports whether entries of action a carry a Note and leave the
// text as it is.
func (a Action) IsNote() bool {
	switch a {
	case ActionComment, ActionReply, ActionResolve, ActionReopen, ActionSuggest, ActionReject:
		return true
	}
	return false
}

// annotations are a document's threads (all of them) and open
// suggestions, each ordered by id.
type annotations struct {
	threads     []*Thread
	suggestions []*Suggestion
}

func (a *annotations) thread(id uint64) *Thread {
	i, ok := slices.BinarySearchFunc(a.threads, id, func(t *Thread, id uint64) int { return cmpU64(t.ID, id) })
	if !ok {
		return nil
	}
	return a.threads[i]
}

func (a *annotations) suggestionAt(id uint64) int {
	i, ok := slices.BinarySearchFunc(a.suggestions, id, func(s *Suggestion, id uint64) int { return cmpU64(s.ID, id) })
	if !ok {
		return -1
	}
	return i
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// move transforms every anchor and suggestion past op, committed after
// them.
func (a *annotations) move(op Op) {
	for _, t := range a.threads {
		t.From, t.To, t.Orphaned = moveRange(t.From, t.To, t.Orphaned, op)
	}
	for _, s := range a.suggestions {
		s.Op = transformOne(s.Op, op, Right)
	}
}

// moveRange moves a thread's range past op (see Thread).
func moveRange(from, to int, orphaned bool, op Op) (int, int, bool) {
	if orphaned {
		p := transformPos(from, op, Left)
		return p, p, true
	}
	from, to = transformPos(from, op, Right), transformPos(to, op, Left)
	if from >= to {
		return to, to, true
	}
	return from, to, false
}

// apply records the effect of entry e on the annotations. Entries from the
// store are trusted: one that names an unknown thread changes nothing.
func (a *annotations) apply(e *Entry) {
	ms := e.Time.UnixMilli()
	n := e.Note
	if n == nil {
		n = &Note{}
	}
	switch e.Action {
	case ActionComment:
		a.threads = append(a.threads, &Thread{ID: e.Version, From: n.From, To: n.To, Quote: n.Quote, Orphaned: n.From >= n.To,
			Comments: []Comment{{Client: e.Client, Name: n.Name, Text: n.Text, Time: ms}}})
	case ActionReply:
		if t := a.thread(e.Ref); t != nil {
			t.Comments = append(t.Comments, Comment{Client: e.Client, Name: n.Name, Text: n.Text, Time: ms})
		}
	case ActionResolve, ActionReopen:
		if t := a.thread(e.Ref); t != nil {
			t.Resolved = e.Action == ActionResolve
		}
	case ActionSuggest:
		a.suggestions = append(a.suggestions, &Suggestion{ID: e.Version, Client: e.Client, Name: n.Name, Op: n.Op, Time: ms})
	case ActionReject, ActionAccept:
		if i := a.suggestionAt(e.Ref); i >= 0 {
			a.suggestions = slices.Delete(a.suggestions, i, i+1)
		}
	}
}

// copyOut returns deep copies of the threads and suggestions.
func (a *annotations) copyOut() ([]Thread, []Suggestion) {
	var ts []Thread
	var ss []Suggestion
	if len(a.threads) > 0 {
		ts = make([]Thread, len(a.threads))
		for i, t := range a.threads {
			ts[i] = *t
			ts[i].Comments = slices.Clone(t.Comments)
		}
	}
	if len(a.suggestions) > 0 {
		ss = make([]Suggestion, len(a.suggestions))
		for i, s := range a.suggestions {
			ss[i] = *s
		}
	}
	return ts, ss
}

// load replaces the annotations with copies of a snapshot's.
func (a *annotations) load(ts []Thread, ss []Suggestion) {
	a.threads, a.suggestions = nil, nil
	for _, t := range ts {
		t.Comments = slices.Clone(t.Comments)
		a.threads = append(a.threads, &t)
	}
	for _, s := range ss {
		a.suggestions = append(a.suggestions, &s)
	}
}

// Threads returns the document's comment threads and open suggestions at
// its newest version (durable or not), ordered by id.
func (d *Document) Threads() ([]Thread, []Suggestion) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.notes.copyOut()
}

// Suggestion returns open suggestion id, if there is one.
func (d *Document) Suggestion(id uint64) (Suggestion, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.notes.suggestionAt(id)
	if i < 0 {
		return Suggestion{}, false
	}
	return *d.notes.suggestions[i], true
}

func checkNoteText(text string) error {
	if text == "" {
		return errf(ErrBadRequest, "empty comment")
	}
	if len(text) > MaxNoteText {
		return errf(ErrBadRequest, "comment of %d bytes; the limit is %d", len(text), MaxNoteText)
	}
	return nil
}

// Comment opens a comment thread on the range [from, to) of version base,
// moved to the newest version, with a first comment text by client (whose
// display name is name). The thread's id is the returned Version.
func (d *Document) Comment(ctx context.Context, client, name string, base uint64, from, to int, text string) (Result, error) {
	if err := checkNoteText(text); err != nil {
		return Result{}, err
	}
	d.mu.Lock()
	res, err := d.commentLocked(client, name, base, from, to, text)
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

func (d *Document) commentLocked(client, name string, base uint64, from, to int, text string) (Result, error) {
	if len(d.notes.threads) >= d.opts.MaxThreads {
		return Result{}, errf(ErrTooMany, "document %q has %d comment threads", d.id, len(d.notes.threads))
	}
	size, err := d.baseLenLocked(base)
	if err != nil {
		return Result{}, err
	}
	if from < 0 || from >= to || to > size {
		return Result{}, errf(ErrOutOfRange, "range %d..%d in a text of %d code points (it must not be empty)", from, to, size)
	}
	orphaned := false
	for v := base + 1; v <= d.head; v++ {
		from, to, orphaned = moveRange(from, to, orphaned, d.log.at(v).Op)
	}
	quote := ""
	if !orphaned {
		quote = d.text.Slice(from, to)
	}
	return d.noteLocked(client, ActionComment, 0, &Note{Name: name, From: from, To: to, Quote: quote, Text: text})
}

// Reply adds a comment to thread.
func (d *Document) Reply(ctx context.Context, client, name string, thread uint64, text string) (Result, error) {
	if err := checkNoteText(text); err != nil {
		return Result{}, err
	}
	return d.threadNote(ctx, client, thread, ActionReply, &Note{Name: name, Text: text})
}

// Resolve marks thread resolved (resolved true) or open again.
func (d *Document) Resolve(ctx context.Context, client, name string, thread uint64, resolved bool) (Result, error) {
	action := ActionResolve
	if !resolved {
		action = ActionReopen
	}
	return d.threadNote(ctx, client, thread, action, &Note{Name: name})
}

func (d *Document) threadNote(ctx context.Context, client string, thread uint64, action Action, n *Note) (Result, error) {
	d.mu.Lock()
	var res Result
	var err error
	if d.notes.thread(thread) == nil {
		err = errf(ErrUnknownThread, "document %q has no thread %d", d.id, thread)
	} else {
		res, err = d.noteLocked(client, action, thread, n)
	}
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

// Suggest proposes op, made against version base, as a suggestion kept
// transformed to the newest version. Its id is the returned Version.
func (d *Document) Suggest(ctx context.Context, client, name string, base uint64, op Op) (Result, error) {
	n, _, err := op.lengths()
	if err != nil {
		return Result{}, err
	}
	if op.IsNoop() {
		return Result{}, errf(ErrBadRequest, "a suggestion must change the text")
	}
	d.mu.Lock()
	res, err := d.suggestLocked(client, name, base, n, op)
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

func (d *Document) suggestLocked(client, name string, base uint64, n int, op Op) (Result, error) {
	if len(d.notes.suggestions) >= d.opts.MaxSuggestions {
		return Result{}, errf(ErrTooMany, "document %q has %d open suggestions", d.id, len(d.notes.suggestions))
	}
	size, err := d.baseLenLocked(base)
	if err != nil {
		return Result{}, err
	}
	if n != size {
		return Result{}, errf(ErrLengthMismatch, "operation spans %d code points, version %d has %d", n, base, size)
	}
	for v := base + 1; v <= d.head; v++ {
		op = transformOne(op, d.log.at(v).Op, Right)
	}
	return d.noteLocked(client, ActionSuggest, 0, &Note{Name: name, Op: op})
}

// Reject drops open suggestion id. If onlyBy is not empty, only the
// suggestion's author may: another client gets ErrForbidden.
func (d *Document) Reject(ctx context.Context, client, name string, id uint64, onlyBy string) (Result, error) {
	d.mu.Lock()
	var res Result
	var err error
	if i := d.notes.suggestionAt(id); i < 0 {
		err = errf(ErrUnknownSuggestion, "document %q has no open suggestion %d", d.id, id)
	} else if onlyBy != "" && d.notes.suggestions[i].Client != onlyBy {
		err = errf(ErrForbidden, "suggestion %d is not %q's", id, onlyBy)
	} else {
		res, err = d.noteLocked(client, ActionReject, id, &Note{Name: name})
	}
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

// Accept applies open suggestion id, as it stands at the newest version,
// as an operation authored by client (who may undo it). seq is as for
// Submit: a resubmission is recognised.
func (d *Document) Accept(ctx context.Context, client, name string, seq, id uint64) (Result, error) {
	if err := checkRequest(client, seq); err != nil {
		return Result{}, err
	}
	d.mu.Lock()
	res, dup, err := d.dedupLocked(client, seq)
	if !dup && err == nil {
		if i := d.notes.suggestionAt(id); i < 0 {
			err = errf(ErrUnknownSuggestion, "document %q has no open suggestion %d", d.id, id)
		} else {
			var e Entry
			e, err = d.commitLocked(client, seq, d.head, d.notes.suggestions[i].Op, ActionAccept, id, &Note{Name: name})
			res = Result{Version: e.Version, Op: e.Op}
		}
	}
	d.mu.Unlock()
	return d.finish(ctx, client, res, err)
}

// baseLenLocked returns the length of the text of version base, which
// must be within the retained log.
func (d *Document) baseLenLocked(base uint64) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.closed {
		return 0, errf(ErrClosed, "document %q is closed", d.id)
	}
	if base > d.head {
		return 0, errf(ErrFutureVersion, "base version %d, document %q is at %d", base, d.id, d.head)
	}
	if base == d.head {
		return d.text.Len(), nil
	}
	if !d.log.has(base + 1) {
		return 0, errf(ErrTooFarBehind, "base version %d is older than the %d versions kept", base, d.opts.MaxBehind)
	}
	return d.log.at(base + 1).Op.BaseLen(), nil
}

// noteLocked commits a comment or suggestion entry: an identity operation
// with a Note, sequence number 0 (not deduplicated).
func (d *Document) noteLocked(client string, action Action, ref uint64, n *Note) (Result, error) {
	if err := checkRequest(client, 1); err != nil {
		return Result{}, err
	}
	if d.err != nil {
		return Result{}, d.err
	}
	if d.closed {
		return Result{}, errf(ErrClosed, "document %q is closed", d.id)
	}
	var op Op
	if size := d.text.Len(); size > 0 {
		op = Op{{Retain: size}}
	}
	e := Entry{Version: d.head + 1, Client: client, Time: d.opts.Now(), Action: action, Ref: ref, Op: op, Note: n}
	d.appendLocked(e)
	return Result{Version: e.Version, Op: op}, nil
}
