package doc

import (
	"unicode/utf8"
)

// reader walks an Op component by component, taking parts of components.
type reader struct {
	op   Op
	i    int    // current component
	rem  int    // code points left in it
	text string // the rest of the current insert
}

func newReader(op Op) reader {
	r := reader{op: op}
	r.load()
	return r
}

func (r *reader) load() {
	if r.i >= len(r.op) {
		r.rem = 0
		return
	}
	c := r.op[r.i]
	r.text = c.Insert
	r.rem = c.Len()
}

func (r *reader) kind() compKind {
	if r.i >= len(r.op) {
		return kindNone
	}
	return r.op[r.i].kind()
}

// take consumes n code points (at most what is left of the component) and
// returns, for an insert, the text taken.
func (r *reader) take(n int) string {
	var s string
	if r.op[r.i].Insert != "" {
		if n == r.rem {
			s = r.text
		} else {
			j := skip(r.text, 0, n)
			s, r.text = r.text[:j], r.text[j:]
		}
	}
	r.rem -= n
	if r.rem == 0 {
		r.i++
		r.load()
	}
	return s
}

// takeAll consumes the rest of the current component.
func (r *reader) takeAll() (int, string) {
	n := r.rem
	return n, r.take(n)
}

// Compose returns the single operation equivalent to a followed by b:
// Apply(Apply(s, a), b) == Apply(s, Compose(a, b)). It fails with
// ErrLengthMismatch if b does not apply to the result of a.
func Compose(a, b Op) (Op, error) {
	_, aTarget, err := a.lengths()
	if err != nil {
		return nil, err
	}
	bBase, _, err := b.lengths()
	if err != nil {
		return nil, err
	}
	if aTarget != bBase {
		return nil, errf(ErrLengthMismatch, "compose: first produces %d code points, second spans %d", aTarget, bBase)
	}
	var out Builder
	out.op = make(Op, 0, len(a)+len(b))
	ra, rb := newReader(a), newReader(b)
	for {
		ka, kb := ra.kind(), rb.kind()
		if ka == kindDelete {
			n, _ := ra.takeAll()
			out.Delete(n)
			continue
		}
		if kb == kindInsert {
			_, s := rb.takeAll()
			out.Insert(s)
			continue
		}
		if ka == kindNone || kb == kindNone {
			break // both end together: the lengths were checked
		}
		n := min(ra.rem, rb.rem)
		switch {
		case ka == kindRetain && kb == kindRetain:
			ra.take(n)
			rb.take(n)
			out.Retain(n)
		case ka == kindRetain && kb == kindDelete:
			ra.take(n)
			rb.take(n)
			out.Delete(n)
		case ka == kindInsert && kb == kindRetain:
			out.Insert(ra.take(n))
			rb.take(n)
		default: // insert then delete: they cancel
			ra.take(n)
			rb.take(n)
		}
	}
	return out.Op(), nil
}

// Transform takes two operations a and b made concurrently on the same text
// and returns a2 and b2 such that applying a then b2 gives the same text as
// applying b then a2:
//
//	Apply(Apply(s, a), b2) == Apply(Apply(s, b), a2)
//
// side breaks the tie when both insert at the same position: with Left a's
// text goes first, with Right b's does. The result depends only on the
// arguments, so every replica that transforms the same pair with the same
// side gets the same operations. It fails with ErrLengthMismatch if a and b
// do not span the same text.
func Transform(a, b Op, side Side) (a2, b2 Op, err error) {
	aBase, _, err := a.lengths()
	if err != nil {
		return nil, nil, err
	}
	bBase, _, err := b.lengths()
	if err != nil {
		return nil, nil, err
	}
	if aBase != bBase {
		return nil, nil, errf(ErrLengthMismatch, "transform: operations span %d and %d code points", aBase, bBase)
	}
	a2, b2 = transform(a, b, side, true)
	return a2, b2, nil
}

// transformOne returns only a2 of Transform(a, b, side), for valid a and b
// of the same base length.
func transformOne(a, b Op, side Side) Op {
	a2, _ := transform(a, b, side, false)
	return a2
}

func transform(a, b Op, side Side, both bool) (Op, Op) {
	var oa, ob Builder
	oa.op = make(Op, 0, len(a)+2)
	if both {
		ob.op = make(Op, 0, len(b)+2)
	}
	ra, rb := newReader(a), newReader(b)
	for {
		ka, kb := ra.kind(), rb.kind()
		if ka == kindInsert && (side == Left || kb != kindInsert) {
			n, s := ra.takeAll()
			oa.Insert(s)
			ob.Retain(n)
			continue
		}
		if kb == kindInsert {
			n, s := rb.takeAll()
			oa.Retain(n)
			ob.Insert(s)
			continue
		}
		if ka == kindNone || kb == kindNone {
			break
		}
		n := min(ra.rem, rb.rem)
		ra.take(n)
		rb.take(n)
		switch {
		case ka == kindRetain && kb == kindRetain:
			oa.Retain(n)
			ob.Retain(n)
		case ka == kindDelete && kb == kindRetain:
			oa.Delete(n)
		case ka == kindRetain && kb == kindDelete:
			ob.Delete(n)
		}
		// Both delete the same text: neither needs to.
	}
	return oa.Op(), ob.Op()
}

// Invert returns the operation that undoes op on the text base it applied
// to: Apply(Apply(base, op), Invert(op, base)) == base.
func Invert(op Op, base string) (Op, error) {
	n, _, err := op.lengths()
	if err != nil {
		return nil, err
	}
	if !utf8.ValidString(base) {
		return nil, errf(ErrInvalidUTF8, "text is not valid UTF-8")
	}
	if m := utf8.RuneCountInString(base); m != n {
		return nil, errf(ErrLengthMismatch, "operation spans %d code points, text has %d", n, m)
	}
	var out Builder
	out.op = make(Op, 0, len(op))
	i := 0 // byte offset in base
	for _, c := range op {
		switch {
		case c.Retain != 0:
			out.Retain(c.Retain)
			i = skip(base, i, c.Retain)
		case c.Delete != 0:
			j := skip(base, i, c.Delete)
			out.Insert(base[i:j])
			i = j
		default:
			out.Delete(utf8.RuneCountInString(c.Insert))
		}
	}
	return out.Op(), nil
}

// invertRemoved inverts a valid op given the code points it deleted, in
// order (as Text.apply records them).
func invertRemoved(op Op, removed []rune) Op {
	var out Builder
	out.op = make(Op, 0, len(op))
	for _, c := range op {
		switch {
		case c.Retain != 0:
			out.Retain(c.Retain)
		case c.Delete != 0:
			out.Insert(string(removed[:c.Delete]))
			removed = removed[c.Delete:]
		default:
			out.Delete(utf8.RuneCountInString(c.Insert))
		}
	}
	return out.Op()
}

// Selection is a cursor or a selected range in a text, in code points:
// Anchor is where the selection started, Head where the caret is. A plain
// cursor has Anchor == Head.
type Selection struct {
	Anchor int `json:"anchor"`
	Head   int `json:"head"`
}

// TransformPosition returns where position pos (a code point offset in the
// text op applies to) is in the text op produces. A position inside deleted
// text moves to where the deletion was. side says whether a position at
// the exact place of an insert stays before it (Left) or moves after it
// (Right): the author's own caret moves after what they typed, so transform
// it with Right. It fails with ErrOutOfRange if pos is not in [0, base length].
func TransformPosition(pos int, op Op, side Side) (int, error) {
	base, _, err := op.lengths()
	if err != nil {
		return 0, err
	}
	if pos < 0 || pos > base {
		return 0, errf(ErrOutOfRange, "position %d outside a text of %d code points", pos, base)
	}
	return transformPos(pos, op, side), nil
}

func transformPos(pos int, op Op, side Side) int {
	out := pos
	at := 0 // position in the base text
	for _, c := range op {
		if at > pos {
			break
		}
		switch {
		case c.Retain != 0:
			at += c.Retain
		case c.Delete != 0:
			if at < pos {
				out -= min(c.Delete, pos-at)
			}
			at += c.Delete
		default:
			if at < pos || side == Right {
				out += utf8.RuneCountInString(c.Insert)
			}
		}
	}
	return out
}

// TransformSelection transforms both ends of sel past op, as
// TransformPosition does.
func TransformSelection(sel Selection, op Op, side Side) (Selection, error) {
	a, err := TransformPosition(sel.Anchor, op, side)
	if err != nil {
		return Selection{}, err
	}
	h, err := TransformPosition(sel.Head, op, side)
	if err != nil {
		return Selection{}, err
	}
	return Selection{Anchor: a, Head: h}, nil
}

// Diff returns an operation that turns text a into text b (both valid
// UTF-8): it keeps their common prefix and suffix and replaces what lies
// between. It is what a plain textarea editor uses to turn a change into an
// operation, and what Restore submits.
func Diff(a, b string) Op {
	// Common prefix, on whole code points.
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	for p > 0 && p < len(a) && !utf8.RuneStart(a[p]) {
		p--
	}
	for p > 0 && p < len(b) && !utf8.RuneStart(b[p]) {
		p--
	}
	// Common suffix, not overlapping the prefix.
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	for s > 0 && !utf8.RuneStart(a[len(a)-s]) {
		s--
	}
	var out Builder
	out.Retain(utf8.RuneCountInString(a[:p]))
	out.Insert(b[p : len(b)-s])
	out.Delete(utf8.RuneCountInString(a[p : len(a)-s]))
	out.Retain(utf8.RuneCountInString(a[len(a)-s:]))
	return out.Op()
}
