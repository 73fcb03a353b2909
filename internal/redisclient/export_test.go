package redisclient

// Confirming reports whether a confirming PING is in flight.
func (b *Breaker) Confirming() bool { return b.confirming.Load() }
