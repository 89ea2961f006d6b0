package rooms

import "sync"

// Active reports whether room is open on this node with someone in it.
func (r *Registry) Active(room string) bool {
	r.mu.Lock()
	rm := r.rooms[room]
	r.mu.Unlock()
	if rm == nil {
		return false
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return len(rm.participants) > 0
}

// Names lists the rooms open on this node.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.rooms))
	for name := range r.rooms {
		out = append(out, name)
	}
	return out
}

// Evict ends every session in room, sending each client msg first (a
// redirect when the room moved to another node, a bye), and returns once
// they have left. The room's document is closed with the room.
func (r *Registry) Evict(room string, msg any, reason string) int {
	r.mu.Lock()
	rm := r.rooms[room]
	r.mu.Unlock()
	if rm == nil {
		return 0
	}
	rm.mu.Lock()
	all := make([]*Participant, 0, len(rm.participants))
	for _, p := range rm.participants {
		all = append(all, p)
	}
	rm.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.sink.Send(msg)
			p.Leave(reason)
			p.sink.Close()
		}()
	}
	wg.Wait()
	return len(all)
}
