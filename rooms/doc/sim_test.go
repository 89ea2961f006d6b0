package doc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// otClient is the client side of the protocol, as the browser runs it
// (web/ot.js has the same state machine): synchronized (out == nil),
// awaiting an ack (out != nil), or awaiting with a buffer (buf != nil too).
// A client has one request in flight: an edit, or an undo or redo.
type otClient struct {
	id      string
	text    string
	version uint64
	seq     uint64
	out     *request
	buf     Op
	acked   []string // inserted texts the server acknowledged
	rebases int
}

type request struct {
	seq    uint64
	base   uint64
	op     Op // nil for undo and redo
	action Action
}

// edit applies a local edit and returns a request to send, if any.
func (c *otClient) edit(op Op) *request {
	c.text = mustApply(c.text, op)
	switch {
	case c.out == nil:
		c.seq++
		c.out = &request{seq: c.seq, base: c.version, op: op, action: ActionEdit}
		return c.out
	case c.buf == nil:
		c.buf = op
	default:
		var err error
		if c.buf, err = Compose(c.buf, op); err != nil {
			panic(err)
		}
	}
	return nil
}

// revert asks for an undo or redo when nothing is pending.
func (c *otClient) revert(action Action) *request {
	if c.out != nil || c.buf != nil {
		return nil
	}
	c.seq++
	c.out = &request{seq: c.seq, base: c.version, action: action}
	return c.out
}

func (c *otClient) flushBuffer() *request {
	if c.buf == nil {
		return nil
	}
	c.seq++
	c.out = &request{seq: c.seq, base: c.version, op: c.buf, action: ActionEdit}
	c.buf = nil
	return c.out
}

// receive handles the next entry of the server's feed.
func (c *otClient) receive(e Entry) (*request, error) {
	if e.Version <= c.version {
		return nil, nil // already in the text (after a rebase)
	}
	if e.Version != c.version+1 {
		return nil, fmt.Errorf("%s at version %d got version %d", c.id, c.version, e.Version)
	}
	mine := c.out != nil && e.Client == c.id && e.Seq == c.out.seq
	if mine && e.Action == ActionEdit {
		c.acked = append(c.acked, inserts(c.out.op)...)
		c.version = e.Version
		c.out = nil
		return c.flushBuffer(), nil
	}
	if mine { // the result of our undo or redo: not applied here yet
		c.out = nil
	}
	op := e.Op
	var err error
	if c.out != nil && c.out.op != nil {
		if c.out.op, op, err = Transform(c.out.op, op, Right); err != nil {
			return nil, err
		}
	}
	if c.buf != nil {
		if c.buf, op, err = Transform(c.buf, op, Right); err != nil {
			return nil, err
		}
	}
	if c.text, err = Apply(c.text, op); err != nil {
		return nil, err
	}
	c.version = e.Version
	if mine {
		return c.flushBuffer(), nil
	}
	return nil, nil
}

// resend returns the request in flight again, after a reconnect.
func (c *otClient) resend() *request {
	if c.out == nil {
		return nil
	}
	r := *c.out
	r.base = c.version
	return &r
}

// refused handles an error reply to the request in flight.
func (c *otClient) refused(err error) (*request, error) {
	var be *BehindError
	switch {
	case errors.As(err, &be):
		if c.out != nil && c.out.seq <= be.LastSeq && c.out.op != nil {
			c.acked = append(c.acked, inserts(c.out.op)...)
		}
		// What was not committed goes back to the user: here, dropped.
		c.text, c.version, c.out, c.buf = be.Snapshot.Text, be.Snapshot.Version, nil, nil
		c.rebases++
		return nil, nil
	case errors.Is(err, ErrNothingToUndo):
		c.out = nil
		return c.flushBuffer(), nil
	}
	return nil, err
}

func inserts(op Op) []string {
	var out []string
	for _, c := range op {
		if c.Insert != "" {
			out = append(out, c.Insert)
		}
	}
	return out
}

// submitRequest sends r to the document as the transport would.
func submitRequest(ctx context.Context, d *Document, client string, r request) (Result, error) {
	switch r.action {
	case ActionUndo:
		return d.Undo(ctx, client, r.seq)
	case ActionRedo:
		return d.Redo(ctx, client, r.seq)
	}
	return d.Submit(ctx, client, r.seq, r.base, r.op)
}

// uniqueRunes hands out code points never used before in a run, some of
// them outside the BMP, so that every inserted character can be traced.
type uniqueRunes struct{ n int }

func (u *uniqueRunes) next() rune {
	u.n++
	if u.n%4 == 0 {
		return 0x20000 + rune(u.n) // CJK extension B: astral
	}
	return 0x4e00 + rune(u.n)
}

// randEdit makes a small local edit, as a person types: an insert of fresh
// characters, a delete, or a replacement.
func randEdit(rng *rand.Rand, u *uniqueRunes, text string) Op {
	n := runeLen(text)
	pos := rng.IntN(n + 1)
	del := 0
	if n > pos && rng.IntN(3) == 0 {
		del = 1 + rng.IntN(min(n-pos, 4))
	}
	var ins strings.Builder
	if del == 0 || rng.IntN(2) == 0 {
		for range 1 + rng.IntN(3) {
			ins.WriteRune(u.next())
		}
	}
	op, err := Edit(n, pos, del, ins.String())
	if err != nil {
		panic(err)
	}
	return op
}

// checkOutcome checks the end state: every client has the server's text,
// the text is the replay of the log, no character appears twice, and every
// acknowledged inserted character is in the text unless an entry of the
// log deleted it.
func checkOutcome(t *testing.T, d *Document, clients []*otClient) {
	t.Helper()
	ctx := context.Background()
	sn, err := d.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if c.text != sn.Text || c.version != sn.Version || c.out != nil || c.buf != nil {
			t.Fatalf("client %s at version %d (pending %v %v): %q\nserver at %d: %q", c.id, c.version, c.out, c.buf, c.text, sn.Version, sn.Text)
		}
	}
	es, err := d.Since(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	replay := NewText("")
	var removed []rune
	for _, e := range es {
		replay.apply(e.Op, &removed)
	}
	if replay.String() != sn.Text {
		t.Fatal("the text is not the replay of the log")
	}
	deleted := map[rune]bool{}
	for _, r := range removed {
		deleted[r] = true
	}
	present := map[rune]bool{}
	for _, r := range sn.Text {
		if present[r] {
			t.Fatalf("%q appears twice", r)
		}
		present[r] = true
	}
	acked := 0
	for _, c := range clients {
		for _, s := range c.acked {
			for _, r := range s {
				acked++
				if !present[r] && !deleted[r] {
					t.Fatalf("acknowledged %q by %s is lost", r, c.id)
				}
			}
		}
	}
	if acked == 0 {
		t.Fatal("nothing was acknowledged")
	}
}

// TestSimulatedClients runs many clients against one Document through a
// simulated network: random local edits, undos and redos, random delivery
// order and delays, disconnects that lose messages in flight (some reached
// the server, some not), reconnects that resubmit, and clients so far
// behind that they must rebase. Deterministic per seed.
func TestSimulatedClients(t *testing.T) {
	seeds, steps := 60, 3000
	if testing.Short() {
		seeds = 8
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			simulate(t, uint64(seed), 3+seed%6, steps)
		})
	}
}

type simConn struct {
	c         *otClient
	connected bool
	up        []request // client to server, in order
	down      []Entry   // server to client, in order
	feed      uint64    // the version the server's sender has sent up to
}

func simulate(t *testing.T, seed uint64, nclients, steps int) {
	rng := rand.New(rand.NewPCG(seed, 77))
	ctx := context.Background()
	d, err := Open(ctx, NewMemStore(), "sim", Options{MaxBehind: 10 + int(seed%3)*20, SnapshotEvery: 25})
	if err != nil {
		t.Fatal(err)
	}
	var u uniqueRunes
	conns := make([]*simConn, nclients)
	var clients []*otClient
	for i := range conns {
		c := &otClient{id: fmt.Sprint("c", i)}
		clients = append(clients, c)
		conns[i] = &simConn{c: c, connected: true}
	}
	send := func(s *simConn, r *request) {
		if r != nil && s.connected {
			s.up = append(s.up, *r)
		}
	}
	var dups, refusals, disconnects int
	deliverUp := func(s *simConn) {
		r := s.up[0]
		s.up = s.up[1:]
		res, err := submitRequest(ctx, d, s.c.id, r)
		if res.Duplicate {
			dups++
		}
		if err != nil {
			refusals++
			next, err := s.c.refused(err)
			if err != nil {
				t.Fatalf("%s: %v", s.c.id, err)
			}
			send(s, next)
		}
	}
	push := func(s *simConn) {
		es, err := d.Since(ctx, s.feed, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 0 {
			s.down = append(s.down, es...)
			s.feed = es[len(es)-1].Version
		}
	}
	deliverDown := func(s *simConn) {
		e := s.down[0]
		s.down = s.down[1:]
		next, err := s.c.receive(e)
		if err != nil {
			t.Fatal(err)
		}
		send(s, next)
	}
	for range steps {
		s := conns[rng.IntN(len(conns))]
		switch k := rng.IntN(1000); {
		case k < 150:
			send(s, s.c.edit(randEdit(rng, &u, s.c.text)))
		case k < 180:
			send(s, s.c.revert(ActionUndo))
		case k < 190:
			send(s, s.c.revert(ActionRedo))
		case k < 440:
			if s.connected && len(s.up) > 0 {
				deliverUp(s)
			}
		case k < 600:
			if s.connected {
				push(s)
			}
		case k < 970:
			if s.connected && len(s.down) > 0 {
				deliverDown(s)
			}
		case k < 985:
			if s.connected {
				// Some requests in flight reach the server, the rest are lost.
				for len(s.up) > 0 && rng.IntN(2) == 0 {
					deliverUp(s)
				}
				s.connected, s.up, s.down = false, nil, nil
				disconnects++
			}
		default:
			if !s.connected {
				s.connected = true
				s.feed = s.c.version
				send(s, s.c.resend())
			}
		}
	}
	// Reconnect everyone and let the network drain.
	for _, s := range conns {
		if !s.connected {
			s.connected = true
			s.feed = s.c.version
			send(s, s.c.resend())
		}
	}
	for round := 0; ; round++ {
		if round > 1000 {
			t.Fatal("the network does not drain")
		}
		busy := false
		for _, s := range conns {
			for len(s.up) > 0 {
				deliverUp(s)
				busy = true
			}
			push(s)
			for len(s.down) > 0 {
				deliverDown(s)
				busy = true
			}
			if s.c.out != nil || s.c.buf != nil {
				busy = true
			}
		}
		if !busy {
			break
		}
	}
	checkOutcome(t, d, clients)
	rebases, undos := 0, 0
	for _, c := range clients {
		rebases += c.rebases
	}
	es, _ := d.Since(ctx, 0, 0)
	for _, e := range es {
		if e.Action != ActionEdit {
			undos++
		}
	}
	t.Logf("%d clients, %d versions (%d undo/redo), %d disconnects, %d duplicates, %d refusals, %d rebases", nclients, len(es), undos, disconnects, dups, refusals, rebases)
}

// TestConcurrentClients runs clients as goroutines against one Document,
// each with an uplink and a downlink goroutine that add random delays, as
// the transport will: real concurrency, for the race detector.
func TestConcurrentClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := &slowStore{MemStore: NewMemStore(), delay: 200 * time.Microsecond}
	d, err := Open(ctx, st, "live", Options{})
	if err != nil {
		t.Fatal(err)
	}
	const nclients, edits = 6, 40
	var u sync.Mutex
	var runes uniqueRunes
	clients := make([]*otClient, nclients)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := range clients {
		c := &otClient{id: fmt.Sprint("g", i)}
		clients[i] = c
		up := make(chan request, 4)
		down := make(chan Entry, 64)
		linkCtx, stopLinks := context.WithCancel(ctx)
		var links sync.WaitGroup
		// Uplink: delays, then submits in order.
		links.Go(func() {
			for {
				select {
				case r := <-up:
					time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
					if _, err := submitRequest(linkCtx, d, c.id, r); err != nil {
						errs <- fmt.Errorf("%s: %w", c.id, err)
					}
				case <-linkCtx.Done():
					return
				}
			}
		})
		// Downlink: the document's feed, in order, with delays.
		links.Go(func() {
			d.Follow(linkCtx, 0, 0, func(es []Entry) error {
				for _, e := range es {
					time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
					select {
					case down <- e:
					case <-linkCtx.Done():
						return linkCtx.Err()
					}
				}
				return nil
			})
		})
		// The client: edits at random times, applies what arrives.
		wg.Go(func() {
			defer links.Wait()
			defer stopLinks()
			rng := rand.New(rand.NewPCG(uint64(i), 5))
			sendReq := func(r *request) {
				if r != nil {
					up <- *r
				}
			}
			made := 0
			tick := time.NewTicker(500 * time.Microsecond)
			defer tick.Stop()
			for made < edits || c.out != nil || c.buf != nil || c.version < d.Version() {
				select {
				case <-tick.C:
					if made < edits {
						u.Lock()
						op := randEdit(rng, &runes, c.text)
						u.Unlock()
						sendReq(c.edit(op))
						made++
					}
				case e := <-down:
					next, err := c.receive(e)
					if err != nil {
						errs <- err
						return
					}
					sendReq(next)
				case <-ctx.Done():
					errs <- fmt.Errorf("%s: %w (version %d, pending %v)", c.id, ctx.Err(), c.version, c.out)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Clients that finished early may have missed later versions.
	for _, c := range clients {
		es, _ := d.Since(ctx, c.version, 0)
		for _, e := range es {
			if _, err := c.receive(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkOutcome(t, d, clients)
	t.Logf("%d ops in %d commits", d.Stats().Durable, d.Stats().Commits)
}
