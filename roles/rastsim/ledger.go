package rastsim

import "sync"

// Counts is what the simulator received: every command that matched the mapping and was
// POSTed, counted by Request-Id. Received = Distinct + Duplicates.
type Counts struct {
	// Received counts every command.
	Received int `json:"received"`
	// Distinct counts the Request-Ids seen at least once.
	Distinct int `json:"distinct"`
	// Duplicates counts the commands whose Request-Id had arrived before (with any command).
	Duplicates int `json:"duplicates"`
	// InFlight is the number of commands being processed.
	InFlight int `json:"in_flight"`
	// ByCommand splits Received and Duplicates by command name.
	ByCommand map[string]CommandCounts `json:"by_command"`
}

// CommandCounts are the counts of one command.
type CommandCounts struct {
	Received   int `json:"received"`
	Duplicates int `json:"duplicates"`
}

// ledger is the simulator's shared state: the PR1/PR3 bookkeeping and the per-id counts. One
// mutex guards it all; every critical section is a few map and counter updates, which is cheap
// next to an HTTP request even with hundreds in flight, and keeps PR1 and the counts consistent.
// The per-id counts grow with every distinct Request-Id (4 bytes each for the load generator's
// ids, see idCounts), which is what an experiment's ledger needs; a simulator is restarted
// between experiments.
type ledger struct {
	mu        sync.Mutex
	inFlight  int
	finished  uint64 // commands finished since start; PR3 = finished now - finished at arrival
	received  *idCounts
	total     int
	dups      int
	byCommand map[string]*CommandCounts
}

// arrival is what a command saw when it arrived.
type arrival struct {
	pr1      int    // commands in flight, not counting itself
	finished uint64 // ledger.finished at arrival
}

// arrive counts a command and takes it into flight.
func (s *Sim) arrive(id, cmd string) arrival {
	l := &s.ledger
	l.mu.Lock()
	a := arrival{pr1: l.inFlight, finished: l.finished}
	l.inFlight++
	n := l.received.add(id)
	l.total++
	cc := l.byCommand[cmd]
	if cc == nil {
		cc = &CommandCounts{}
		l.byCommand[cmd] = cc
	}
	cc.Received++
	if n > 0 {
		l.dups++
		cc.Duplicates++
	}
	l.mu.Unlock()

	// The metrics are updated outside the lock; each update is atomic and commutes.
	s.metrics.inFlight.Inc()
	s.metrics.requests.WithLabelValues(cmd).Inc()
	if n > 0 {
		s.metrics.duplicates.Inc()
	} else {
		s.metrics.distinct.Inc()
	}
	return a
}

// finish takes a command out of flight; every command still in flight sees PR3 grow by one.
func (s *Sim) finish() {
	l := &s.ledger
	l.mu.Lock()
	l.inFlight--
	l.finished++
	l.mu.Unlock()
	s.metrics.inFlight.Dec()
}

// finishedSince is PR3: the commands that finished since a arrived.
func (s *Sim) finishedSince(a arrival) int {
	l := &s.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.finished - a.finished)
}

// Counts returns what the simulator received so far.
func (s *Sim) Counts() Counts {
	l := &s.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	c := Counts{
		Received:   l.total,
		Distinct:   l.received.distinct,
		Duplicates: l.dups,
		InFlight:   l.inFlight,
		ByCommand:  make(map[string]CommandCounts, len(l.byCommand)),
	}
	for name, cc := range l.byCommand {
		c.ByCommand[name] = *cc
	}
	return c
}

// receivedSnapshot returns a copy of the per-id counts, to be read outside the lock.
func (s *Sim) receivedSnapshot() *idCounts {
	l := &s.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.received.clone()
}

// Received returns a copy of the per-id ledger: every Request-Id received and how many times
// it arrived.
func (s *Sim) Received() map[string]int {
	return s.receivedSnapshot().toMap()
}
