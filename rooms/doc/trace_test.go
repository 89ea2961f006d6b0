package doc

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The traces under testdata/traces are real editing sessions (see the
// README there for their source and licence, CC BY 4.0).
func traceNames() []string { return []string{"automerge-paper", "seph-blog1", "rustcode"} }

type trace struct {
	StartContent string `json:"startContent"`
	EndContent   string `json:"endContent"`
	Txns         []struct {
		Patches []patch `json:"patches"`
	} `json:"txns"`
}

// patch is [pos, delCount, insertText], in code points.
type patch struct {
	pos, del int
	ins      string
}

func (p *patch) UnmarshalJSON(b []byte) error {
	var raw [3]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	var err1, err2 error
	p.pos, err1 = strconv.Atoi(string(raw[0]))
	p.del, err2 = strconv.Atoi(string(raw[1]))
	if err1 != nil || err2 != nil {
		return fmt.Errorf("bad patch %s", b)
	}
	return json.Unmarshal(raw[2], &p.ins)
}

func loadTrace(tb testing.TB, name string) *trace {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", "traces", name+".json.gz"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	var tr trace
	if err := json.NewDecoder(zr).Decode(&tr); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return &tr
}

// traceOps turns every patch into an operation on the text it applies to.
func traceOps(tb testing.TB, tr *trace) []Op {
	tb.Helper()
	var ops []Op
	size := utf8.RuneCountInString(tr.StartContent)
	for _, txn := range tr.Txns {
		for _, p := range txn.Patches {
			op, err := Edit(size, p.pos, p.del, p.ins)
			if err != nil {
				tb.Fatalf("patch %d: %v", len(ops), err)
			}
			ops = append(ops, op)
			size += utf8.RuneCountInString(p.ins) - p.del
		}
	}
	return ops
}

// replay submits ops one by one to a new Document, as one client typing,
// and returns the document.
func replay(tb testing.TB, start string, ops []Op, opts Options) *Document {
	ctx := context.Background()
	st := NewMemStore()
	d, err := Open(ctx, st, "trace", opts)
	if err != nil {
		tb.Fatal(err)
	}
	base := uint64(0)
	if start != "" {
		mustSubmitTB(tb, d, "seed", 1, 0, Op{{Insert: start}})
		base = 1
	}
	for i, op := range ops {
		if _, err := d.Submit(ctx, "typist", uint64(i+1), base+uint64(i), op); err != nil {
			tb.Fatalf("op %d: %v", i, err)
		}
	}
	return d
}

func mustSubmitTB(tb testing.TB, d *Document, client string, seq, base uint64, op Op) {
	tb.Helper()
	if _, err := d.Submit(context.Background(), client, seq, base, op); err != nil {
		tb.Fatal(err)
	}
}

// TestTraceReplay replays each trace through a Document and requires the
// exact final text; it also rebuilds a past version and, for traces with
// multi-patch transactions, replays them composed into one op each.
func TestTraceReplay(t *testing.T) {
	for _, name := range traceNames() {
		t.Run(name, func(t *testing.T) {
			tr := loadTrace(t, name)
			ops := traceOps(t, tr)
			d := replay(t, tr.StartContent, ops, Options{})
			ctx := context.Background()
			sn, err := d.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sn.Text != tr.EndContent {
				t.Fatalf("final text differs from endContent (%d vs %d code points)", utf8.RuneCountInString(sn.Text), utf8.RuneCountInString(tr.EndContent))
			}
			// A past version rebuilt from the log equals a direct replay.
			mid := len(ops) / 2
			want := NewText(tr.StartContent)
			for _, op := range ops[:mid] {
				want.apply(op, nil)
			}
			if got, err := d.At(ctx, uint64(mid)); err != nil || got != want.String() {
				t.Fatalf("At(%d): %v", mid, err)
			}
			if testing.Short() {
				return
			}
			// Transactions composed into single operations.
			var composed []Op
			i := 0
			for _, txn := range tr.Txns {
				op := ops[i]
				for _, next := range ops[i+1 : i+len(txn.Patches)] {
					if op, err = Compose(op, next); err != nil {
						t.Fatal(err)
					}
				}
				composed = append(composed, op)
				i += len(txn.Patches)
			}
			d2 := replay(t, tr.StartContent, composed, Options{})
			if sn2, _ := d2.Snapshot(ctx); sn2.Text != tr.EndContent {
				t.Fatal("composed transactions: final text differs")
			}
			t.Logf("%d patches, %d transactions, %d code points", len(ops), len(composed), utf8.RuneCountInString(sn.Text))
		})
	}
}

// BenchmarkTraceReplay measures the engine on the real traces: every patch
// submitted to a Document (memory store) as an operation. It reports the
// time and allocations per edit.
func BenchmarkTraceReplay(b *testing.B) {
	for _, name := range traceNames() {
		tr := loadTrace(b, name)
		ops := traceOps(b, tr)
		b.Run(name, func(b *testing.B) {
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			start := time.Now()
			for b.Loop() {
				replay(b, tr.StartContent, ops, Options{})
			}
			elapsed := time.Since(start)
			runtime.ReadMemStats(&ms1)
			edits := float64(b.N * len(ops))
			b.ReportMetric(float64(elapsed.Nanoseconds())/edits, "ns/edit")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/edits, "allocs/edit")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/edits, "B/edit")
		})
	}
}

// BenchmarkTraceText measures the gap buffer alone on the same edits: the
// floor under the Document's cost.
func BenchmarkTraceText(b *testing.B) {
	for _, name := range traceNames() {
		tr := loadTrace(b, name)
		ops := traceOps(b, tr)
		b.Run(name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				t := NewText(tr.StartContent)
				for _, op := range ops {
					if err := t.Apply(op); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*len(ops)), "ns/edit")
		})
	}
}

// BenchmarkTextScattered measures the gap buffer's worst case: single
// character edits at random places of a 100,000 code point text, so that
// every edit moves the gap far (as when people edit far apart).
func BenchmarkTextScattered(b *testing.B) {
	const size = 100_000
	tx := NewText(strings.Repeat("abcdefghij", size/10))
	rng := rand.New(rand.NewPCG(1, 1))
	ops := make([]Op, 1024)
	for i := range ops {
		// Insert then delete one code point: the length stays the same.
		pos := rng.IntN(size)
		if i%2 == 0 {
			ops[i], _ = Edit(size, pos, 0, "x")
		} else {
			ops[i], _ = Edit(size+1, pos, 1, "")
		}
	}
	i := 0
	for b.Loop() {
		if err := tx.Apply(ops[i%len(ops)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkStringApply is the naive representation for comparison: each
// edit copies the whole string. Only the first 20,000 edits of the paper.
func BenchmarkStringApply(b *testing.B) {
	tr := loadTrace(b, "automerge-paper")
	ops := traceOps(b, tr)[:20000]
	start := time.Now()
	for b.Loop() {
		s := tr.StartContent
		for _, op := range ops {
			s = mustApply(s, op)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*len(ops)), "ns/edit")
}
