package broker

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.uber.org/zap"
)

// dispatcher is the mochi hook that owns the delivery of every published
// message: routing, shared-subscription selection, per-subscriber queues,
// packet ids and the outbound QoS 1/2 handshakes.
//
// mochi's own delivery path (Server.publishToSubscribers and publishToClient
// in server.go) cannot give the broker what the LPS needs:
//   - a shared subscription gets one member chosen at random
//     (Subscribers.SelectShared picks the first entry of a map), whether or
//     not it has receive quota; OnSelectSubscribers can choose another
//     member but not hold a message back until one has quota;
//   - when a client's send quota is exhausted, publishToClient marks the
//     message "immediate" and processPacket sends one such message per
//     packet later received from the client, ordered by creation second,
//     and deletes it from the inflight map as it writes it, so its
//     acknowledgement is not recognised and the stored copy is never
//     removed (redelivered after every restart);
//   - beyond Capabilities.MaximumInflight messages per client, or when the
//     outbound channel is full, messages are dropped with only a counter;
//   - on reconnect ResendInflightMessages writes every inflight message at
//     once, ignoring the client's receive maximum (paho then blocks in its
//     receive channel);
//   - outbound and inbound QoS flows share one inflight map keyed by packet
//     id, so a client that both subscribes and publishes (mqtt2http
//     republishes to its retry topic) deletes the message in flight to it
//     when its own PUBLISH reuses the id, and the subscription stalls.
//
// So the dispatcher takes the message in OnPublish (before mochi sends PUBREC
// or PUBACK, so a message is durable before the publisher hears it was
// accepted) and answers CodeSuccessIgnore, which makes mochi complete the
// publisher's handshake but skip retaining and delivery. It keeps its own
// sessions, queues and inflight windows, writes PUBLISH and PUBREL itself,
// and takes the subscribers' PUBACK, PUBREC and PUBCOMP in OnPacketRead,
// handing mochi a harmless packet in their place. mochi's inflight map is
// left with the inbound QoS 2 state only.
type dispatcher struct {
	mqtt.HookBase

	srv         *mqtt.Server
	st          *store  // nil: nothing persists
	acc         *access // credentials and access rules; set by New before the server starts
	log         *zap.Logger
	met         *metrics
	maxQueued   int // a client queue, the delayed messages
	maxInflight int
	window      int // messages of a group queue in memory with a data dir (backlog.go)

	maxStoreBytes  int64 // Config.MaxStoreBytes; negative: no bound
	maxGroupQueued int   // a group queue: on disk with a data dir (Config.MaxQueued)

	mu          sync.Mutex
	closed      bool
	seq         uint64
	sessions    map[string]*session
	groups      map[string]*group
	declared    []*group // the groups of Config.Queues, sorted by filter; never forgotten
	subscribing map[*mqtt.Client]pendingSubscribe
	joining     map[string]*joining // client id → a connection resuming its session, until attached
	wills       map[string]*time.Timer
	delayed     delayHeap // messages published to $delayed/... waiting for their time

	senders   sync.WaitGroup // one goroutine per connected session
	delayers  sync.WaitGroup // runDelayed, from OnStarted to OnStopped
	delayWake chan struct{}  // a delayed message became the next one due
	delayStop chan struct{}  // closed by OnStopped
}

var _ mqtt.Hook = (*dispatcher)(nil)

func newDispatcher(srv *mqtt.Server, st *store, log *zap.Logger, met *metrics, maxQueued, maxInflight int, queues []Queue) *dispatcher {
	d := &dispatcher{
		srv:       srv,
		st:        st,
		log:       log,
		met:       met,
		maxQueued: maxQueued,

		maxGroupQueued: maxQueued,
		maxInflight:    maxInflight,
		window:         groupWindow,
		sessions:       map[string]*session{},
		groups:         map[string]*group{},
		subscribing:    map[*mqtt.Client]pendingSubscribe{},
		joining:        map[string]*joining{},
		wills:          map[string]*time.Timer{},
		delayWake:      make(chan struct{}, 1),
		delayStop:      make(chan struct{}),
	}
	for _, q := range queues {
		g := d.group(q.shared())
		g.declared = &q
		d.declared = append(d.declared, g)
	}
	slices.SortFunc(d.declared, func(a, b *group) int { return strings.Compare(a.filter, b.filter) })
	return d
}

// ID identifies the hook to mochi.
func (d *dispatcher) ID() string { return "lps-dispatcher" }

// Provides tells mochi which events the dispatcher handles.
func (d *dispatcher) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnStarted,
		mqtt.OnStopped,
		mqtt.OnPacketRead,
		mqtt.OnPacketEncode,
		mqtt.OnPacketProcessed,
		mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnClientExpired,
		mqtt.OnSubscribe,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnPublish,
		mqtt.OnWill,
	}, b) >= 0
}

// --- persistence helpers (all called with d.mu held) ---

func (d *dispatcher) storeClientMsg(b *batch, s *session, m *outMsg) {
	if d.st != nil && (s.persistent || m.group != "") {
		b.put(outKey(ownerClient, s.id, m.seq), m.record(s.id))
		m.stored = true
	}
}

func (d *dispatcher) unstoreClientMsg(b *batch, s *session, m *outMsg) {
	if m.stored {
		b.del(outKey(ownerClient, s.id, m.seq))
		m.stored = false
	}
}

// storeGroupMsg and unstoreGroupMsg keep the group's record count beside
// its records, in the same transaction, so a restart reads the count
// instead of counting a backlog (backlog.go).
func (d *dispatcher) storeGroupMsg(b *batch, g *group, m *outMsg) {
	if d.st != nil {
		b.put(outKey(ownerGroup, g.filter, m.seq), m.record(""))
		g.stored++
		b.putCount(g.filter, g.stored)
	}
}

func (d *dispatcher) unstoreGroupMsg(b *batch, g *group, m *outMsg) {
	if d.st != nil {
		b.del(outKey(ownerGroup, g.filter, m.seq))
		g.stored--
		b.putCount(g.filter, g.stored)
	}
}

// commit hands b to the data dir's group commit without waiting for it.
// Memory already reflects it; if the write fails the committer logs it: the
// data dir lags behind, and a restart redelivers (duplicates) rather than
// loses.
func (d *dispatcher) commit(b *batch) {
	d.st.enqueue(b)
}

// drop counts messages the broker gives up on.
func (d *dispatcher) drop(reason string, n int) {
	d.met.dropped.WithLabelValues(reason).Add(float64(n))
}

// Stats is a snapshot of the dispatcher's state.
func (d *dispatcher) stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	var st Stats
	st.Sessions = len(d.sessions)
	for _, s := range d.sessions {
		if s.conn != nil {
			st.ClientsConnected++
		}
		st.Queued += s.queue.len()
		for _, m := range s.inflight {
			if m.state == stateReleased {
				st.Releasing++
			} else {
				st.Inflight++
			}
		}
	}
	for _, g := range d.groups {
		st.Queued += g.len()
	}
	st.Delayed = len(d.delayed)
	st.Queues = make(map[string]int, len(d.declared))
	for _, g := range d.declared {
		st.Queues[g.declared.String()] = g.len()
	}
	return st
}
