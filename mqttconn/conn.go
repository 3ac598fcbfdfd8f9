package mqttconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
	storefile "github.com/eclipse/paho.golang/paho/store/file"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lpsdev/lps/batchconn"
	"github.com/lpsdev/lps/config"
)

// Defaults of Options, applied in one place (Options.defaults).
const (
	// DefaultKeepAlive is the MQTT keepalive: a dead broker or network is noticed within about
	// 1.5 times this, which is what bounds how long a bridge believes a cut connection is up.
	DefaultKeepAlive = 30 * time.Second
	// DefaultSessionExpiry is the Session Expiry Interval: the broker keeps a disconnected
	// client's session (subscriptions, queued messages, unfinished QoS 2 flows) this long. A day
	// outlives restarts, redeployments and long outages; a client that never comes back costs
	// the broker its queued messages for a day (brokers may cap it lower).
	DefaultSessionExpiry = 24 * time.Hour
	// DefaultConnectTimeout bounds one connection attempt (TCP, TLS and CONNACK).
	DefaultConnectTimeout = 10 * time.Second
	// DefaultReconnectBase and DefaultReconnectMax bound the delay between connection attempts
	// (exponential with jitter): the first retry comes quickly, a broker that stays away is not
	// hammered.
	DefaultReconnectBase = 100 * time.Millisecond
	DefaultReconnectMax  = 5 * time.Second
	// DefaultPacketTimeout bounds how long paho waits for an acknowledgement (PUBCOMP, SUBACK)
	// when the caller's context has no earlier deadline.
	DefaultPacketTimeout = 30 * time.Second
	// disconnectTimeout bounds the clean DISCONNECT at the end of Run.
	disconnectTimeout = 5 * time.Second
)

// Options are the connection settings a role rarely changes. Zero fields take the documented
// defaults.
type Options struct {
	// KeepAlive: zero means DefaultKeepAlive.
	KeepAlive time.Duration
	// SessionExpiry is the MQTT v5 Session Expiry Interval; zero means DefaultSessionExpiry.
	SessionExpiry time.Duration
	// SessionDir, when set, keeps the client's half of the session in files under
	// SessionDir/<client id>/ (paho's file store) so that it survives a restart of the process;
	// "" keeps it in memory (see the package documentation for what that means).
	SessionDir string
	// ConnectTimeout: zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReconnectBase, ReconnectMax: zero means DefaultReconnectBase, DefaultReconnectMax.
	ReconnectBase, ReconnectMax time.Duration
	// PacketTimeout: zero means DefaultPacketTimeout.
	PacketTimeout time.Duration
	// TLSConfig is used for mqtts/ssl/tls URLs; nil means the system roots and TLS 1.2 or newer.
	// ServerName defaults to the broker's host name.
	TLSConfig *tls.Config
	// CAFile, when set, is a PEM bundle of the CA certificates that mqtts/ssl/tls brokers are
	// verified with, instead of the system roots (it replaces TLSConfig.RootCAs). New fails
	// if it cannot be read or holds anything but certificates.
	CAFile string
	// DialContext opens the TCP connection; nil means a net.Dialer.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
}

// validate checks the options; zero values take the defaults.
func (o Options) validate() error {
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"KeepAlive", o.KeepAlive}, {"SessionExpiry", o.SessionExpiry}, {"ConnectTimeout", o.ConnectTimeout},
		{"ReconnectBase", o.ReconnectBase}, {"ReconnectMax", o.ReconnectMax}, {"PacketTimeout", o.PacketTimeout}} {
		if d.v < 0 {
			return config.Invalid(d.field, d.v, "must not be negative (0: the default)")
		}
	}
	return nil
}

func (o *Options) defaults() {
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.SessionExpiry == 0 {
		o.SessionExpiry = DefaultSessionExpiry
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.ReconnectBase == 0 {
		o.ReconnectBase = DefaultReconnectBase
	}
	if o.ReconnectMax == 0 {
		o.ReconnectMax = DefaultReconnectMax
	}
	if o.ReconnectMax < o.ReconnectBase {
		o.ReconnectMax = o.ReconnectBase
	}
	if o.PacketTimeout == 0 {
		o.PacketTimeout = DefaultPacketTimeout
	}
	if o.DialContext == nil {
		o.DialContext = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
}

// Config configures a Conn.
type Config struct {
	// Broker is the broker URL (see ParseBroker); required.
	Broker string
	// Username and Password authenticate the client; empty means the URL's user information,
	// if any, else none.
	Username, Password string
	// ClientID is the MQTT client id, the service name: a restarted instance resumes its own
	// session under it. Required.
	ClientID string
	Options
	// ReceiveMaximum is sent in CONNECT: the broker sends at most this many unacknowledged
	// QoS 1/2 messages. Zero leaves it out (the MQTT default, 65535).
	ReceiveMaximum uint16
	// ManualAck makes received QoS 1/2 messages wait for Ack instead of being acknowledged
	// when OnPublish returns.
	ManualAck bool
	// OnPublish receives every incoming message. It runs on paho's receiving goroutine and must
	// not block: hand the message to a worker.
	OnPublish func(paho.PublishReceived)
	// Subscriptions are (re)subscribed on every connection; Ready reports an error until the
	// broker granted them.
	Subscriptions []paho.SubscribeOptions
	// Logger: nil means none. Registerer receives the connection metrics; nil means none.
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

// Conn is a managed MQTT v5 connection: Run keeps it up, reconnecting with backoff, until its
// context ends. Its methods are safe for concurrent use.
type Conn struct {
	cfg     Config
	broker  Broker
	session *trackingSession
	acfg    autopaho.ClientConfig
	log     *zap.Logger
	m       connMetrics
	started atomic.Bool
	wg      sync.WaitGroup // subscribe goroutines

	mu         sync.Mutex
	cm         *autopaho.ConnectionManager
	connected  bool
	subscribed bool
	connCtx    context.Context // of the current connection; cancelled with ErrConnectionLost when it goes
	connCancel context.CancelCauseFunc
	changed    chan struct{}           // closed and replaced on every change of connected/subscribed
	pending    map[uint16]*paho.Client // acknowledgements released by Ack, not yet sent by paho
	ackSent    chan struct{}           // closed and replaced whenever paho sends one
	everUp     bool                    // a connection has been made before
	delayed    bool                    // the broker's CONNACK announced delayed publish
}

// New validates cfg and prepares the connection; Run connects.
func New(cfg Config) (*Conn, error) {
	b, err := ParseBroker(cfg.Broker)
	if err != nil {
		return nil, config.Invalid("Broker", redact(cfg.Broker), "%v", err)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("MQTT client id is required (the service name): a persistent session is found again by it")
	}
	if len(cfg.ClientID) > 65535 || !utf8.ValidString(cfg.ClientID) {
		return nil, fmt.Errorf("MQTT client id %q is not a UTF-8 string of at most 65535 bytes", cfg.ClientID)
	}
	if err := cfg.Options.validate(); err != nil {
		return nil, err
	}
	if cfg.Options, err = cfg.Options.withCAFile(); err != nil {
		return nil, err
	}
	if cfg.Username == "" && cfg.Password == "" {
		cfg.Username, cfg.Password = b.Username, b.Password
	}
	cfg.Options.defaults()
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Conn{
		cfg:     cfg,
		broker:  b,
		log:     cfg.Logger.With(zap.Stringer("broker", b), zap.String("client_id", cfg.ClientID)),
		changed: make(chan struct{}),
		pending: make(map[uint16]*paho.Client),
		ackSent: make(chan struct{}),
	}
	inner, err := newSessionState(cfg.SessionDir, cfg.ClientID)
	if err != nil {
		return nil, err
	}
	inner.SetErrorLogger(pahoLogger{c.log.Named("session"), zapcore.WarnLevel})
	c.session = &trackingSession{SessionManager: inner, onAck: c.ackSentFor, notes: map[uint16]*pubrecNote{}, manual: cfg.ManualAck}
	c.session.acks.send = c.session.sendAck
	c.m = newConnMetrics(cfg.Registerer)
	c.acfg = c.clientConfig()
	return c, nil
}

// Broker is the parsed broker URL.
func (c *Conn) Broker() Broker { return c.broker }

func (c *Conn) clientConfig() autopaho.ClientConfig {
	o := c.cfg.Options
	backoff := Backoff{Base: o.ReconnectBase, Max: o.ReconnectMax}
	expiry := uint32(math.MaxUint32)
	if s := o.SessionExpiry / time.Second; s < math.MaxUint32 {
		expiry = uint32(s)
	}
	keepAlive := uint16(math.MaxUint16)
	if s := o.KeepAlive / time.Second; s < math.MaxUint16 {
		keepAlive = uint16(max(s, 1))
	}
	onPublish := c.cfg.OnPublish
	acfg := autopaho.ClientConfig{
		ServerUrls: []*url.URL{c.broker.URL},
		KeepAlive:  keepAlive,
		// Clean start off, always: the session is what keeps a consumer's messages while it is
		// away (SPEC section 3).
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         expiry,
		ReconnectBackoff:              func(n int) time.Duration { return backoff.Delay(n) },
		ConnectTimeout:                o.ConnectTimeout,
		AttemptConnection:             c.dial,
		OnConnectionUp:                c.onUp,
		OnConnectionDown:              c.onDown,
		OnConnectError:                c.onConnectError,
		Errors:                        pahoLogger{c.log.Named("autopaho"), zapcore.WarnLevel},
		PahoErrors:                    pahoLogger{c.log.Named("paho"), zapcore.WarnLevel},
		ConnectUsername:               c.cfg.Username,
		ConnectPassword:               []byte(c.cfg.Password),
		ClientConfig: paho.ClientConfig{
			ClientID:      c.cfg.ClientID,
			Session:       c.session,
			PacketTimeout: o.PacketTimeout,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				if c.cfg.ManualAck && pr.Packet.QoS > 0 {
					c.session.acks.received(pr.Client, pr.Packet.Packet())
				}
				if onPublish != nil {
					onPublish(pr)
				}
				return true, nil
			}},
			// paho acknowledges each message once the handlers above return; with ManualAck the
			// session holds that back and ackOrder sends it when Ack is called (see ackOrder for
			// why paho's own manual acknowledgement is not used).
			OnServerDisconnect: func(d *paho.Disconnect) {
				reason := ""
				if d.Properties != nil {
					reason = d.Properties.ReasonString
				}
				c.log.Warn("broker closed the connection", zap.Uint8("reason_code", d.ReasonCode), zap.String("reason", reason))
			},
			OnClientError: func(err error) { c.log.Debug("connection error", zap.Error(err)) },
		},
	}
	if c.log.Core().Enabled(zapcore.DebugLevel) {
		acfg.Debug = pahoLogger{c.log.Named("autopaho"), zapcore.DebugLevel}
		acfg.PahoDebug = pahoLogger{c.log.Named("paho"), zapcore.DebugLevel}
	}
	recvMax := c.cfg.ReceiveMaximum
	acfg.ConnectPacketBuilder = func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
		if cp.Properties == nil {
			cp.Properties = &paho.ConnectProperties{}
		}
		// paho sends Request Problem Information = 0 whenever CONNECT has properties and this is
		// false, and mochi then strips user properties from every PUBLISH it sends the client
		// (request_id, attempts). 1 is the MQTT default anyway.
		cp.Properties.RequestProblemInfo = true
		if recvMax > 0 {
			cp.Properties.ReceiveMaximum = &recvMax
		}
		return cp, nil
	}
	return acfg
}

// dial opens the network connection of one attempt: TCP through Options.DialContext, then TLS
// for a TLS URL. autopaho passes the manager's context, not the attempt's, so the attempt's
// timeout is applied here.
func (c *Conn) dial(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	conn, err := c.cfg.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if !c.broker.TLS {
		return batchconn.New(conn), nil
	}
	tc := tls.Client(conn, c.tlsConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", u.Host, err)
	}
	// A batchconn.Conn is a sync.Locker, which paho takes around the writes of one packet:
	// tls.Conn writes are not safe for its concurrent writers otherwise.
	return batchconn.New(tc), nil
}

func (c *Conn) tlsConfig() *tls.Config {
	var tc *tls.Config
	if c.cfg.TLSConfig != nil {
		tc = c.cfg.TLSConfig.Clone()
	} else {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tc.ServerName == "" {
		tc.ServerName = c.broker.URL.Hostname()
	}
	return tc
}

func (c *Conn) onUp(cm *autopaho.ConnectionManager, ca *paho.Connack) {
	c.mu.Lock()
	c.connected = true
	c.subscribed = len(c.cfg.Subscriptions) == 0
	c.connCtx, c.connCancel = context.WithCancelCause(context.Background())
	connCtx := c.connCtx
	reconnect := c.everUp
	c.everUp = true
	c.delayed = ca.Properties != nil && ca.Properties.User.Get(DelayedPublishProperty) != ""
	c.broadcastLocked()
	c.mu.Unlock()

	c.m.connects.Inc()
	c.m.connected.Set(1)
	if reconnect && !ca.SessionPresent && len(c.cfg.Subscriptions) > 0 {
		c.log.Warn("connected, but the broker had no session for this client: messages queued for it while it was away are gone (broker restarted without persistence, or the session expired)")
	} else {
		c.log.Info("connected", zap.Bool("session_present", ca.SessionPresent))
	}
	if len(c.cfg.Subscriptions) > 0 {
		c.wg.Add(1)
		go c.subscribe(cm, connCtx)
	}
}

// subscribe subscribes on one connection, retrying with backoff until the broker grants it or
// the connection goes.
func (c *Conn) subscribe(cm *autopaho.ConnectionManager, connCtx context.Context) {
	defer c.wg.Done()
	backoff := Backoff{Base: c.cfg.ReconnectBase, Max: c.cfg.ReconnectMax}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(backoff.Delay(attempt))
			select {
			case <-connCtx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		ctx, cancel := context.WithTimeout(connCtx, c.cfg.PacketTimeout)
		sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: c.cfg.Subscriptions})
		cancel()
		if connCtx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Warn("subscribing failed; retrying", zap.Int("attempt", attempt+1), zap.Error(err))
			continue
		}
		for i, s := range c.cfg.Subscriptions {
			if i < len(sa.Reasons) && sa.Reasons[i] < s.QoS {
				c.log.Warn("broker granted a lower QoS than asked", zap.String("filter", s.Topic),
					zap.Uint8("asked", s.QoS), zap.Uint8("granted", sa.Reasons[i]))
			}
		}
		c.mu.Lock()
		if c.connCtx == connCtx {
			c.subscribed = true
			c.broadcastLocked()
		}
		c.mu.Unlock()
		filters := make([]string, len(c.cfg.Subscriptions))
		for i, s := range c.cfg.Subscriptions {
			filters[i] = s.Topic
		}
		c.log.Info("subscribed", zap.Strings("filters", filters))
		return
	}
}

func (c *Conn) onDown() bool {
	c.mu.Lock()
	c.connected, c.subscribed = false, false
	if c.connCancel != nil {
		c.connCancel(ErrConnectionLost)
		c.connCancel = nil
	}
	c.broadcastLocked()
	c.mu.Unlock()
	c.m.losses.Inc()
	c.m.connected.Set(0)
	c.log.Warn("connection to the broker lost; reconnecting")
	return true // keep reconnecting
}

func (c *Conn) onConnectError(err error) {
	c.m.failures.Inc()
	c.log.Warn("connecting to the broker failed; retrying", zap.Error(err))
}

// broadcastLocked wakes everyone waiting for a state change. c.mu must be held.
func (c *Conn) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Run connects and keeps the connection up until ctx ends, then disconnects cleanly (a
// DISCONNECT with reason 0, so the broker keeps the session, the subscriptions and every
// unacknowledged message for the next connection). It returns an error only when the clean
// disconnect failed. Run may be called once.
func (c *Conn) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("mqttconn: Run called twice")
	}
	cm, err := autopaho.NewConnection(context.WithoutCancel(ctx), c.acfg)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", c.broker, err)
	}
	c.mu.Lock()
	c.cm = cm
	c.mu.Unlock()
	c.log.Info("connecting")

	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
	err = cm.Disconnect(dctx)
	cancel()

	// The connection is gone: end what lives on it (a subscribe still waiting for its SUBACK
	// would otherwise retry forever on a connection manager that no longer connects), then
	// wait for it.
	c.mu.Lock()
	wasUp := c.connected
	c.connected, c.subscribed = false, false
	if c.connCancel != nil {
		c.connCancel(ErrConnectionLost)
		c.connCancel = nil
	}
	c.broadcastLocked()
	c.mu.Unlock()
	c.wg.Wait()
	c.m.connected.Set(0)
	_ = c.session.Close() // releases waiters; a file store keeps its files
	if err != nil {
		return fmt.Errorf("disconnecting from %s: %w", c.broker, err)
	}
	if wasUp {
		c.log.Info("disconnected; the broker keeps the session")
	}
	return nil
}

// Connected reports whether a connection is up.
func (c *Conn) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// DelayedPublish reports whether the broker of the last connection announced, in its CONNACK,
// that it delays messages published to "$delayed/<seconds>/<topic>" (see DelayedTopic).
func (c *Conn) DelayedPublish() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delayed
}

// Ready returns nil when a connection is up and its subscriptions are granted, else an error
// saying which is missing: the /readyz check of a bridge.
func (c *Conn) Ready(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readyLocked()
}

func (c *Conn) readyLocked() error {
	switch {
	case !c.connected:
		return fmt.Errorf("%w at %s", ErrNotConnected, c.broker)
	case !c.subscribed:
		return fmt.Errorf("connected to %s, subscriptions not yet granted", c.broker)
	}
	return nil
}

// AwaitReady waits until Ready returns nil or ctx ends.
func (c *Conn) AwaitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		err := c.readyLocked()
		changed := c.changed
		c.mu.Unlock()
		if err == nil {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", err, ctx.Err())
		}
	}
}

// Publish sends p and, for QoS 1 and 2, waits until the broker completed the flow: PUBACK, or
// PUBREC and PUBCOMP (paho's Publish returns only after PUBCOMP for QoS 2). It returns
// ErrNotConnected when no connection is up, ErrConnectionLost when the connection broke
// before the broker confirmed, an error wrapping context.DeadlineExceeded when no confirmation
// came in time, and a *ReasonCodeError when the broker answered a failure reason code. A nil
// error means the broker took the message; the response's ReasonCode may still be
// ReasonNoMatchingSubscribers, at QoS 1 from the PUBACK and at QoS 2 from the PUBREC (which
// paho alone would hide): the broker will deliver the message to nobody.
func (c *Conn) Publish(ctx context.Context, p *paho.Publish) (*paho.PublishResponse, error) {
	c.mu.Lock()
	cm, connCtx, up := c.cm, c.connCtx, c.connected
	c.mu.Unlock()
	if !up || cm == nil {
		return nil, ErrNotConnected
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// paho keeps waiting for the PUBCOMP of a message whose connection broke (the message stays
	// in the session and is resent after the reconnect); the caller learns at once instead.
	stop := context.AfterFunc(connCtx, func() { cancel(ErrConnectionLost) })
	defer stop()

	note := &pubrecNote{}
	defer c.session.forget(note)
	resp, err := cm.Publish(context.WithValue(pctx, pubrecKey{}, note), p)
	if err != nil {
		switch {
		case errors.Is(err, autopaho.ConnectionDownError), errors.Is(err, session.ErrNoConnection):
			return nil, ErrNotConnected
		case errors.Is(context.Cause(pctx), ErrConnectionLost):
			return nil, ErrConnectionLost
		case errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("publishing to %s: the broker did not confirm in time: %w", p.Topic, context.DeadlineExceeded)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("publishing to %s: %w", p.Topic, ctx.Err())
		default:
			return nil, fmt.Errorf("publishing to %s: %w", p.Topic, err)
		}
	}
	if resp != nil && resp.ReasonCode >= 0x80 {
		rce := &ReasonCodeError{Code: resp.ReasonCode}
		if resp.Properties != nil {
			rce.Reason = resp.Properties.ReasonString
		}
		return resp, rce
	}
	if resp != nil && resp.ReasonCode == 0 && note.code == ReasonNoMatchingSubscribers {
		// QoS 2: the PUBCOMP was a success, but the PUBREC said nobody will get the message.
		resp.ReasonCode = ReasonNoMatchingSubscribers
	}
	return resp, nil
}

// Ack acknowledges a message received with ManualAck. It is sent once every earlier message
// of the connection is acknowledged too. It returns an error wrapping
// ErrConnectionLost when the message's connection is gone: the broker will redeliver it.
func (c *Conn) Ack(pr paho.PublishReceived) error {
	if pr.Packet.QoS == 0 {
		return nil
	}
	id := pr.Packet.PacketID
	// Recorded before paho may send it, so the flusher's report cannot come first.
	c.mu.Lock()
	c.pending[id] = pr.Client
	c.mu.Unlock()
	if err := c.session.acks.ack(pr.Client, id); err != nil {
		c.mu.Lock()
		if c.pending[id] == pr.Client {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		if errors.Is(err, paho.ErrPacketNotFound) {
			return fmt.Errorf("acknowledging message %d: %w", id, ErrConnectionLost)
		}
		return fmt.Errorf("acknowledging message %d: %w", id, err)
	}
	return nil
}

// ackSentFor is called by the session when paho sent the acknowledgement of packet id.
func (c *Conn) ackSentFor(id uint16) {
	c.m.acks.Inc()
	c.mu.Lock()
	delete(c.pending, id)
	close(c.ackSent)
	c.ackSent = make(chan struct{})
	c.mu.Unlock()
}

// WaitAcks waits until paho has sent every acknowledgement released by Ack on a connection
// that is still up, or ctx ends. A bridge calls it before disconnecting, so that what it
// acknowledged is not redelivered.
func (c *Conn) WaitAcks(ctx context.Context) error {
	for {
		c.mu.Lock()
		n := 0
		for id, cl := range c.pending {
			select {
			case <-cl.Done(): // its connection is gone; the broker redelivers the message
				delete(c.pending, id)
			default:
				n++
			}
		}
		sent, changed := c.ackSent, c.changed
		c.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-sent:
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d acknowledgements to be sent: %w", n, ctx.Err())
		}
	}
}

// trackingSession is paho's session state with a report of every acknowledgement sent, and
// the reason code of every PUBREC that answered one of Publish's QoS 2 messages.
//
// paho's state machine answers a PUBREC below 0x80 with PUBREL itself and hands the publisher
// only the PUBCOMP, whose reason code is 0x00 or 0x92: a PUBREC of 0x10 (no matching
// subscribers, MQTT 5 section 3.5.2.1) never reaches the caller, although it says the broker
// will deliver the message to nobody. So Publish passes a *pubrecNote in its context, the
// session learns the packet identifier when AddToSession assigns it, and PacketReceived records
// the PUBREC's reason code there.
type trackingSession struct {
	session.SessionManager
	onAck  func(packetID uint16)
	manual bool     // Config.ManualAck
	acks   ackOrder // with manual, the received messages whose acknowledgements wait

	mu    sync.Mutex
	notes map[uint16]*pubrecNote
}

// pubrecNote is where the session records the PUBREC of one QoS 2 publish.
type pubrecNote struct {
	id   uint16
	code byte
}

type pubrecKey struct{}

// Ack is paho's acknowledgement of a message its handlers took. With ManualAck it is held
// back: ackOrder sends it when the application acknowledges the message.
func (s *trackingSession) Ack(pb *packets.Publish) error {
	if s.manual && pb.QoS > 0 {
		return nil
	}
	return s.sendAck(pb)
}

// sendAck writes a message's acknowledgement through paho's session state.
func (s *trackingSession) sendAck(pb *packets.Publish) error {
	err := s.SessionManager.Ack(pb)
	s.onAck(pb.PacketID)
	return err
}

// ConAckReceived starts a connection: paho calls it before the connection's reader starts, so
// no message of the new connection can be recorded before the old ones are forgotten.
func (s *trackingSession) ConAckReceived(conn io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	s.acks.reset()
	return s.SessionManager.ConAckReceived(conn, cp, ca)
}

// ConnectionLost forgets the lost connection's messages: the broker delivers them again.
func (s *trackingSession) ConnectionLost(dp *packets.Disconnect) error {
	s.acks.reset()
	return s.SessionManager.ConnectionLost(dp)
}

func (s *trackingSession) AddToSession(ctx context.Context, pk session.Packet, resp chan<- packets.ControlPacket) error {
	if err := s.SessionManager.AddToSession(ctx, pk, resp); err != nil {
		return err
	}
	// The PUBLISH is written only after AddToSession returns, so its PUBREC cannot come first.
	if note, ok := ctx.Value(pubrecKey{}).(*pubrecNote); ok {
		if pb, ok := pk.(*packets.Publish); ok && pb.QoS == 2 {
			s.mu.Lock()
			note.id = pb.PacketID
			s.notes[pb.PacketID] = note
			s.mu.Unlock()
		}
	}
	return nil
}

func (s *trackingSession) PacketReceived(cp *packets.ControlPacket, pubs chan<- *packets.Publish) error {
	if rec, ok := cp.Content.(*packets.Pubrec); ok {
		s.mu.Lock()
		if note := s.notes[rec.PacketID]; note != nil {
			note.code = rec.ReasonCode
		}
		s.mu.Unlock()
	}
	return s.SessionManager.PacketReceived(cp, pubs)
}

// forget drops a note once its publish has returned.
func (s *trackingSession) forget(note *pubrecNote) {
	s.mu.Lock()
	if note.id != 0 && s.notes[note.id] == note {
		delete(s.notes, note.id)
	}
	s.mu.Unlock()
}

// newSessionState returns paho's session state, in memory or, with a directory, in files.
// The client and server stores get directories of their own: paho's file store lists every
// file of its directory when it loads.
func newSessionState(dir, clientID string) (session.SessionManager, error) {
	if dir == "" {
		return state.NewInMemory(), nil
	}
	base := filepath.Join(dir, safeName(clientID))
	cs, err := storefile.New(filepath.Join(base, "client"), "pkt", ".bin")
	if err != nil {
		return nil, fmt.Errorf("opening the session store in %s: %w", base, err)
	}
	ss, err := storefile.New(filepath.Join(base, "server"), "pkt", ".bin")
	if err != nil {
		return nil, fmt.Errorf("opening the session store in %s: %w", base, err)
	}
	return state.New(cs, ss), nil
}

// safeName makes a client id usable as a directory name.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// pahoLogger writes paho's log lines to zap at one level.
type pahoLogger struct {
	l     *zap.Logger
	level zapcore.Level
}

func (p pahoLogger) Println(v ...any) {
	if ce := p.l.Check(p.level, strings.TrimSpace(fmt.Sprintln(v...))); ce != nil {
		ce.Write()
	}
}

func (p pahoLogger) Printf(format string, v ...any) {
	if ce := p.l.Check(p.level, strings.TrimSpace(fmt.Sprintf(format, v...))); ce != nil {
		ce.Write()
	}
}

// connMetrics are the connection's Prometheus metrics.
type connMetrics struct {
	connected                        prometheus.Gauge
	connects, losses, failures, acks prometheus.Counter
}

func newConnMetrics(reg prometheus.Registerer) connMetrics {
	m := connMetrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lps_mqtt_connected", Help: "1 while the connection to the MQTT broker is up.",
		}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_connects_total", Help: "Connections made to the MQTT broker (the first and every reconnect).",
		}),
		losses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_disconnects_total", Help: "Connections to the MQTT broker that were lost.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_connect_failures_total", Help: "Connection attempts to the MQTT broker that failed.",
		}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lps_mqtt_acks_sent_total", Help: "Acknowledgements of received QoS 1/2 messages sent to the broker (PUBACK, PUBREC).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.connects, m.losses, m.failures, m.acks)
	}
	return m
}
