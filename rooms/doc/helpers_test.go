package doc

import (
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// alphabet mixes ASCII, two-byte, three-byte and astral (two UTF-16 units)
// code points, a combining mark and a newline.
const alphabet = "ab \nzé日😀\u0301𝄞"

func randText(rng *rand.Rand, n int) string {
	runes := []rune(alphabet)
	var sb strings.Builder
	for range n {
		sb.WriteRune(runes[rng.IntN(len(runes))])
	}
	return sb.String()
}

// randOp returns a random valid operation on a text of size code points.
func randOp(rng *rand.Rand, size int) Op {
	var b Builder
	left := size
	for left > 0 || rng.IntN(4) == 0 {
		switch rng.IntN(4) {
		case 0:
			b.Insert(randText(rng, 1+rng.IntN(3)))
		case 1:
			if left > 0 {
				n := 1 + rng.IntN(min(left, 4))
				b.Delete(n)
				left -= n
			}
		default:
			if left > 0 {
				n := 1 + rng.IntN(left)
				b.Retain(n)
				left -= n
			}
		}
		if left == 0 && rng.IntN(2) == 0 {
			break
		}
	}
	return b.Op()
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }

func mustApply(s string, op Op) string {
	out, err := Apply(s, op)
	if err != nil {
		panic(err)
	}
	return out
}
