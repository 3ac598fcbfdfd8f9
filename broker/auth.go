package broker

import (
	"crypto/subtle"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// access decides who may connect and what each client may do: the
// credentials (Config.Username and Password, Config.PasswordFile) and the
// access rules (Config.ACLFile, acl.go). A nil *access allows everything.
//
// Without credentials every client connects, anonymously: a user name it
// sends is not checked, so the ACL does not believe it either and applies the
// anonymous rules. With credentials every client must present one of them,
// and the ACL applies its user's rules.
//
// A client id belongs to its user: a client authenticated through the
// password file may only use the client id <user> or <user>-<anything>
// (mqtt2http's retry connection is <service>-retry), else CONNACK 0x85
// "Client Identifier not valid". Without that rule any user could connect as
// proxy2-1 with clean start and discard that session's queue. The single
// Config.Username is one identity shared by every client, so it keeps any
// client id, as before; a server-assigned id (an empty client id) is always
// the client's own.
type access struct {
	user, pass []byte        // Config.Username and Password; nil: none
	passwords  *PasswordFile // nil: none
	acl        *ACL          // nil: every topic allowed
}

// credentials reports whether clients must authenticate.
func (a *access) credentials() bool {
	return a != nil && (a.user != nil || a.passwords != nil)
}

// identity returns what the ACL knows the client as.
func (a *access) identity(cl *mqtt.Client) (user string, anonymous bool) {
	if !a.credentials() {
		return "", true
	}
	return string(cl.Properties.Username), false
}

// mayRead checks a subscription filter, or a topic a client is to receive.
func (a *access) mayRead(cl *mqtt.Client, filter string) verdict {
	if a == nil || a.acl == nil {
		return granted
	}
	user, anon := a.identity(cl)
	return a.acl.check(user, anon, cl.ID, filter, accessRead)
}

// mayWrite checks a topic a client publishes to.
func (a *access) mayWrite(cl *mqtt.Client, topic string) bool {
	if a == nil || a.acl == nil {
		return true
	}
	user, anon := a.identity(cl)
	return a.acl.check(user, anon, cl.ID, topic, accessWrite) == granted
}

// authHook is access as a mochi hook: it admits clients (OnConnect) and
// checks subscriptions (OnACLCheck, OnSubscribed). Publishes are checked by
// the dispatcher in OnPublish (see OnACLCheck).
//
// mochi's hooks/auth ledger would do part of it, but it compares passwords
// with ==, its rule strings treat "*" as a wildcard (a password ending in "*"
// would match any password with that prefix), and it has neither Mosquitto's
// format nor a way to answer 0x85.
type authHook struct {
	mqtt.HookBase
	*access
	srv *mqtt.Server
	log *zap.Logger
}

var _ mqtt.Hook = (*authHook)(nil)

// ID identifies the hook to mochi.
func (h *authHook) ID() string { return "lps-auth" }

// Provides tells mochi which events the hook handles.
func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribed:
		return true
	}
	return false
}

// OnConnect checks the client's credentials (bad user name or password: 0x86),
// that its client id is its user's (0x85) and that it may publish to the
// topic of its will (0x87 Not authorized, as Mosquitto: the broker publishes
// the will for it, so it is checked as the client's publish). It answers a
// refusal itself: OnConnectAuthenticate can only make mochi answer 0x86.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	code := h.admit(cl, pk)
	if code == packets.CodeSuccess {
		return nil
	}
	if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
		h.log.Debug("writing CONNACK", zap.String("client", cl.ID), zap.Error(err))
	}
	return code
}

func (h *authHook) admit(cl *mqtt.Client, pk packets.Packet) packets.Code {
	c := pk.Connect
	if h.credentials() {
		single, ok := false, false
		if c.UsernameFlag && c.PasswordFlag {
			if h.user != nil {
				// Constant time: compare both, always.
				single = subtle.ConstantTimeCompare(c.Username, h.user)&subtle.ConstantTimeCompare(c.Password, h.pass) == 1
			}
			ok = single || (h.passwords != nil && h.passwords.Check(c.Username, c.Password))
		}
		switch {
		case !ok:
			h.log.Warn("refusing client: bad user name or password",
				zap.String("client", c.ClientIdentifier), zap.ByteString("user", c.Username), zap.String("remote", cl.Net.Remote))
			return packets.ErrBadUsernameOrPassword
		case !single && cl.Properties.Props.AssignedClientID == "" && !ownClientID(string(c.Username), cl.ID):
			h.log.Warn("refusing client: its client id is not its user's (want <user> or <user>-...)",
				zap.String("client", cl.ID), zap.ByteString("user", c.Username), zap.String("remote", cl.Net.Remote))
			return packets.ErrClientIdentifierNotValid
		}
	}
	if c.WillFlag && !h.mayWrite(cl, c.WillTopic) {
		user, _ := h.identity(cl)
		h.log.Warn("refusing client: the ACL does not let it publish to its will topic",
			zap.String("client", cl.ID), zap.String("user", user), zap.String("will_topic", c.WillTopic))
		return packets.ErrNotAuthorized
	}
	return packets.CodeSuccess
}

// ownClientID reports whether clientID belongs to user.
func ownClientID(user, clientID string) bool {
	return clientID == user || strings.HasPrefix(clientID, user+"-")
}

// OnConnectAuthenticate admits every client OnConnect let through: mochi
// refuses a client no hook admits.
func (h *authHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck checks a subscription filter, or the topic of a retained message
// sent on subscribing. Publishes pass here: the dispatcher checks them in
// OnPublish, where the topic of a publish with a topic alias is known
// (mochi checks before resolving the alias) and a refusal is written in
// order with the acknowledgements that wait for the data dir.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return write || h.mayRead(cl, topic) == granted
}

// OnSubscribed answers 0x80 "Unspecified error" instead of mochi's 0x87 "Not
// authorized" for a filter a deny rule refuses (MQTT 5 section 3.9.3 allows
// either; the Eclipse Paho interoperability test test_subscribe_failure
// expects 0x80), and logs the refusals. mochi writes the SUBACK with this very
// slice of reason codes after the hooks ran (Server.processSubscribe);
// TestACLSubscribeReasonCodes checks that the change reaches the wire.
func (h *authHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if h.access == nil || h.acl == nil {
		return
	}
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] < packets.ErrUnspecifiedError.Code {
			continue
		}
		v := h.mayRead(cl, f.Filter)
		if v == granted {
			continue // refused for another reason
		}
		if v == denied && codes[i] == packets.ErrNotAuthorized.Code {
			codes[i] = packets.ErrUnspecifiedError.Code
		}
		user, _ := h.identity(cl)
		h.log.Warn("refusing subscription: the ACL does not grant it",
			zap.String("client", cl.ID), zap.String("user", user), zap.String("filter", f.Filter))
	}
}
