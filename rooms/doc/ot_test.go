package doc

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// TestTransformProperties checks, on random concurrent pairs, convergence
// (TP1) for both sides, that the results are normalized, and that a
// position transformed past a then b2 ends where it ends past b then a2
// whenever it is not at a concurrent insert.
func TestTransformProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		doc := randText(rng, rng.IntN(20))
		n := runeLen(doc)
		a, b := randOp(rng, n), randOp(rng, n)
		for _, side := range []Side{Left, Right} {
			a2, b2, err := Transform(a, b, side)
			if err != nil {
				t.Fatal(err)
			}
			if a2.Validate() != nil || b2.Validate() != nil {
				t.Fatalf("case %d: not normalized: %v %v", i, a2, b2)
			}
			x := mustApply(mustApply(doc, a), b2)
			y := mustApply(mustApply(doc, b), a2)
			if x != y {
				t.Fatalf("case %d: %q a=%v b=%v side=%v: %q != %q", i, doc, a, b, side, x, y)
			}
			// The other side is the mirror image.
			other := Right
			if side == Right {
				other = Left
			}
			b3, a3, _ := Transform(b, a, other)
			if !sameOp(a2, a3) || !sameOp(b2, b3) {
				t.Fatalf("case %d: Transform is not symmetric", i)
			}
		}
	}
}

// TestComposeProperties checks Compose against applying one op after the
// other, and associativity.
func TestComposeProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 3000 {
		doc := randText(rng, rng.IntN(20))
		a := randOp(rng, runeLen(doc))
		b := randOp(rng, a.TargetLen())
		c := randOp(rng, b.TargetLen())
		ab, err := Compose(a, b)
		if err != nil {
			t.Fatal(err)
		}
		if ab.Validate() != nil {
			t.Fatalf("case %d: not normalized: %v", i, ab)
		}
		if got, want := mustApply(doc, ab), mustApply(mustApply(doc, a), b); got != want {
			t.Fatalf("case %d: compose gives %q, want %q", i, got, want)
		}
		bc, _ := Compose(b, c)
		l, _ := Compose(ab, c)
		r, _ := Compose(a, bc)
		if mustApply(doc, l) != mustApply(doc, r) {
			t.Fatalf("case %d: compose is not associative", i)
		}
	}
}

// TestInvertProperties checks that an inverse restores the text, and that
// the inverse kept by the gap buffer equals Invert.
func TestInvertProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		doc := randText(rng, rng.IntN(20))
		op := randOp(rng, runeLen(doc))
		inv, err := Invert(op, doc)
		if err != nil {
			t.Fatal(err)
		}
		if back := mustApply(mustApply(doc, op), inv); back != doc {
			t.Fatalf("case %d: %q", i, back)
		}
		tx := NewText(doc)
		var removed []rune
		tx.apply(op, &removed)
		if inv2 := invertRemoved(op, removed); !sameOp(inv, inv2) {
			t.Fatalf("case %d: invertRemoved %v, Invert %v", i, inv2, inv)
		}
	}
}

// TestTextMatchesApply runs long random edit sequences through the gap
// buffer and the string Apply, which must agree at every step.
func TestTextMatchesApply(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 20 {
		s := randText(rng, rng.IntN(200))
		tx := NewText(s)
		for j := range 300 {
			op := randOp(rng, runeLen(s))
			if j%3 == 0 { // local single edits, like typing
				pos := rng.IntN(runeLen(s) + 1)
				op, _ = Edit(runeLen(s), pos, min(rng.IntN(2), runeLen(s)-pos), randText(rng, rng.IntN(3)))
			}
			s = mustApply(s, op)
			if err := tx.Apply(op); err != nil {
				t.Fatal(err)
			}
			if tx.Len() != runeLen(s) || tx.String() != s {
				t.Fatalf("step %d: gap buffer %q, want %q", j, tx.String(), s)
			}
			if n := tx.Len(); n > 2 {
				if got, want := tx.Slice(1, n-1), string([]rune(s)[1:n-1]); got != want {
					t.Fatalf("Slice = %q, want %q", got, want)
				}
			}
		}
	}
}

// TestCursorProperties: a transformed position stays inside the new text,
// and text on both sides of a cursor outside any edit stays beside it.
func TestCursorProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 3000 {
		doc := randText(rng, rng.IntN(20))
		n := runeLen(doc)
		op := randOp(rng, n)
		pos := rng.IntN(n + 1)
		l, err := TransformPosition(pos, op, Left)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := TransformPosition(pos, op, Right)
		if l < 0 || r < l || r > op.TargetLen() {
			t.Fatalf("case %d: left %d right %d of %d", i, l, r, op.TargetLen())
		}
		// The code point right after the cursor, if the op retains it, is
		// still right after the Right-transformed cursor.
		out := []rune(mustApply(doc, op))
		if pos < n && retained(op, pos) && out[r] != []rune(doc)[pos] {
			t.Fatalf("case %d: %q %v pos %d: after cursor %q", i, doc, op, pos, string(out[r]))
		}
	}
}

// retained reports whether op keeps the code point at pos.
func retained(op Op, pos int) bool {
	at := 0
	for _, c := range op {
		switch {
		case c.Retain != 0:
			if pos < at+c.Retain {
				return true
			}
			at += c.Retain
		case c.Delete != 0:
			if pos < at+c.Delete {
				return false
			}
			at += c.Delete
		}
	}
	return false
}

func TestBuilderNormalizes(t *testing.T) {
	var b Builder
	op := b.Retain(2).Retain(1).Delete(1).Insert("x").Delete(2).Insert("y").Retain(0).Insert("").Op()
	if got := op.String(); got != `[3,"xy",-3]` {
		t.Fatalf("got %s", got)
	}
	if err := op.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestEdit(t *testing.T) {
	op, err := Edit(10, 3, 2, "é")
	if err != nil || op.String() != `[3,"é",-2,5]` {
		t.Fatalf("Edit = %v, %v", op, err)
	}
	if _, err := Edit(3, 2, 2, ""); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Edit past the end: %v", err)
	}
	if _, err := Edit(3, 0, 0, "\xff"); !errors.Is(err, ErrInvalidUTF8) {
		t.Fatalf("Edit with bad UTF-8: %v", err)
	}
}

func TestDiff(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 2000 {
		a := randText(rng, rng.IntN(12))
		b := randText(rng, rng.IntN(12))
		if rng.IntN(2) == 0 { // share a prefix and a suffix
			r := []rune(a)
			b = string(r[:len(r)/2]) + b + string(r[len(r)/2:])
		}
		op := Diff(a, b)
		if err := op.Validate(); err != nil {
			t.Fatal(err)
		}
		if got := mustApply(a, op); got != b {
			t.Fatalf("Diff(%q, %q) = %v gives %q", a, b, op, got)
		}
	}
	if op := Diff("héllo", "hallo"); op.String() != `[1,"a",-1,3]` {
		t.Fatalf("Diff splits a code point: %v", op)
	}
}

// TestRefusedOpsChangeNothing checks that every kind of invalid op is
// refused with its kind, by Apply, Text.Apply, Compose, Transform, Invert.
func TestRefusedOpsChangeNothing(t *testing.T) {
	cases := []struct {
		op   Op
		kind ErrorKind
	}{
		{Op{{Retain: 1}, {Retain: 2}}, ErrNotNormalized},
		{Op{{Delete: 1}, {Insert: "x"}, {Retain: 2}}, ErrNotNormalized},
		{Op{{}, {Retain: 3}}, ErrZeroLength},
		{Op{{Retain: 1, Insert: "x"}, {Retain: 2}}, ErrMalformed},
		{Op{{Retain: -1}}, ErrMalformed},
		{Op{{Insert: "\xed\xa0\x80"}, {Retain: 3}}, ErrInvalidUTF8},
		{Op{{Retain: 1}, {Delete: 3}}, ErrLengthMismatch},
		{Op{{Retain: 2}, {Insert: "x"}}, ErrLengthMismatch},
	}
	for _, c := range cases {
		tx := NewText("abc")
		if err := tx.Apply(c.op); !errors.Is(err, c.kind) || tx.String() != "abc" {
			t.Errorf("Text.Apply(%#v) = %v, text %q; want %s", c.op, err, tx.String(), c.kind)
		}
		if _, err := Apply("abc", c.op); !errors.Is(err, c.kind) {
			t.Errorf("Apply(%#v) = %v, want %s", c.op, err, c.kind)
		}
		if _, err := Invert(c.op, "abc"); !errors.Is(err, c.kind) {
			t.Errorf("Invert(%#v) = %v, want %s", c.op, err, c.kind)
		}
		if _, _, err := Transform(c.op, Op{{Retain: 3}}, Left); !errors.Is(err, c.kind) {
			t.Errorf("Transform(%#v) = %v, want %s", c.op, err, c.kind)
		}
		var e *Error
		if _, err := Apply("abc", c.op); !errors.As(err, &e) || e.Error() == "" {
			t.Errorf("Apply(%#v): not an *Error: %v", c.op, err)
		}
	}
}
