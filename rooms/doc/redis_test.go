package doc

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/huddle-rtc/huddle/internal/redistest"
)

func TestRedisStoreContract(t *testing.T) {
	addr := redistest.Start(t)
	testStoreContract(t, NewRedisStore(redistest.Client(t, addr), "test:", nil))
}

// TestRedisStoreFence: commits pass while the lease key holds this node's
// value, and are refused once it holds another's; nothing is written then.
func TestRedisStoreFence(t *testing.T) {
	addr := redistest.Start(t)
	rdb := redistest.Client(t, addr)
	ctx := context.Background()
	var held atomic.Bool
	held.Store(true)
	st := NewRedisStore(rdb, "test:", func(id string) (string, string, bool) {
		return "lease:" + id, "a 1", held.Load()
	})
	if err := rdb.Set(ctx, "lease:d", "a 1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, "d", Batch{Snapshots: []Snapshot{{Version: 0, Epoch: "E"}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, "d", Batch{Entries: []Entry{{Version: 1, Op: Op{{Insert: "a"}}}}}); err != nil {
		t.Fatal(err)
	}
	// Another node took the lease.
	if err := rdb.Set(ctx, "lease:d", "b 2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, "d", Batch{Entries: []Entry{{Version: 2, Op: Op{{Retain: 1}, {Insert: "b"}}}}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("commit under a lost lease: %v; want ErrFenced", err)
	}
	held.Store(false)
	if err := st.Commit(ctx, "d", Batch{Entries: []Entry{{Version: 2, Op: Op{{Retain: 1}, {Insert: "b"}}}}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("commit without a lease: %v; want ErrFenced", err)
	}
	if es, err := st.Entries(ctx, "d", 1, 10); err != nil || len(es) != 1 {
		t.Fatalf("entries = %+v, %v; want only version 1", es, err)
	}
}

// TestRedisStoreDocument runs a Document on the Redis store, closes it and
// opens it again on another client (as another node would): every
// acknowledged operation is there, and a resubmission is recognised.
func TestRedisStoreDocument(t *testing.T) {
	addr := redistest.Start(t)
	ctx := context.Background()
	d, err := Open(ctx, NewRedisStore(redistest.Client(t, addr), "test:", nil), "room", Options{SnapshotEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	for i := range 10 {
		ins := string(rune('a' + i))
		op := Op{{Insert: ins}}
		if len(want) > 0 {
			op = Op{{Retain: len(want)}, {Insert: ins}}
		}
		if _, err := d.Submit(ctx, "c1", uint64(i+1), uint64(i), op); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		want += ins
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	d2, err := Open(ctx, NewRedisStore(redistest.Client(t, addr), "test:", nil), "room", Options{SnapshotEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close(ctx)
	sn, err := d2.Snapshot(ctx)
	if err != nil || sn.Text != want || sn.Version != 10 {
		t.Fatalf("reopened: %+v, %v; want %q at 10", sn, err, want)
	}
	res, err := d2.Submit(ctx, "c1", 10, 9, Op{{Retain: 9}, {Insert: "j"}})
	if err != nil || d2.Version() != 10 {
		t.Fatalf("resubmission: %+v, %v (version %d)", res, err, d2.Version())
	}
}
