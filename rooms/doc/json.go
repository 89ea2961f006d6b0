package doc

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The JSON form of an Op is an array of components, the format of ot.js and
// ShareDB's text type:
//
//	[5, "abc", -3, 12]
//
// a positive integer retains that many code points, a string inserts it, a
// negative integer deletes that many code points. It was chosen because it
// is the most compact form that JavaScript reads with JSON.parse alone, and
// it is the format browser OT libraries already speak. The encoding is
// stable: no spaces, and strings escaped exactly as JavaScript's
// JSON.stringify escapes them (only '"', '\\' and control characters), so
// Go and the browser produce the same bytes for the same operation.

// AppendJSON appends the JSON form of op to dst and returns the result.
func (op Op) AppendJSON(dst []byte) []byte {
	dst = append(dst, '[')
	for i, c := range op {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch {
		case c.Insert != "":
			dst = appendJSONString(dst, c.Insert)
		case c.Delete != 0:
			dst = strconv.AppendInt(dst, -int64(c.Delete), 10)
		default:
			dst = strconv.AppendInt(dst, int64(c.Retain), 10)
		}
	}
	return append(dst, ']')
}

// String returns the JSON form of op.
func (op Op) String() string { return string(op.AppendJSON(nil)) }

// MarshalJSON returns the JSON form of op. It fails if op is not valid.
func (op Op) MarshalJSON() ([]byte, error) {
	if err := op.Validate(); err != nil {
		return nil, err
	}
	return op.AppendJSON(nil), nil
}

// UnmarshalJSON parses the JSON form of an operation with ParseOp.
func (op *Op) UnmarshalJSON(data []byte) error {
	o, err := ParseOp(data)
	if err != nil {
		return err
	}
	*op = o
	return nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as JSON.stringify quotes it.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// ParseOp parses the JSON form of an operation and validates it. Errors are
// *Error. The checks run in a fixed order, which the JavaScript
// implementation follows too: first the whole input must be a JSON array of
// integers and strings whose integers are at most 2^53-1 in magnitude
// (ErrMalformed); then each component in order must not be empty
// (ErrZeroLength), must be valid UTF-8 with no unpaired surrogate escape
// (ErrInvalidUTF8) and must follow its neighbour in normal form
// (ErrNotNormalized). Numbers may be written in any JSON form whose value is
// an integer (2, 2.0, 2e0), as JavaScript reads them all alike.
func ParseOp(data []byte) (Op, error) {
	p := parser{data: data}
	p.space()
	if !p.eat('[') {
		return nil, p.fail("expected '['")
	}
	op := Op{}
	p.space()
	if p.eat(']') {
		p.space()
		if p.i != len(p.data) {
			return nil, p.fail("data after the operation")
		}
		return op, nil
	}
	for {
		p.space()
		if p.i >= len(p.data) {
			return nil, p.fail("unexpected end")
		}
		switch c := p.data[p.i]; {
		case c == '"':
			s, err := p.str()
			if err != nil {
				return nil, err
			}
			op = append(op, Component{Insert: s})
		case c == '-' || (c >= '0' && c <= '9'):
			n, err := p.num()
			if err != nil {
				return nil, err
			}
			switch {
			case n > 0:
				op = append(op, Component{Retain: int(n)})
			case n < 0:
				op = append(op, Component{Delete: int(-n)})
			default:
				op = append(op, Component{}) // refused by Validate
			}
		default:
			return nil, p.fail("expected an integer or a string")
		}
		p.space()
		if p.eat(']') {
			break
		}
		if !p.eat(',') {
			return nil, p.fail("expected ',' or ']'")
		}
	}
	p.space()
	if p.i != len(p.data) {
		return nil, p.fail("data after the operation")
	}
	if err := op.Validate(); err != nil {
		return nil, err
	}
	return op, nil
}

type parser struct {
	data []byte
	i    int
}

func (p *parser) fail(msg string) error {
	return errf(ErrMalformed, "%s at byte %d", msg, p.i)
}

func (p *parser) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) eat(c byte) bool {
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

// num parses a JSON number whose value must be an integer of magnitude at
// most 2^53-1.
func (p *parser) num() (int64, error) {
	start := p.i
	p.eat('-')
	digits := func() int {
		n := 0
		for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	intStart := p.i
	if digits() == 0 {
		return 0, p.fail("bad number")
	}
	if p.data[intStart] == '0' && p.i-intStart > 1 {
		return 0, p.fail("number with a leading zero")
	}
	simple := true
	if p.eat('.') {
		simple = false
		if digits() == 0 {
			return 0, p.fail("bad number")
		}
	}
	if p.eat('e') || p.eat('E') {
		simple = false
		if !p.eat('+') {
			p.eat('-')
		}
		if digits() == 0 {
			return 0, p.fail("bad number")
		}
	}
	text := string(p.data[start:p.i])
	if simple && p.i-intStart <= 16 {
		n, err := strconv.ParseInt(text, 10, 64)
		if err == nil && n >= -maxCount && n <= maxCount {
			return n, nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || f != float64(int64(f)) || f > maxCount || f < -maxCount {
		return 0, errf(ErrMalformed, "%s is not an integer of at most 2^53-1", text)
	}
	return int64(f), nil
}

// badUTF8 stands for an unpaired surrogate escape in parsed text: an
// invalid byte, so that Validate refuses the text as invalid UTF-8.
const badUTF8 = 0xff

// str parses a JSON string. Invalid UTF-8 is kept as is, for Validate to
// refuse in component order.
func (p *parser) str() (string, error) {
	p.i++ // opening quote
	start := p.i
	// Fast path: no escapes.
	for p.i < len(p.data) {
		c := p.data[p.i]
		if c == '"' {
			s := string(p.data[start:p.i])
			p.i++
			return s, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.fail("control character in a string")
		}
		p.i++
	}
	buf := append([]byte(nil), p.data[start:p.i]...)
	for {
		if p.i >= len(p.data) {
			return "", p.fail("unterminated string")
		}
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.fail("control character in a string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		p.i++
		if p.i >= len(p.data) {
			return "", p.fail("unterminated string")
		}
		e := p.data[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || p.i+6 > len(p.data) || p.data[p.i] != '\\' || p.data[p.i+1] != 'u' {
					buf = append(buf, badUTF8)
					continue
				}
				save := p.i
				p.i += 2
				r2, ok := p.hex4()
				if !ok || r2 < 0xdc00 || r2 > 0xdfff {
					// Unpaired: leave the next escape to be read on its own.
					p.i = save
					buf = append(buf, badUTF8)
					continue
				}
				r = utf16.DecodeRune(r, r2)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.fail("bad escape")
		}
	}
}

func (p *parser) hex4() (rune, bool) {
	if p.i+4 > len(p.data) {
		return 0, false
	}
	var r rune
	for _, c := range p.data[p.i : p.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}
