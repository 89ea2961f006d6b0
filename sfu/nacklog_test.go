package sfu

import "testing"

func TestNACKLogCountsEachSequenceNumberOnce(t *testing.T) {
	var n nackLog
	count := func(seqs ...uint16) int {
		c := 0
		for _, s := range seqs {
			if n.add(s) {
				c++
			}
		}
		return c
	}
	// A receiver asks for 65530..65535, 0..3 (across the wrap) again and
	// again while newer packets are lost too.
	first := []uint16{65530, 65533, 65535, 0, 3}
	if got := count(first...); got != len(first) {
		t.Fatalf("first NACKs counted %d; want %d", got, len(first))
	}
	for range 10 {
		if got := count(first...); got != 0 {
			t.Fatalf("repeated NACKs counted %d; want 0", got)
		}
		if got := count(100, 65531); got != 0 && got != 2 {
			t.Fatalf("counted %d", got)
		}
	}
	if got := count(100, 65531, 101); got != 1 {
		t.Fatalf("101 after 100 and 65531 asked before: counted %d; want 1", got)
	}
	// Far ahead: the window moves and the same numbers, a wrap later,
	// are new packets.
	if got := count(30000, 40000, 65530, 0, 3); got != 5 {
		t.Fatalf("numbers a window or more later counted %d; want 5", got)
	}
	w := uint16(nackWindow)
	if got := count(3 - w); got != 0 {
		t.Fatalf("a number older than the window counted")
	}
	if got := count(4, 4-w+1, 3); got != 2 {
		t.Fatalf("counted %d; want 2 (the oldest in the window is new, 3 is not)", got)
	}
}
