package doc

// logRing holds the newest log entries, at most max of them: entry v sits
// at buf[v % len(buf)]. It grows by doubling up to max, then overwrites the
// oldest, so a busy document stops allocating for its log.
type logRing struct {
	buf   []logEntry
	first uint64 // version of the oldest entry held
	n     int
	max   int
}

func newLogRing(max int, first uint64) logRing {
	return logRing{first: first, max: max}
}

// has reports whether version v is held.
func (r *logRing) has(v uint64) bool {
	return v >= r.first && v < r.first+uint64(r.n)
}

// at returns entry v, which must be held.
func (r *logRing) at(v uint64) *logEntry {
	return &r.buf[v%uint64(len(r.buf))]
}

// push appends the entry of the version after the newest.
func (r *logRing) push(e logEntry) {
	if r.n == len(r.buf) {
		if len(r.buf) < r.max {
			r.grow(min(max(2*len(r.buf), 16), r.max))
		} else {
			r.buf[r.first%uint64(len(r.buf))] = logEntry{}
			r.first++
			r.n--
		}
	}
	*r.at(e.Version) = e
	r.n++
}

func (r *logRing) grow(size int) {
	buf := make([]logEntry, size)
	for v := r.first; v < r.first+uint64(r.n); v++ {
		buf[v%uint64(size)] = *r.at(v)
	}
	r.buf = buf
}
