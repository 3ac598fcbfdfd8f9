package broker

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// A client that connects again with the same client id while its previous connection is still
// ending races mochi's end of that connection (attachClient, after the OnDisconnect hooks):
// there mochi checks that the session was not taken over, then unsubscribes the old
// connection's filters and deletes the client id from its registry — both by client id. When
// the new connection registered in between, it is the one deleted: it stays connected and
// subscribed as far as it knows, but nothing is routed to it (route.go skips an id without a
// client) until its keep alive runs out. A client that sends DISCONNECT and connects again at
// once meets it about once in 300 tries on a 2-core machine (TestServerTopicAlias did, in CI),
// and so may a bridge that restarts quickly.
//
// handoverHook closes the gap: a new connection of a client id starts reading packets
// (OnSessionEstablished, after its CONNACK) only once the previous connection of that id has
// ended in mochi, and then it puts back what that end removed by id: the client in the
// registry, its subscriptions (those it inherited) in the topic index and, through
// resubscribed, the dispatcher's shared-subscription memberships. Its own SUBSCRIBEs come
// after, since mochi reads none before this hook returns.
type handoverHook struct {
	mqtt.HookBase
	srv          *mqtt.Server
	ended        func(net.Conn) <-chan struct{}                         // the listener's
	resubscribed func(cl *mqtt.Client, pk packets.Packet, codes []byte) // the dispatcher's OnSubscribed
	log          *zap.Logger

	mu   sync.Mutex
	last map[string]*handover // client id → its newest connection
}

// handover is a client id's newest connection and the one before it, until that one ended.
type handover struct {
	cl   *mqtt.Client
	prev *mqtt.Client
}

// handoverTimeout bounds the wait for the previous connection's end; it ends within
// milliseconds once mochi closed it, so this is only a guard against a bug.
const handoverTimeout = 10 * time.Second

var _ mqtt.Hook = (*handoverHook)(nil)

func newHandoverHook(srv *mqtt.Server, ended func(net.Conn) <-chan struct{}, resubscribed func(*mqtt.Client, packets.Packet, []byte), log *zap.Logger) *handoverHook {
	return &handoverHook{srv: srv, ended: ended, resubscribed: resubscribed, log: log, last: map[string]*handover{}}
}

// ID identifies the hook to mochi.
func (h *handoverHook) ID() string { return "lps-handover" }

// Provides tells mochi which events the hook handles.
func (h *handoverHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnSessionEstablished
}

// OnSessionEstablish notes the connection as its client id's newest, before mochi takes over
// the session of the previous one (inheritClientSession) and sends the CONNACK. A previous
// connection that is already closing (it sent DISCONNECT, or its socket failed) ends by itself
// within milliseconds: wait for that here, so that this connection meets a settled session. One
// still open is taken over by mochi after this hook, so its end can only be awaited later.
func (h *handoverHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	e := &handover{cl: cl}
	p := h.last[cl.ID]
	h.last[cl.ID] = e
	h.mu.Unlock()
	// Forgotten when it has ended, not at OnDisconnect: that runs before the end that races a
	// new connection, which must still find this one then.
	go func() {
		<-h.ended(cl.Net.Conn)
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.last[cl.ID] == e {
			delete(h.last, cl.ID)
		}
	}()
	if p == nil {
		return
	}
	if p.cl.Closed() {
		h.wait(cl, p.cl)
		return
	}
	h.mu.Lock()
	e.prev = p.cl
	h.mu.Unlock()
}

// wait waits until prev, the connection before cl, has ended.
func (h *handoverHook) wait(cl, prev *mqtt.Client) {
	t := time.NewTimer(handoverTimeout)
	defer t.Stop()
	select {
	case <-h.ended(prev.Net.Conn):
	case <-t.C:
		h.log.Warn("the previous connection of a client id has not ended; going on without it",
			zap.String("client", cl.ID), zap.Duration("waited", handoverTimeout))
	}
}

// OnSessionEstablished waits for the end of a previous connection that mochi took over, and
// repairs what that end removed. Until it returns the new connection is not attached to its
// session: its messages wait (QoS 0 ones in the dispatcher's joining), so this wait is kept to
// the one case that needs it.
func (h *handoverHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	var prev *mqtt.Client
	if e := h.last[cl.ID]; e != nil && e.cl == cl {
		prev, e.prev = e.prev, nil
	}
	h.mu.Unlock()
	if prev == nil {
		return
	}
	h.wait(cl, prev)
	if _, ok := h.srv.Clients.Get(cl.ID); !ok {
		h.srv.Clients.Add(cl)
	}
	subs := cl.State.Subscriptions.GetAll()
	if len(subs) == 0 {
		return
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}}
	codes := make([]byte, 0, len(subs))
	for _, sub := range subs {
		if h.srv.Topics.Subscribe(cl.ID, sub) {
			atomic.AddInt64(&h.srv.Info.Subscriptions, 1)
		}
		pk.Filters = append(pk.Filters, sub)
		codes = append(codes, sub.Qos)
	}
	h.resubscribed(cl, pk, codes)
}
