package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// keepAliveHook caps the keep alive of MQTT 5 clients at Config.MaxKeepAlive.
//
// A client that asks for more, or for none (0), gets the cap back as Server
// Keep Alive in its CONNACK, which it must use instead of its own
// [MQTT-3.2.2-21]; mochi then closes the connection after 1.5 times the cap
// without a packet [MQTT-3.1.2-22]. Without a cap, a connection that died
// silently (a cable pulled, a NAT entry dropped) would stay "connected" as
// long as the client asked: its session receives nothing, and the messages
// in flight to it — for a member of a shared subscription, messages other
// members could process — wait until the broker notices.
//
// MQTT 3.1.1 has no Server Keep Alive: such a client's keep alive is kept as
// it asked (3.1.1 section 3.1.2.10 obliges the server to use it).
type keepAliveHook struct {
	mqtt.HookBase
	max uint16 // seconds, > 0
}

var _ mqtt.Hook = (*keepAliveHook)(nil)

// ID identifies the hook to mochi.
func (h *keepAliveHook) ID() string { return "lps-keepalive" }

// Provides tells mochi which events the hook handles.
func (h *keepAliveHook) Provides(b byte) bool { return b == mqtt.OnConnect }

// OnConnect runs after mochi has parsed the CONNECT and before it sets the
// connection's read deadline and sends the CONNACK (attachClient), which
// carries State.Keepalive as Server Keep Alive when State.ServerKeepalive.
func (h *keepAliveHook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	if cl.Properties.ProtocolVersion < 5 {
		return nil
	}
	if ka := cl.State.Keepalive; ka == 0 || ka > h.max {
		cl.State.Keepalive = h.max
		cl.State.ServerKeepalive = true
	}
	return nil
}
