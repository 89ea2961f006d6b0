package doc

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltStore is the default Store: one bbolt file, documents.db, in a data
// directory. Commits from every document go through one committer
// goroutine that writes all the batches waiting for it in one transaction,
// so they share one fsync (group commit); Commit returns once that
// transaction is on disk.
//
// Layout: bucket "docs", in it one bucket per document id, in that the
// buckets "log" (key: version as 8 bytes big-endian, value: the Entry as
// JSON) and "snap" (same key, the Snapshot as JSON).
type BoltStore struct {
	db *bolt.DB

	mu     sync.Mutex
	queue  []*boltReq
	closed bool
	wake   chan struct{} // capacity 1: the queue has work, or closed was set
	done   chan struct{} // closed when the committer has returned

	statsMu sync.Mutex
	stats   BoltStats
}

// BoltStats counts what a BoltStore did.
type BoltStats struct {
	Commits uint64 // Commit calls that succeeded
	Txns    uint64 // write transactions (each one fsync)
}

type boltReq struct {
	id        string
	first     uint64 // version of the first entry
	entries   [][]byte
	snapVers  []uint64
	snaps     [][]byte
	creates   bool // holds the version 0 snapshot
	err       error
	committed chan error
}

var (
	bucketDocs = []byte("docs")
	bucketLog  = []byte("log")
	bucketSnap = []byte("snap")
)

// OpenBolt opens (creating it if needed) the store in directory dir and
// starts its committer. Close stops it. Opening fails after a second if
// another process holds the file.
func OpenBolt(dir string) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("doc: bolt store: %w", err)
	}
	path := filepath.Join(dir, "documents.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("doc: open bolt store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketDocs)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("doc: open bolt store %s: %w", path, err)
	}
	s := &BoltStore{db: db, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s, nil
}

// Close commits what is queued, stops the committer and closes the file.
// Commit calls after Close fail with ErrClosed.
func (s *BoltStore) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		<-s.done
		return nil
	}
	s.signal()
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("doc: close bolt store: %w", err)
	}
	return nil
}

// Stats returns the store's counters.
func (s *BoltStore) Stats() BoltStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func (s *BoltStore) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func versionKey(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// Commit implements Store. The batch is encoded by the caller's goroutine;
// the committer only writes.
func (s *BoltStore) Commit(ctx context.Context, id string, b Batch) error {
	r := &boltReq{id: id, committed: make(chan error, 1)}
	if len(b.Entries) > 0 {
		r.first = b.Entries[0].Version
	}
	for _, e := range b.Entries {
		v, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("doc: encode entry %d of %q: %w", e.Version, id, err)
		}
		r.entries = append(r.entries, v)
	}
	for _, sn := range b.Snapshots {
		v, err := json.Marshal(sn)
		if err != nil {
			return fmt.Errorf("doc: encode snapshot %d of %q: %w", sn.Version, id, err)
		}
		r.snapVers = append(r.snapVers, sn.Version)
		r.snaps = append(r.snaps, v)
		if sn.Version == 0 {
			r.creates = true
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errf(ErrClosed, "bolt store is closed")
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	s.signal()
	select {
	case err := <-r.committed:
		return err
	case <-ctx.Done():
		return fmt.Errorf("doc: commit to %q: %w (it may still be committed)", id, ctx.Err())
	}
}

// run is the committer: it writes everything queued in one transaction,
// answers, and starts again, until Close.
func (s *BoltStore) run() {
	defer close(s.done)
	for range s.wake {
		s.mu.Lock()
		q, closed := s.queue, s.closed
		s.queue = nil
		s.mu.Unlock()
		if len(q) > 0 {
			s.write(q)
		}
		if closed {
			return
		}
	}
}

func (s *BoltStore) write(q []*boltReq) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketDocs)
		for _, r := range q {
			var err error
			r.err, err = writeReq(root, r)
			if err != nil {
				return err
			}
		}
		return nil
	})
	ok := uint64(0)
	for _, r := range q {
		if err != nil {
			r.err = fmt.Errorf("doc: commit to %q: %w", r.id, err)
		}
		if r.err == nil {
			ok++
		}
		r.committed <- r.err
	}
	s.statsMu.Lock()
	s.stats.Txns++
	s.stats.Commits += ok
	s.statsMu.Unlock()
}

// writeReq writes one request into the transaction. It returns the
// request's refusal (nothing written), or an error that aborts the
// transaction.
func writeReq(root *bolt.Bucket, r *boltReq) (refused, abort error) {
	d := root.Bucket([]byte(r.id))
	var last uint64
	if d != nil {
		if k, _ := d.Bucket(bucketLog).Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
	}
	if d == nil && !r.creates {
		return errf(ErrNotFound, "document %q: the first commit must hold its version 0 snapshot", r.id), nil
	}
	if d != nil && r.creates {
		return errf(ErrVersionConflict, "document %q already exists", r.id), nil
	}
	if len(r.entries) > 0 && r.first != last+1 {
		return errf(ErrVersionConflict, "document %q: entry version %d does not follow %d", r.id, r.first, last), nil
	}
	top := last + uint64(len(r.entries))
	for _, v := range r.snapVers {
		if v > top {
			return errf(ErrVersionConflict, "document %q: snapshot of version %d beyond the log's %d", r.id, v, top), nil
		}
	}
	if d == nil {
		var err error
		if d, err = root.CreateBucket([]byte(r.id)); err != nil {
			return nil, err
		}
		if _, err = d.CreateBucket(bucketLog); err != nil {
			return nil, err
		}
		if _, err = d.CreateBucket(bucketSnap); err != nil {
			return nil, err
		}
	}
	log := d.Bucket(bucketLog)
	log.FillPercent = 0.95 // keys only ever grow
	for i, v := range r.entries {
		if err := log.Put(versionKey(r.first+uint64(i)), v); err != nil {
			return nil, err
		}
	}
	snap := d.Bucket(bucketSnap)
	snap.FillPercent = 0.95
	for i, v := range r.snaps {
		if err := snap.Put(versionKey(r.snapVers[i]), v); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// Snapshot implements Store.
func (s *BoltStore) Snapshot(ctx context.Context, id string, atOrBefore uint64) (Snapshot, error) {
	var sn Snapshot
	err := s.db.View(func(tx *bolt.Tx) error {
		d := tx.Bucket(bucketDocs).Bucket([]byte(id))
		if d == nil {
			return errf(ErrNotFound, "document %q", id)
		}
		c := d.Bucket(bucketSnap).Cursor()
		k, v := c.Seek(versionKey(atOrBefore))
		switch {
		case k == nil:
			k, v = c.Last()
		case binary.BigEndian.Uint64(k) > atOrBefore:
			k, v = c.Prev()
		}
		if k == nil {
			return errf(ErrNotFound, "document %q has no snapshot at or before version %d", id, atOrBefore)
		}
		if err := json.Unmarshal(v, &sn); err != nil {
			return fmt.Errorf("doc: snapshot %d of %q: %w", binary.BigEndian.Uint64(k), id, err)
		}
		return nil
	})
	return sn, err
}

// Entries implements Store.
func (s *BoltStore) Entries(ctx context.Context, id string, from, to uint64) ([]Entry, error) {
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		d := tx.Bucket(bucketDocs).Bucket([]byte(id))
		if d == nil {
			return errf(ErrNotFound, "document %q", id)
		}
		c := d.Bucket(bucketLog).Cursor()
		for k, v := c.Seek(versionKey(from)); k != nil && binary.BigEndian.Uint64(k) <= to; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("doc: entry %d of %q: %w", binary.BigEndian.Uint64(k), id, err)
			}
			out = append(out, e)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
