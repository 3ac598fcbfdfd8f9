package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"

	"github.com/lpsdev/lps/roles/rastsim"
)

// SimReceived is what a rast-sim Process received, over all its runs. rast-sim counts in
// memory, so a restart (a fault of the backend) forgets what the ended run received; its log
// does not: every command is a "UID: <id>, CMD-START ..." line with the request_id. So the
// ended runs' counts come from their logs, the running one's from its API. Set OnLine as the
// process's ProcessConfig.OnLine.
type SimReceived struct {
	p *Process

	mu   sync.Mutex
	runs map[int]map[string]int // received ids per run, from the log
}

// NewSimReceived tracks p, which must get the returned value's OnLine as its ProcessConfig's.
func NewSimReceived() *SimReceived { return &SimReceived{runs: map[int]map[string]int{}} }

// Track names the process whose runs Received tells apart.
func (s *SimReceived) Track(p *Process) { s.p = p }

// OnLine counts a received command from one line of rast-sim's JSON log.
func (s *SimReceived) OnLine(run int, line []byte) {
	if !bytes.Contains(line, []byte("CMD-START")) {
		return
	}
	var l struct {
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(line, &l) != nil || l.RequestID == "" {
		return
	}
	s.mu.Lock()
	m := s.runs[run]
	if m == nil {
		m = map[string]int{}
		s.runs[run] = m
	}
	m[l.RequestID]++
	s.mu.Unlock()
}

// Received is every Request-Id received and how often: the running process's from sim (GET
// /stats/requests), the ended runs' from their logs.
func (s *SimReceived) Received(ctx context.Context, sim *rastsim.Client) (map[string]int, error) {
	run := s.p.Run()
	live := s.p.Running()
	out := map[string]int{}
	if live {
		var err error
		if out, err = sim.Received(ctx); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for r, m := range s.runs {
		if live && r == run {
			continue
		}
		for id, n := range m {
			out[id] += n
		}
	}
	return out, nil
}

// Logged is what the logs say was received, over all runs.
func (s *SimReceived) Logged() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, m := range s.runs {
		for id, n := range m {
			out[id] += n
		}
	}
	return out
}
