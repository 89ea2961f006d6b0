package doc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testStoreContract checks what a Document relies on from any Store. A
// future Redis store runs it too.
func testStoreContract(t *testing.T, st Store) {
	ctx := context.Background()
	if _, err := st.Snapshot(ctx, "d", math.MaxUint64); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing document: %v", err)
	}
	if err := st.Commit(ctx, "d", Batch{Entries: []Entry{{Version: 1}}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("commit to a missing document without its version 0 snapshot: %v", err)
	}
	if err := st.Commit(ctx, "d", Batch{Snapshots: []Snapshot{{Version: 0, Epoch: "E"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, "d", Batch{Snapshots: []Snapshot{{Version: 0, Epoch: "F"}}}); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("creating twice: %v", err)
	}
	at := time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC)
	entry := func(v uint64) Entry {
		return Entry{Version: v, Client: "c", Seq: v, Time: at, Action: ActionEdit, Op: Op{{Retain: int(v)}, {Insert: "é😀"}}}
	}
	b := Batch{Entries: []Entry{entry(1), entry(2), entry(3)}, Snapshots: []Snapshot{{Version: 2, Epoch: "E", Text: "two", Clients: map[string]Mark{"c": {Seq: 2, Version: 2}}}}}
	if err := st.Commit(ctx, "d", b); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, "d", Batch{Entries: []Entry{entry(5)}}); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("a gap: %v", err)
	}
	if err := st.Commit(ctx, "d", Batch{Entries: []Entry{entry(3)}}); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("a repeated version: %v", err)
	}
	if err := st.Commit(ctx, "d", Batch{Snapshots: []Snapshot{{Version: 9}}}); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("a snapshot beyond the log: %v", err)
	}
	if err := st.Commit(ctx, "d", Batch{Entries: []Entry{entry(4)}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ at, want uint64 }{{0, 0}, {1, 0}, {2, 2}, {3, 2}, {math.MaxUint64, 2}} {
		sn, err := st.Snapshot(ctx, "d", c.at)
		if err != nil || sn.Version != c.want || sn.Epoch != "E" {
			t.Fatalf("Snapshot(%d) = %+v, %v; want version %d", c.at, sn, err, c.want)
		}
		if sn.Version == 2 && (sn.Text != "two" || sn.Clients["c"] != (Mark{Seq: 2, Version: 2})) {
			t.Fatalf("snapshot 2 = %+v", sn)
		}
	}
	es, err := st.Entries(ctx, "d", 2, 3)
	if err != nil || len(es) != 2 || es[0].Version != 2 || es[1].Version != 3 {
		t.Fatalf("Entries(2, 3) = %+v, %v", es, err)
	}
	if e := es[0]; e.Client != "c" || e.Seq != 2 || !e.Time.Equal(at) || e.Action != ActionEdit || !sameOp(e.Op, entry(2).Op) {
		t.Fatalf("entry 2 = %+v", e)
	}
	if es, err := st.Entries(ctx, "d", 3, math.MaxUint64); err != nil || len(es) != 2 {
		t.Fatalf("Entries(3, max) = %+v, %v", es, err)
	}
	if es, err := st.Entries(ctx, "d", 9, 20); err != nil || len(es) != 0 {
		t.Fatalf("Entries past the end = %+v, %v", es, err)
	}
}

func TestMemStoreContract(t *testing.T) { testStoreContract(t, NewMemStore()) }

func TestBoltStoreContract(t *testing.T) {
	st, err := OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	testStoreContract(t, st)
}

// TestBoltGroupCommitAndReopen submits from many goroutines to several
// documents of one bolt store, checks that they shared transactions (one
// fsync each), then reopens the store and finds every acknowledged op.
func TestBoltGroupCommitAndReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	const docs, clients, each = 3, 8, 15
	opts := Options{SnapshotEvery: 16}
	type ack struct {
		doc, client string
		seq         uint64
		res         Result
	}
	acks := make(chan ack, docs*clients*each)
	var ds []*Document
	for i := range docs {
		d, err := Open(ctx, st, fmt.Sprint("room-", i), opts)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	var wg sync.WaitGroup
	for _, d := range ds {
		for c := range clients {
			wg.Go(func() {
				client := fmt.Sprint("c", c)
				for i := range each {
					seq := uint64(i + 1)
					res, err := d.Submit(ctx, client, seq, 0, Op{{Insert: fmt.Sprintf("<%s:%d>", client, seq)}})
					if err != nil {
						t.Error(err)
						return
					}
					acks <- ack{d.ID(), client, seq, res}
				}
			})
		}
	}
	wg.Wait()
	close(acks)
	stats := st.Stats()
	total := uint64(docs * clients * each)
	t.Logf("%d ops, %d document commits, %d bolt transactions (fsyncs)", total, stats.Commits, stats.Txns)
	if stats.Txns*2 > total {
		t.Fatalf("%d ops took %d transactions: not batched", total, stats.Txns)
	}
	texts := map[string]string{}
	epochs := map[string]string{}
	for _, d := range ds {
		texts[d.ID()] = text(t, d)
		epochs[d.ID()] = d.Epoch()
	}
	// No Document.Close: what was acknowledged must already be on disk.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	reopened := map[string]*Document{}
	for id := range texts {
		d, err := Open(ctx, st2, id, opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := text(t, d); got != texts[id] || d.Epoch() != epochs[id] {
			t.Fatalf("%s reopened: %q (epoch %s), want %q (epoch %s)", id, got, d.Epoch(), texts[id], epochs[id])
		}
		reopened[id] = d
	}
	n := 0
	for a := range acks {
		es, err := reopened[a.doc].History(ctx, a.res.Version, a.res.Version)
		if err != nil || len(es) != 1 {
			t.Fatalf("%+v: %v", a, err)
		}
		if e := es[0]; e.Client != a.client || e.Seq != a.seq || !sameOp(e.Op, a.res.Op) {
			t.Fatalf("acknowledged %+v, stored %+v", a, e)
		}
		n++
	}
	if n != int(total) {
		t.Fatalf("%d acks", n)
	}
	// Past versions rebuild from the reopened store.
	d := reopened["room-0"]
	for v := uint64(0); v <= d.Version(); v += 7 {
		if _, err := d.At(ctx, v); err != nil {
			t.Fatalf("At(%d): %v", v, err)
		}
	}
}

func TestBoltStoreRefusesAfterClose(t *testing.T) {
	st, err := OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	err = st.Commit(context.Background(), "d", Batch{Snapshots: []Snapshot{{}}})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v", err)
	}
}

// BenchmarkBoltSubmitParallel measures durable submits to one document from
// 32 concurrent clients through the bolt store: each Submit returns after
// its fsync, so the figure is group commit at work. It reports how many
// ops shared each transaction.
func BenchmarkBoltSubmitParallel(b *testing.B) {
	st, err := OpenBolt(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	d, err := Open(ctx, st, "bench", Options{})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Uint64
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		client := fmt.Sprint("c", next.Add(1))
		seq := uint64(0)
		for pb.Next() {
			seq++
			for {
				base := d.Version()
				_, err := d.Submit(ctx, client, seq, base, ins(int(base), 0, "x"))
				if err == nil {
					break
				}
				if !errors.Is(err, ErrTooFarBehind) {
					b.Error(err)
					return
				}
			}
		}
	})
	s := st.Stats()
	b.ReportMetric(float64(d.Stats().Durable)/float64(max(s.Txns, 1)), "ops/fsync")
}
