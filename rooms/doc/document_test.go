package doc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func openMem(t *testing.T, opts Options) (*Document, *MemStore) {
	t.Helper()
	st := NewMemStore()
	d, err := Open(context.Background(), st, "room", opts)
	if err != nil {
		t.Fatal(err)
	}
	return d, st
}

func mustSubmit(t *testing.T, d *Document, client string, seq, base uint64, op Op) Result {
	t.Helper()
	res, err := d.Submit(context.Background(), client, seq, base, op)
	if err != nil {
		t.Fatalf("Submit(%s, %d, %d, %v): %v", client, seq, base, op, err)
	}
	return res
}

func text(t *testing.T, d *Document) string {
	t.Helper()
	sn, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sn.Text
}

func ins(size, pos int, s string) Op {
	op, err := Edit(size, pos, 0, s)
	if err != nil {
		panic(err)
	}
	return op
}

func del(size, pos, n int) Op {
	op, err := Edit(size, pos, n, "")
	if err != nil {
		panic(err)
	}
	return op
}

func TestSubmitTransformsConcurrentOps(t *testing.T) {
	d, _ := openMem(t, Options{})
	mustSubmit(t, d, "seed", 1, 0, ins(0, 0, "hello world"))
	// Both edit version 1 without seeing each other.
	r1 := mustSubmit(t, d, "alice", 1, 1, ins(11, 5, ","))
	r2 := mustSubmit(t, d, "bob", 1, 1, ins(11, 11, "!"))
	if r1.Version != 2 || r2.Version != 3 {
		t.Fatalf("versions %d %d", r1.Version, r2.Version)
	}
	if got := r2.Op.String(); got != `[12,"!"]` {
		t.Fatalf("bob's op as committed: %s", got)
	}
	// Same position: the op committed first goes first.
	mustSubmit(t, d, "alice", 2, 3, ins(13, 0, "A"))
	mustSubmit(t, d, "bob", 2, 3, ins(13, 0, "B"))
	if got := text(t, d); got != "ABhello, world!" {
		t.Fatalf("text %q", got)
	}
}

func TestSubmitExactlyOnce(t *testing.T) {
	d, _ := openMem(t, Options{})
	first := mustSubmit(t, d, "alice", 1, 0, ins(0, 0, "a"))
	mustSubmit(t, d, "bob", 1, 1, ins(1, 1, "b"))
	// Alice reconnects and resubmits, not knowing it was committed.
	again := mustSubmit(t, d, "alice", 1, 0, ins(0, 0, "a"))
	if !again.Duplicate || again.Version != first.Version || !sameOp(again.Op, first.Op) {
		t.Fatalf("resubmission: %+v, first %+v", again, first)
	}
	if got := text(t, d); got != "ab" {
		t.Fatalf("text %q after resubmission", got)
	}
	mustSubmit(t, d, "alice", 2, 2, ins(2, 2, "c"))
	if _, err := d.Submit(context.Background(), "alice", 1, 0, ins(0, 0, "a")); !errors.Is(err, ErrStaleSeq) {
		t.Fatalf("old sequence number: %v", err)
	}
	if st := d.Stats(); st.Version != 3 {
		t.Fatalf("version %d, want 3", st.Version)
	}
}

func TestSubmitRefusals(t *testing.T) {
	d, _ := openMem(t, Options{})
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "abc"))
	cases := []struct {
		client     string
		seq, base  uint64
		op         Op
		kind       ErrorKind
		descriptor string
	}{
		{"a", 2, 1, Op{{Retain: 4}}, ErrLengthMismatch, "too long"},
		{"a", 2, 0, Op{{Retain: 3}}, ErrLengthMismatch, "wrong length for its base"},
		{"a", 2, 1, Op{{Retain: 1}, {Retain: 2}}, ErrNotNormalized, "not normalized"},
		{"a", 2, 1, Op{{Insert: "\xff"}, {Retain: 3}}, ErrInvalidUTF8, "bad UTF-8"},
		{"a", 2, 5, Op{{Retain: 3}}, ErrFutureVersion, "future base"},
		{"", 2, 1, Op{{Retain: 3}}, ErrBadRequest, "no client"},
		{"a", 0, 1, Op{{Retain: 3}}, ErrBadRequest, "seq 0"},
	}
	for _, c := range cases {
		_, err := d.Submit(context.Background(), c.client, c.seq, c.base, c.op)
		if !errors.Is(err, c.kind) {
			t.Errorf("%s: %v, want %s", c.descriptor, err, c.kind)
		}
	}
	if got, st := text(t, d), d.Stats(); got != "abc" || st.Version != 1 {
		t.Fatalf("after refusals: %q at version %d", got, st.Version)
	}
	// A refused request does not use up the sequence number.
	mustSubmit(t, d, "a", 2, 1, ins(3, 3, "d"))
}

func TestTooFarBehind(t *testing.T) {
	d, _ := openMem(t, Options{MaxBehind: 5})
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "x"))
	for i := range 10 {
		mustSubmit(t, d, "b", uint64(i+1), uint64(i+1), ins(i+1, i+1, "y"))
	}
	_, err := d.Submit(context.Background(), "a", 2, 1, ins(1, 0, "z"))
	var be *BehindError
	if !errors.As(err, &be) || !errors.Is(err, ErrTooFarBehind) {
		t.Fatalf("got %v, want a *BehindError", err)
	}
	if be.Base != 1 || be.Snapshot.Version != 11 || be.Snapshot.Text != "xyyyyyyyyyy" || be.LastSeq != 1 || be.Snapshot.Epoch != d.Epoch() {
		t.Fatalf("BehindError %+v", be)
	}
	// Five behind is still fine.
	mustSubmit(t, d, "a", 2, 6, ins(6, 0, "z"))
}

func TestHistoryAtRestore(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d, st := openMem(t, Options{SnapshotEvery: 4, Now: func() time.Time { return now }})
	ctx := context.Background()
	texts := []string{""}
	s := ""
	for i := range 10 {
		client := []string{"ann", "ben"}[i%2]
		op := ins(runeLen(s), runeLen(s), fmt.Sprint(i))
		mustSubmit(t, d, client, uint64(i/2+1), uint64(i), op)
		s = mustApply(s, op)
		texts = append(texts, s)
	}
	hist, err := d.History(ctx, 3, 5)
	if err != nil || len(hist) != 3 {
		t.Fatalf("History: %v, %v", hist, err)
	}
	for i, e := range hist {
		if e.Version != uint64(3+i) || e.Client != []string{"ann", "ben"}[(2+i)%2] || !e.Time.Equal(now) || e.Action != ActionEdit {
			t.Fatalf("entry %+v", e)
		}
	}
	for v, want := range texts {
		got, err := d.At(ctx, uint64(v))
		if err != nil || got != want {
			t.Fatalf("At(%d) = %q, %v; want %q", v, got, err, want)
		}
	}
	if _, err := d.At(ctx, 11); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("At(future): %v", err)
	}
	if sn, err := st.Snapshot(ctx, "room", 7); err != nil || sn.Version != 4 || sn.Text != texts[4] {
		t.Fatalf("stored snapshot before 7: %+v, %v", sn, err)
	}
	res, err := d.Restore(ctx, "cat", 1, 3)
	if err != nil || res.Version != 11 || text(t, d) != texts[3] {
		t.Fatalf("Restore: %+v, %v, text %q", res, err, text(t, d))
	}
	if e, _ := d.History(ctx, 11, 11); e[0].Action != ActionRestore || e[0].Ref != 3 {
		t.Fatalf("restore entry %+v", e[0])
	}
	// Restoring is undoable like any edit.
	if _, err := d.Undo(ctx, "cat", 2); err != nil || text(t, d) != texts[10] {
		t.Fatalf("undo restore: %v, %q", err, text(t, d))
	}
}

func TestUndoRedoOwnOpsOnly(t *testing.T) {
	d, _ := openMem(t, Options{})
	ctx := context.Background()
	mustSubmit(t, d, "ann", 1, 0, ins(0, 0, "hello"))
	mustSubmit(t, d, "ben", 1, 1, ins(5, 5, " world"))
	mustSubmit(t, d, "ann", 2, 2, ins(11, 11, "!"))
	// Ben edits concurrently with Ann's undo: base 2.
	mustSubmit(t, d, "ben", 2, 2, ins(11, 0, ">"))
	steps := []struct {
		name string
		do   func(seq uint64) (Result, error)
		want string
	}{
		{"undo !", func(s uint64) (Result, error) { return d.Undo(ctx, "ann", s) }, ">hello world"},
		{"undo hello", func(s uint64) (Result, error) { return d.Undo(ctx, "ann", s) }, "> world"},
		{"redo hello", func(s uint64) (Result, error) { return d.Redo(ctx, "ann", s) }, ">hello world"},
		{"redo !", func(s uint64) (Result, error) { return d.Redo(ctx, "ann", s) }, ">hello world!"},
		{"undo !", func(s uint64) (Result, error) { return d.Undo(ctx, "ann", s) }, ">hello world"},
	}
	for i, st := range steps {
		if _, err := st.do(uint64(3 + i)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := text(t, d); got != st.want {
			t.Fatalf("%s: %q, want %q", st.name, got, st.want)
		}
	}
	// A new edit clears the redo stack.
	mustSubmit(t, d, "ann", 8, d.Version(), ins(12, 0, "x"))
	if _, err := d.Redo(ctx, "ann", 9); !errors.Is(err, ErrNothingToUndo) {
		t.Fatalf("redo after an edit: %v", err)
	}
	if _, err := d.Undo(ctx, "nobody", 1); !errors.Is(err, ErrNothingToUndo) {
		t.Fatalf("undo with no history: %v", err)
	}
	// Undo after someone else deleted the text: nothing left to remove,
	// still a version.
	mustSubmit(t, d, "ben", 3, d.Version(), del(13, 0, 13))
	if _, err := d.Undo(ctx, "ann", 9); err != nil || text(t, d) != "" {
		t.Fatalf("undo of deleted text: %v, %q", err, text(t, d))
	}
}

func TestReopenRebuildsDocument(t *testing.T) {
	ctx := context.Background()
	st := NewMemStore()
	opts := Options{SnapshotEvery: 7, MaxBehind: 20}
	d, err := Open(ctx, st, "r", opts)
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for i := range 50 {
		op := ins(runeLen(s), i%(runeLen(s)+1), "ab"[i%2:i%2+1])
		mustSubmit(t, d, "c", uint64(i+1), uint64(i), op)
		s = mustApply(s, op)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Submit(ctx, "c", 51, 50, ins(50, 0, "x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
	d2, err := Open(ctx, st, "r", opts)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Epoch() != d.Epoch() || d2.Version() != 50 || text(t, d2) != s {
		t.Fatalf("reopened: epoch %s/%s version %d text %q", d2.Epoch(), d.Epoch(), d2.Version(), text(t, d2))
	}
	// Dedup and undo survive the reopen.
	if r, err := d2.Submit(ctx, "c", 50, 49, Op{{Retain: 49}}); err != nil || !r.Duplicate || r.Version != 50 {
		t.Fatalf("resubmission after reopen: %+v, %v", r, err)
	}
	if _, err := d2.Undo(ctx, "c", 51); err != nil {
		t.Fatal(err)
	}
	if got, want := text(t, d2), mustApply(s, mustInvert(t, d2, 50)); got != want {
		t.Fatalf("undo after reopen: %q, want %q", got, want)
	}
	// A different document in the same store gets its own epoch.
	d3, _ := Open(ctx, st, "other", opts)
	if d3.Epoch() == d.Epoch() || d3.Version() != 0 {
		t.Fatalf("new document: epoch %s version %d", d3.Epoch(), d3.Version())
	}
}

func mustInvert(t *testing.T, d *Document, v uint64) Op {
	t.Helper()
	ctx := context.Background()
	before, _ := d.At(ctx, v-1)
	e, _ := d.History(ctx, v, v)
	inv, err := Invert(e[0].Op, before)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// TestFeedOrder follows the document from a reader, as a transport sender
// would, while writers submit concurrently: every version arrives once, in
// order, durable.
func TestFeedOrder(t *testing.T) {
	d, st := openMem(t, Options{MaxBehind: 50})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const writers, each = 4, 50
	var wg sync.WaitGroup
	got := make(chan uint64, writers*each)
	var readErr error
	wg.Go(func() {
		var seen uint64
		for seen < writers*each {
			if _, err := d.Wait(ctx, seen); err != nil {
				readErr = err
				return
			}
			es, err := d.Since(ctx, seen, 7)
			if err != nil {
				readErr = err
				return
			}
			for _, e := range es {
				if e.Version != seen+1 {
					readErr = fmt.Errorf("got version %d after %d", e.Version, seen)
					return
				}
				seen = e.Version
				got <- seen
			}
		}
	})
	var writeWG sync.WaitGroup
	for w := range writers {
		writeWG.Go(func() {
			client := fmt.Sprint("w", w)
			for i := range each {
				for {
					base := d.Version()
					_, err := d.Submit(ctx, client, uint64(i+1), base, ins(int(base), 0, "x"))
					if err == nil {
						break
					}
					// A writer descheduled for long may find its base too old.
					if !errors.Is(err, ErrTooFarBehind) {
						t.Error(err)
						cancel()
						return
					}
				}
			}
		})
	}
	writeWG.Wait()
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	if len(got) != writers*each {
		t.Fatalf("reader saw %d versions", len(got))
	}
	// Reading from before the retained log goes to the store.
	if es, err := d.Since(ctx, 0, 3); err != nil || len(es) != 3 || es[0].Version != 1 {
		t.Fatalf("Since(0): %v, %v", es, err)
	}
	_ = st
}

// slowStore delays every commit, so that concurrent submits pile up.
type slowStore struct {
	*MemStore
	delay time.Duration
	fail  atomic.Bool
}

func (s *slowStore) Commit(ctx context.Context, id string, b Batch) error {
	time.Sleep(s.delay)
	if s.fail.Load() {
		return errors.New("disk on fire")
	}
	return s.MemStore.Commit(ctx, id, b)
}

func TestGroupCommitBatchesConcurrentSubmits(t *testing.T) {
	st := &slowStore{MemStore: NewMemStore(), delay: 2 * time.Millisecond}
	ctx := context.Background()
	d, err := Open(ctx, st, "r", Options{})
	if err != nil {
		t.Fatal(err)
	}
	const clients, each = 16, 10
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				// Insert at the start against version 0: always valid,
				// transformed past everything.
				if _, err := d.Submit(ctx, fmt.Sprint("c", c), uint64(i+1), 0, Op{{Insert: "x"}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := d.Stats()
	if s.Durable != clients*each {
		t.Fatalf("durable %d", s.Durable)
	}
	t.Logf("%d ops in %d commits", s.Durable, s.Commits)
	if s.Commits*3 > s.Durable {
		t.Fatalf("%d ops took %d commits: not batched", s.Durable, s.Commits)
	}
}

func TestFailedCommitIsNeverAcknowledged(t *testing.T) {
	st := &slowStore{MemStore: NewMemStore()}
	ctx := context.Background()
	d, err := Open(ctx, st, "r", Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "ok"))
	st.fail.Store(true)
	if _, err := d.Submit(ctx, "a", 2, 1, ins(2, 2, "lost")); err == nil {
		t.Fatal("submit acknowledged a failed commit")
	}
	st.fail.Store(false)
	if _, err := d.Submit(ctx, "a", 3, 1, ins(2, 2, "x")); err == nil {
		t.Fatal("a failed document accepted more")
	}
	if _, err := d.Snapshot(ctx); err == nil {
		t.Fatal("a failed document handed out a snapshot")
	}
	// Reopening gives the durable state.
	d2, err := Open(ctx, st, "r", Options{})
	if err != nil || text(t, d2) != "ok" {
		t.Fatalf("reopen: %v", err)
	}
}

func TestCancelledSubmitStillCommits(t *testing.T) {
	st := &slowStore{MemStore: NewMemStore(), delay: 5 * time.Millisecond}
	d, err := Open(context.Background(), st, "r", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			defer cancel()
			d.Submit(ctx, fmt.Sprint("c", i), 1, 0, Op{{Insert: "x"}})
		})
	}
	wg.Wait()
	// Every applied op becomes durable without any further request.
	deadline := time.Now().Add(5 * time.Second)
	for d.Version() != d.Stats().Version {
		if time.Now().After(deadline) {
			t.Fatalf("stuck: %+v", d.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}
