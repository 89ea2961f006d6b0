package doc

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

func mustComment(t *testing.T, d *Document, client string, base uint64, from, to int, text string) uint64 {
	t.Helper()
	res, err := d.Comment(context.Background(), client, client+"-name", base, from, to, text)
	if err != nil {
		t.Fatalf("Comment(%d, %d..%d): %v", base, from, to, err)
	}
	return res.Version
}

func threadOf(t *testing.T, d *Document, id uint64) Thread {
	t.Helper()
	ts, _ := d.Threads()
	for _, th := range ts {
		if th.ID == id {
			return th
		}
	}
	t.Fatalf("no thread %d in %+v", id, ts)
	return Thread{}
}

func TestThreadRangeMovesWithEdits(t *testing.T) {
	ctx := context.Background()
	d, _ := openMem(t, Options{})
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "hello brave world")) // v1
	id := mustComment(t, d, "a", 1, 6, 11, "which brave?")      // "brave", v2
	if id != 2 {
		t.Fatalf("thread id %d, want its version 2", id)
	}
	th := threadOf(t, d, id)
	if th.Quote != "brave" || th.From != 6 || th.To != 11 || th.Orphaned || len(th.Comments) != 1 || th.Comments[0].Text != "which brave?" {
		t.Fatalf("thread %+v", th)
	}
	check := func(want string) {
		t.Helper()
		th := threadOf(t, d, id)
		if got := runeSlice(text(t, d), th.From, th.To); got != want || th.Orphaned {
			t.Fatalf("range %d..%d holds %q, want %q (orphaned %v)", th.From, th.To, got, want, th.Orphaned)
		}
	}
	v := d.Version()
	mustSubmit(t, d, "b", 1, v, ins(17, 0, ">> ")) // before: shifts
	check("brave")
	mustSubmit(t, d, "b", 2, v+1, ins(20, 9, "X")) // at From: stays outside
	check("brave")
	mustSubmit(t, d, "b", 3, v+2, ins(21, 15, "Y")) // at To: stays outside
	check("brave")
	mustSubmit(t, d, "b", 4, v+3, ins(22, 12, "-")) // inside: grows
	check("br-ave")
	// A comment made against an old version lands where it was meant.
	old := mustComment(t, d, "c", v, 0, 5, "greeting") // "hello" at version v
	if th := threadOf(t, d, old); runeSlice(text(t, d), th.From, th.To) != "hello" || th.Quote != "hello" {
		t.Fatalf("late comment %+v on %q", th, text(t, d))
	}
	if _, err := d.Reply(ctx, "b", "Bob", id, "the brave one"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Resolve(ctx, "b", "Bob", id, true); err != nil {
		t.Fatal(err)
	}
	if th := threadOf(t, d, id); !th.Resolved || len(th.Comments) != 2 || th.Comments[1].Name != "Bob" {
		t.Fatalf("after reply and resolve: %+v", th)
	}
	if _, err := d.Resolve(ctx, "b", "Bob", id, false); err != nil {
		t.Fatal(err)
	}
	if th := threadOf(t, d, id); th.Resolved {
		t.Fatalf("reopen: %+v", th)
	}
	// Deleting the whole range (and more) orphans the thread, not loses it.
	th = threadOf(t, d, id)
	cur := text(t, d)
	mustSubmit(t, d, "b", 5, d.Version(), del(runeLen(cur), th.From-1, th.To-th.From+2))
	th = threadOf(t, d, id)
	if !th.Orphaned || th.From != th.To || th.Quote != "brave" || len(th.Comments) != 2 {
		t.Fatalf("after deleting the range: %+v", th)
	}
	// An orphan stays one, even when text is typed where it was.
	mustSubmit(t, d, "b", 6, d.Version(), ins(runeLen(text(t, d)), th.From, "brave"))
	if th2 := threadOf(t, d, id); !th2.Orphaned || th2.From != th2.To {
		t.Fatalf("orphan re-anchored: %+v", th2)
	}
	// Text-only state: comments never change the text, and undo skips them.
	before := text(t, d)
	if _, err := d.Undo(ctx, "b", 7); err != nil {
		t.Fatal(err)
	}
	if got := text(t, d); got == before || strings.Contains(got, "brave") {
		t.Fatalf("undo reverted %q to %q", before, got)
	}
}

func runeSlice(s string, from, to int) string {
	r := []rune(s)
	return string(r[from:to])
}

func TestCommentRefusals(t *testing.T) {
	ctx := context.Background()
	d, _ := openMem(t, Options{MaxThreads: 2})
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "abc"))
	for _, c := range []struct {
		base     uint64
		from, to int
		text     string
		kind     ErrorKind
	}{
		{1, 2, 2, "x", ErrOutOfRange},
		{1, 0, 4, "x", ErrOutOfRange},
		{1, -1, 2, "x", ErrOutOfRange},
		{0, 0, 1, "x", ErrOutOfRange}, // version 0 is empty
		{5, 0, 1, "x", ErrFutureVersion},
		{1, 0, 1, "", ErrBadRequest},
		{1, 0, 1, strings.Repeat("x", MaxNoteText+1), ErrBadRequest},
	} {
		if _, err := d.Comment(ctx, "a", "A", c.base, c.from, c.to, c.text); KindOf(err) != c.kind {
			t.Errorf("Comment(%d, %d..%d): %v, want %s", c.base, c.from, c.to, err, c.kind)
		}
	}
	if _, err := d.Reply(ctx, "a", "A", 1, "no such thread"); KindOf(err) != ErrUnknownThread {
		t.Errorf("reply to a version that is no thread: %v", err)
	}
	mustComment(t, d, "a", 1, 0, 1, "one")
	mustComment(t, d, "a", 1, 1, 2, "two")
	if _, err := d.Comment(ctx, "a", "A", 1, 0, 1, "three"); KindOf(err) != ErrTooMany {
		t.Errorf("third thread: %v", err)
	}
	if d.Version() != 3 {
		t.Errorf("refusals committed something: version %d", d.Version())
	}
}

func TestSuggestionAcceptAfterConcurrentEdits(t *testing.T) {
	ctx := context.Background()
	d, _ := openMem(t, Options{})
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "the cat sat")) // v1
	// Suggester proposes "black " before "cat" at version 1, while two
	// editors change the text before and after, concurrently.
	mustSubmit(t, d, "b", 1, 1, ins(11, 0, "Yes, "))   // v2, not seen by the suggester
	mustSubmit(t, d, "c", 1, 1, ins(11, 11, " down.")) // v3
	s, err := d.Suggest(ctx, "s", "Sue", 1, ins(11, 4, "black "))
	if err != nil {
		t.Fatal(err)
	}
	if text(t, d) != "Yes, the cat sat down." {
		t.Fatalf("a suggestion changed the text: %q", text(t, d))
	}
	mustSubmit(t, d, "b", 2, 4, del(22, 17, 4)) // v5: removes "down"
	sg, ok := d.Suggestion(s.Version)
	if !ok || mustApply(text(t, d), sg.Op) != "Yes, the black cat sat ." {
		t.Fatalf("suggestion %+v on %q", sg, text(t, d))
	}
	res, err := d.Accept(ctx, "a", "Ada", 2, s.Version)
	if err != nil {
		t.Fatal(err)
	}
	if got := text(t, d); got != "Yes, the black cat sat ." {
		t.Fatalf("after accept: %q", got)
	}
	if _, ok := d.Suggestion(s.Version); ok {
		t.Fatal("accepted suggestion still open")
	}
	// Exactly once, and undoable by the accepter like any edit.
	if dup, err := d.Accept(ctx, "a", "Ada", 2, s.Version); err != nil || !dup.Duplicate || dup.Version != res.Version {
		t.Fatalf("resubmitted accept: %+v, %v", dup, err)
	}
	if _, err := d.Accept(ctx, "a", "Ada", 3, s.Version); KindOf(err) != ErrUnknownSuggestion {
		t.Fatalf("second accept: %v", err)
	}
	if _, err := d.Undo(ctx, "a", 4); err != nil {
		t.Fatal(err)
	}
	if got := text(t, d); got != "Yes, the cat sat ." {
		t.Fatalf("after undoing the accept: %q", got)
	}
}

func TestSuggestionRejectAndRefusals(t *testing.T) {
	ctx := context.Background()
	d, _ := openMem(t, Options{MaxSuggestions: 1})
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "abc"))
	if _, err := d.Suggest(ctx, "s", "S", 1, Op{{Retain: 3}}); KindOf(err) != ErrBadRequest {
		t.Errorf("no-op suggestion: %v", err)
	}
	if _, err := d.Suggest(ctx, "s", "S", 1, ins(2, 0, "x")); KindOf(err) != ErrLengthMismatch {
		t.Errorf("wrong length: %v", err)
	}
	s, err := d.Suggest(ctx, "s", "S", 1, del(3, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Suggest(ctx, "s", "S", 1, del(3, 1, 1)); KindOf(err) != ErrTooMany {
		t.Errorf("second suggestion over the limit: %v", err)
	}
	if _, err := d.Reject(ctx, "x", "X", s.Version, "x"); KindOf(err) != ErrForbidden {
		t.Errorf("someone else's reject: %v", err)
	}
	if _, err := d.Reject(ctx, "s", "S", s.Version, "s"); err != nil {
		t.Errorf("author withdraws: %v", err)
	}
	if _, err := d.Reject(ctx, "s", "S", s.Version, ""); KindOf(err) != ErrUnknownSuggestion {
		t.Errorf("reject twice: %v", err)
	}
	if text(t, d) != "abc" {
		t.Errorf("text %q", text(t, d))
	}
}

// TestNotesSurviveReopen replays comments and suggestions from a BoltStore,
// across snapshots and from an old snapshot.
func TestNotesSurviveReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{SnapshotEvery: 3, MaxBehind: 4}
	d, err := Open(ctx, st, "room", opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "0123456789"))
	seq := uint64(1)
	for i := range 40 {
		v := d.Version()
		size := runeLen(text(t, d))
		switch rng.IntN(5) {
		case 0:
			if size > 1 {
				from := rng.IntN(size - 1)
				mustComment(t, d, "c", v, from, from+1+rng.IntN(size-from-1), "c")
			}
		case 1:
			if _, err := d.Suggest(ctx, "s", "S", v, ins(size, rng.IntN(size+1), "s")); err != nil {
				t.Fatal(err)
			}
		case 2:
			ts, _ := d.Threads()
			if len(ts) > 0 {
				if _, err := d.Reply(ctx, "r", "R", ts[rng.IntN(len(ts))].ID, "reply"); err != nil {
					t.Fatal(err)
				}
			}
		case 3:
			_, ss := d.Threads()
			if len(ss) > 0 {
				seq++
				if _, err := d.Accept(ctx, "a", "A", seq, ss[0].ID); err != nil {
					t.Fatal(err)
				}
			}
		default:
			seq++
			op := randOp(rng, size)
			if i%2 == 0 && size > 2 {
				op = del(size, 0, 2)
			}
			mustSubmit(t, d, "a", seq, v, op)
		}
	}
	wantText := text(t, d)
	wantT, wantS := d.Threads()
	if len(wantT) == 0 || len(wantS) == 0 {
		t.Fatalf("the run made %d threads and %d suggestions; want some of each", len(wantT), len(wantS))
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d2, err := Open(ctx, st, "room", opts)
	if err != nil {
		t.Fatal(err)
	}
	gotT, gotS := d2.Threads()
	if text(t, d2) != wantText || !sameJSON(t, gotT, wantT) || !sameJSON(t, gotS, wantS) {
		t.Fatalf("after reopen:\n%q %+v %+v\nwant\n%q %+v %+v", text(t, d2), gotT, gotS, wantText, wantT, wantS)
	}
	sn, err := d2.Snapshot(ctx)
	if err != nil || !sameJSON(t, sn.Threads, wantT) || !sameJSON(t, sn.Suggestions, wantS) {
		t.Fatalf("snapshot after reopen: %+v, %v", sn, err)
	}
}

// TestThreadsPropertyRandom checks, over random edits, that every range
// stays inside the text and that a range nobody edited inside still holds
// its quote.
func TestThreadsPropertyRandom(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 20 {
		d, _ := openMem(t, Options{})
		mustSubmit(t, d, "a", 1, 0, ins(0, 0, "ab[MARK]cd"))
		id := mustComment(t, d, "a", 1, 2, 8, "marked")
		seq := uint64(1)
		for range 60 {
			cur := []rune(text(t, d))
			th := threadOf(t, d, id)
			// Edit anywhere outside the marked range.
			var op Op
			if rng.IntN(2) == 0 {
				pos := rng.IntN(th.From + 1)
				if rng.IntN(2) == 0 {
					pos = th.To + rng.IntN(len(cur)-th.To+1)
				}
				op = ins(len(cur), pos, randText(rng, 1+rng.IntN(3)))
			} else if th.From > 0 {
				p := rng.IntN(th.From)
				op = del(len(cur), p, 1+rng.IntN(th.From-p))
			} else {
				continue
			}
			seq++
			mustSubmit(t, d, "a", seq, d.Version(), op)
			// Other threads on random ranges, orphaned or not, stay in bounds.
			if rng.IntN(4) == 0 {
				n := runeLen(text(t, d))
				f := rng.IntN(n - 1)
				if _, err := d.Comment(ctx, "b", "B", d.Version(), f, f+1, "x"); err != nil {
					t.Fatal(err)
				}
			}
		}
		if th := threadOf(t, d, id); th.Orphaned || runeSlice(text(t, d), th.From, th.To) != "[MARK]" {
			t.Fatalf("round %d: range %+v of %q", round, th, text(t, d))
		}
		// Now delete everything: every thread is orphaned, positions 0.
		n := runeLen(text(t, d))
		seq++
		mustSubmit(t, d, "a", seq, d.Version(), del(n, 0, n))
		ts, _ := d.Threads()
		for _, th := range ts {
			if !th.Orphaned || th.From != 0 || th.To != 0 {
				t.Fatalf("round %d: after deleting all: %+v", round, th)
			}
		}
	}
}

func TestNoteEntriesAreNotRequests(t *testing.T) {
	ctx := context.Background()
	d, _ := openMem(t, Options{})
	mustSubmit(t, d, "a", 1, 0, ins(0, 0, "abc"))
	mustComment(t, d, "a", 1, 0, 1, "x")
	// The client's mark is still its edit: a resubmission is recognised.
	res, err := d.Submit(ctx, "a", 1, 0, ins(0, 0, "abc"))
	if err != nil || !res.Duplicate || res.Version != 1 {
		t.Fatalf("resubmit after a comment: %+v, %v", res, err)
	}
	// And undo reverts the edit, not the comment.
	if _, err := d.Undo(ctx, "a", 2); err != nil {
		t.Fatal(err)
	}
	if got := text(t, d); got != "" {
		t.Fatalf("undo: %q", got)
	}
	es, err := d.History(ctx, 1, 10)
	if err != nil || len(es) != 3 || es[1].Action != ActionComment || es[1].Note == nil || es[1].Note.Quote != "a" {
		t.Fatalf("history %+v, %v", es, err)
	}
}

func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}
