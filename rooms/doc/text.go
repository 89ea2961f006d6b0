package doc

import (
	"strings"
	"unicode/utf8"
)

// Text is a mutable text addressed by code point: a gap buffer of runes.
// Applying an operation moves the gap to each edit and edits in place, so an
// edit costs the distance from the previous edit (usually a few code
// points), not the length of the text. The zero value is the empty text. A
// Text is not safe for concurrent use.
type Text struct {
	buf        []rune
	gap0, gap1 int // the gap is buf[gap0:gap1]
}

// minGap is the smallest gap left after growing the buffer.
const minGap = 64

// NewText returns a Text holding s. s must be valid UTF-8 (invalid bytes
// become U+FFFD).
func NewText(s string) *Text {
	n := utf8.RuneCountInString(s)
	buf := make([]rune, n+max(minGap, n/8))
	i := 0
	for _, r := range s {
		buf[i] = r
		i++
	}
	return &Text{buf: buf, gap0: n, gap1: len(buf)}
}

// Len returns the length of the text in code points.
func (t *Text) Len() int { return len(t.buf) - (t.gap1 - t.gap0) }

// String returns the text.
func (t *Text) String() string {
	return t.Slice(0, t.Len())
}

// Slice returns the code points [from, to) of the text. It panics if the
// range is out of bounds, like slicing.
func (t *Text) Slice(from, to int) string {
	if from < 0 || to < from || to > t.Len() {
		panic("doc: Text.Slice out of range")
	}
	gap := t.gap1 - t.gap0
	a := t.buf[min(from, t.gap0):min(to, t.gap0)]
	b := t.buf[max(from, t.gap0)+gap : max(to, t.gap0)+gap]
	var sb strings.Builder
	sb.Grow(utf8Len(a) + utf8Len(b))
	writeRunes(&sb, a)
	writeRunes(&sb, b)
	return sb.String()
}

func utf8Len(rs []rune) int {
	n := 0
	for _, r := range rs {
		if r < utf8.RuneSelf {
			n++
		} else {
			n += utf8.RuneLen(r)
		}
	}
	return n
}

// writeRunes encodes rs into sb, a chunk at a time.
func writeRunes(sb *strings.Builder, rs []rune) {
	var tmp [1024]byte
	n := 0
	for _, r := range rs {
		if r < utf8.RuneSelf {
			tmp[n] = byte(r)
			n++
		} else {
			n += utf8.EncodeRune(tmp[n:], r)
		}
		if n > len(tmp)-utf8.UTFMax {
			sb.Write(tmp[:n])
			n = 0
		}
	}
	sb.Write(tmp[:n])
}

// Apply applies op to the text. It checks op first (Validate, and that its
// base length equals the text's length) and changes nothing if op is
// refused.
func (t *Text) Apply(op Op) error {
	base, _, err := op.lengths()
	if err != nil {
		return err
	}
	if base != t.Len() {
		return errf(ErrLengthMismatch, "operation spans %d code points, text has %d", base, t.Len())
	}
	t.apply(op, nil)
	return nil
}

// apply applies a valid op of the right length. If removed is not nil, the
// deleted code points are appended to it in order.
func (t *Text) apply(op Op, removed *[]rune) {
	pos := 0
	for _, c := range op {
		switch {
		case c.Retain != 0:
			pos += c.Retain
		case c.Delete != 0:
			t.moveGap(pos)
			if removed != nil {
				*removed = append(*removed, t.buf[t.gap1:t.gap1+c.Delete]...)
			}
			t.gap1 += c.Delete
		default:
			t.moveGap(pos)
			n := utf8.RuneCountInString(c.Insert)
			if t.gap1-t.gap0 < n {
				t.grow(n)
			}
			i := t.gap0
			for _, r := range c.Insert {
				t.buf[i] = r
				i++
			}
			t.gap0 = i
			pos += n
		}
	}
}

// moveGap moves the gap so that it starts at code point pos.
func (t *Text) moveGap(pos int) {
	switch {
	case pos < t.gap0:
		n := copy(t.buf[t.gap1-(t.gap0-pos):t.gap1], t.buf[pos:t.gap0])
		t.gap0 -= n
		t.gap1 -= n
	case pos > t.gap0:
		gap := t.gap1 - t.gap0
		n := copy(t.buf[t.gap0:], t.buf[t.gap1:pos+gap])
		t.gap0 += n
		t.gap1 += n
	}
}

// grow makes the gap hold at least n code points.
func (t *Text) grow(n int) {
	size := t.Len()
	gap := max(n+minGap, (size+n)/4)
	buf := make([]rune, size+gap)
	copy(buf, t.buf[:t.gap0])
	tail := len(t.buf) - t.gap1
	copy(buf[len(buf)-tail:], t.buf[t.gap1:])
	t.gap1 = len(buf) - tail
	t.buf = buf
}

// Apply applies op to s and returns the result. It refuses op, with an
// *Error, if op is invalid or its base length is not the length of s.
func Apply(s string, op Op) (string, error) {
	base, target, err := op.lengths()
	if err != nil {
		return "", err
	}
	if n := utf8.RuneCountInString(s); base != n {
		return "", errf(ErrLengthMismatch, "operation spans %d code points, text has %d", base, n)
	}
	if !utf8.ValidString(s) {
		return "", errf(ErrInvalidUTF8, "text is not valid UTF-8")
	}
	var sb strings.Builder
	sb.Grow(len(s) + target - base)
	i := 0 // byte offset in s
	for _, c := range op {
		switch {
		case c.Retain != 0:
			j := skip(s, i, c.Retain)
			sb.WriteString(s[i:j])
			i = j
		case c.Delete != 0:
			i = skip(s, i, c.Delete)
		default:
			sb.WriteString(c.Insert)
		}
	}
	return sb.String(), nil
}

// skip returns the byte offset n code points after byte offset i in s.
func skip(s string, i, n int) int {
	for ; n > 0; n-- {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return i
}
