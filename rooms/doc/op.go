package doc

import (
	"unicode/utf8"
)

// maxCount is the largest retain or delete count, and the largest text
// length: the largest integer that JSON numbers carry exactly in JavaScript
// (2^53-1), so that Go and the browser agree on every operation.
const maxCount = 1<<53 - 1

// Component is one step of an operation. Exactly one field is set: Retain
// keeps that many code points, Insert inserts its text, Delete removes that
// many code points.
type Component struct {
	Retain int
	Insert string
	Delete int
}

// Op is a text operation: components that walk the whole text from start to
// end. Its base length (retains plus deletes) must equal the length of the
// text it applies to; its target length (retains plus inserts) is the
// length after. All lengths count Unicode code points.
//
// A valid Op is normalized: no empty components, no two adjacent components
// of the same kind, and an insert never directly follows a delete. The empty
// Op is the no-op on the empty text. An Op is immutable once built: the
// functions of this package never modify the ops they are given.
type Op []Component

// Side breaks the tie between two inserts at the same position, and decides
// whether a cursor at the position of an insert stays before it or moves
// after it.
type Side uint8

const (
	// Left: the transformed operation's insert goes first (before the
	// other's); a cursor stays before an insert at its position.
	Left Side = iota
	// Right: the other operation's insert goes first; a cursor moves after
	// an insert at its position.
	Right
)

func (s Side) String() string {
	if s == Left {
		return "left"
	}
	return "right"
}

// Len returns the component's length in code points.
func (c Component) Len() int {
	switch {
	case c.Retain != 0:
		return c.Retain
	case c.Delete != 0:
		return c.Delete
	default:
		return utf8.RuneCountInString(c.Insert)
	}
}

type compKind uint8

const (
	kindNone compKind = iota
	kindRetain
	kindInsert
	kindDelete
)

func (c Component) kind() compKind {
	switch {
	case c.Retain != 0:
		return kindRetain
	case c.Insert != "":
		return kindInsert
	case c.Delete != 0:
		return kindDelete
	}
	return kindNone
}

// Validate checks that op is a well-formed, normalized operation: exactly
// one field per component, positive counts no larger than 2^53-1, valid
// UTF-8, no empty components, and the normal order. It does not know the
// text, so it cannot check the length; Apply does.
func (op Op) Validate() error {
	_, _, err := op.lengths()
	return err
}

// lengths validates op and returns its base and target lengths.
func (op Op) lengths() (base, target int, err error) {
	prev := kindNone
	for i, c := range op {
		set := 0
		if c.Retain != 0 {
			set++
		}
		if c.Insert != "" {
			set++
		}
		if c.Delete != 0 {
			set++
		}
		if set == 0 {
			return 0, 0, errAt(ErrZeroLength, i, "empty component")
		}
		if set > 1 {
			return 0, 0, errAt(ErrMalformed, i, "component sets more than one of retain, insert, delete")
		}
		k := c.kind()
		switch k {
		case kindRetain:
			if c.Retain < 0 || c.Retain > maxCount {
				return 0, 0, errAt(ErrMalformed, i, "retain count %d out of range", c.Retain)
			}
			base += c.Retain
			target += c.Retain
		case kindDelete:
			if c.Delete < 0 || c.Delete > maxCount {
				return 0, 0, errAt(ErrMalformed, i, "delete count %d out of range", c.Delete)
			}
			base += c.Delete
		case kindInsert:
			if !utf8.ValidString(c.Insert) {
				return 0, 0, errAt(ErrInvalidUTF8, i, "inserted text is not valid UTF-8")
			}
			target += utf8.RuneCountInString(c.Insert)
		}
		if base > maxCount || target > maxCount {
			return 0, 0, errAt(ErrMalformed, i, "operation longer than 2^53-1 code points")
		}
		if k == prev {
			return 0, 0, errAt(ErrNotNormalized, i, "two adjacent components of the same kind")
		}
		if prev == kindDelete && k == kindInsert {
			return 0, 0, errAt(ErrNotNormalized, i, "insert directly after a delete (it must come first)")
		}
		prev = k
	}
	return base, target, nil
}

// BaseLen returns the length in code points of the text op applies to.
// It assumes op is valid.
func (op Op) BaseLen() int {
	n := 0
	for _, c := range op {
		n += c.Retain + c.Delete
	}
	return n
}

// TargetLen returns the length in code points of the text op produces.
// It assumes op is valid.
func (op Op) TargetLen() int {
	n := 0
	for _, c := range op {
		if c.Insert != "" {
			n += utf8.RuneCountInString(c.Insert)
		} else {
			n += c.Retain
		}
	}
	return n
}

// IsNoop reports whether op leaves the text unchanged (it only retains).
func (op Op) IsNoop() bool {
	for _, c := range op {
		if c.Retain == 0 {
			return false
		}
	}
	return true
}

// Builder builds a normalized Op: it merges adjacent components of the same
// kind, drops empty ones and puts an insert before a delete it follows. The
// zero value is ready to use.
type Builder struct {
	op Op
}

// Retain keeps n code points (n <= 0 adds nothing).
func (b *Builder) Retain(n int) *Builder {
	if n <= 0 {
		return b
	}
	if l := len(b.op); l > 0 && b.op[l-1].Retain != 0 {
		b.op[l-1].Retain += n
		return b
	}
	b.op = append(b.op, Component{Retain: n})
	return b
}

// Insert inserts s ("" adds nothing).
func (b *Builder) Insert(s string) *Builder {
	if s == "" {
		return b
	}
	l := len(b.op)
	switch {
	case l > 0 && b.op[l-1].Insert != "":
		b.op[l-1].Insert += s
	case l > 0 && b.op[l-1].Delete != 0:
		if l > 1 && b.op[l-2].Insert != "" {
			b.op[l-2].Insert += s
		} else {
			b.op = append(b.op, b.op[l-1])
			b.op[l-1] = Component{Insert: s}
		}
	default:
		b.op = append(b.op, Component{Insert: s})
	}
	return b
}

// Delete removes n code points (n <= 0 adds nothing).
func (b *Builder) Delete(n int) *Builder {
	if n <= 0 {
		return b
	}
	if l := len(b.op); l > 0 && b.op[l-1].Delete != 0 {
		b.op[l-1].Delete += n
		return b
	}
	b.op = append(b.op, Component{Delete: n})
	return b
}

// Op returns the operation built so far. The Builder must not be used after.
func (b *Builder) Op() Op {
	op := b.op
	b.op = nil
	return op
}

// Edit returns the operation that, on a text of length size, deletes del
// code points at pos and inserts ins there: the usual shape of one
// keystroke or paste. It fails with ErrOutOfRange if the range does not fit
// and ErrInvalidUTF8 if ins is not valid UTF-8.
func Edit(size, pos, del int, ins string) (Op, error) {
	if pos < 0 || del < 0 || size < 0 || size > maxCount || pos > size || del > size-pos {
		return nil, errf(ErrOutOfRange, "edit at %d deleting %d in a text of %d", pos, del, size)
	}
	if !utf8.ValidString(ins) {
		return nil, errf(ErrInvalidUTF8, "inserted text is not valid UTF-8")
	}
	n := 1
	if ins != "" {
		n++
	}
	if del > 0 {
		n++
	}
	b := Builder{op: make(Op, 0, n+1)}
	b.Retain(pos).Insert(ins).Delete(del).Retain(size - pos - del)
	return b.Op(), nil
}
