package broker

import (
	"crypto/subtle"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// authHook admits clients: anyone when no user is configured, otherwise
// only clients presenting the configured user name and password. mochi
// answers a refusal with CONNACK "bad user name or password" (0x86).
//
// mochi's hooks/auth ledger would do, but it compares passwords with ==, its
// rule strings treat "*" as a wildcard (a password ending in "*" would match
// any password with that prefix), and it drags in a YAML library for its
// file format; one user needs none of that.
type authHook struct {
	mqtt.HookBase
	user, pass []byte // nil user: anonymous access
	log        *zap.Logger
}

var _ mqtt.Hook = (*authHook)(nil)

// ID identifies the hook to mochi.
func (h *authHook) ID() string { return "lps-auth" }

// Provides tells mochi which events the hook handles.
func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate checks the credentials of a connecting client in
// constant time.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.user == nil {
		return true
	}
	userOK := subtle.ConstantTimeCompare(pk.Connect.Username, h.user)
	passOK := subtle.ConstantTimeCompare(pk.Connect.Password, h.pass)
	if userOK&passOK == 1 && pk.Connect.UsernameFlag && pk.Connect.PasswordFlag {
		return true
	}
	h.log.Warn("refusing client: bad user name or password",
		zap.String("client", pk.Connect.ClientIdentifier), zap.String("remote", cl.Net.Remote))
	return false
}

// OnACLCheck allows every topic: authenticated clients may publish and
// subscribe anywhere.
func (h *authHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
