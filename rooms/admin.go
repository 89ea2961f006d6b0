package rooms

// Room returns the name of the participant's room.
func (p *Participant) Room() string { return p.room.name }

// Identity returns the participant's identity.
func (p *Participant) Identity() string { return p.info.Identity }
