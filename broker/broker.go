package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults applied by New.
const (
	// DefaultAddress is where the broker listens when Config names no
	// Listener and no Address: loopback, so that nothing is exposed by
	// accident.
	DefaultAddress = "127.0.0.1:1883"
	// DefaultMaxQueued is the default of Config.MaxQueued without a
	// DataDir: a million messages. A queued message then costs about 200
	// bytes of memory plus the packet as received (an LPS alarm is about
	// 300 bytes), so a full queue of this size holds about half a gigabyte.
	DefaultMaxQueued = 1_000_000
	// DefaultMaxQueuedStored is the default of Config.MaxQueued with a
	// DataDir, where a group queue's backlog waits on disk, not in memory
	// (backlog.go): ten million, twice the 5.4 million alarms of a
	// five-hour outage at 300 alarms/s (issue 14). MaxStoreBytes is the
	// bound that matters then.
	DefaultMaxQueuedStored = 10_000_000
	// DefaultMaxInflight is the default of Config.MaxInflight, the same as
	// mochi's default receive maximum.
	DefaultMaxInflight = 1024
	// DefaultMaxKeepAlive is the default of Config.MaxKeepAlive: a minute,
	// twice the bridges' own keep alive (mqttconn.DefaultKeepAlive), so
	// that they are never told to ping more often; a silent connection is
	// closed after 90 seconds.
	DefaultMaxKeepAlive = 60 * time.Second
	// MaxKeepAliveLimit is the largest Config.MaxKeepAlive: mochi computes
	// the 1.5 times keep alive after which it closes a silent connection in
	// 16 bits (Client.refreshDeadline), which wraps above 43690 seconds and
	// would close connections early.
	MaxKeepAliveLimit = 43690 * time.Second
	// DefaultMaxStoreBytes is the default of Config.MaxStoreBytes: 8 GiB.
	// A queued alarm of 200 bytes takes 700 to 760 bytes of the file (its
	// JSON record, the B+tree's keys and page slack; measured by
	// faults.TestBrokerBacklogOnDisk), so the 5.4 million alarms of a
	// five-hour outage at 300 alarms/s (issue 14) take about 3.8 GiB; twice
	// that leaves room for larger alarms, retries and dead letters, and
	// still stops a longer outage before it fills a typical volume. The limit is
	// checked per publish against the file's pages in use, so a refusal
	// comes at once (0x97), not as a failing write later.
	DefaultMaxStoreBytes = 8 << 30
	// DefaultMaxPacketSize is the default of Config.MaxPacketSize: 2 MiB.
	// An alarm is a few hundred bytes, but http2mqtt accepts request
	// bodies up to 1 MiB (transport.DefaultMaxBodyBytes) and publishes the
	// alarm with its properties: the broker must take what the bridge
	// accepted. mochi's own default is no limit, which lets one client
	// make the broker allocate 256 MB for a single packet.
	DefaultMaxPacketSize = 2 << 20
	// DefaultMaxConnections is the default of Config.MaxConnections. The
	// LPS connects a few bridges per site; ten thousand leaves room for
	// tools and tests while bounding what a reconnect storm or a leak of
	// connections can cost (each costs goroutines and buffers).
	DefaultMaxConnections = 10_000
	// DefaultMaxSessionExpiry is the default of Config.MaxSessionExpiry:
	// a week. The bridges ask for a day (mqttconn.DefaultSessionExpiry);
	// a client asking for longer, or forever (0xFFFFFFFF), gets a week, so
	// that a session nobody resumes stops queueing messages eventually.
	DefaultMaxSessionExpiry = 7 * 24 * time.Hour
)

// minPacketSize is the smallest Config.MaxPacketSize accepted: below it a
// client could not even send an alarm's CONNECT and PUBLISH.
const minPacketSize = 1024

// ErrRunTwice is returned by Run on a Broker that has already run or been
// closed: a Broker is used once.
var ErrRunTwice = errors.New("broker already ran")

// Config configures a Broker. Zero values are usable; each field says its
// default.
type Config struct {
	// Listener is the socket to serve on, made by the caller (the roles make
	// listeners with tcptune). The Broker owns it from New on: Run, Close, or
	// a failing New closes it. If nil, the broker listens on Address.
	Listener net.Listener
	// Address is used only when Listener is nil: host:port to listen on with
	// net.Listen. Default DefaultAddress (loopback; give "0.0.0.0:1883" or
	// ":1883" to listen on all interfaces).
	Address string

	// DataDir, if set, is a directory where sessions, subscriptions,
	// queued and in-flight messages and retained messages are kept (one
	// bbolt file, broker.db), so that they survive a restart, graceful or
	// not. "" keeps everything in memory only.
	DataDir string
	// NoSync turns off fsync of DataDir. By default every transaction is
	// fsynced before what it carries is acknowledged, so an acknowledged
	// message survives power loss; changes made meanwhile are gathered
	// into the next transaction (group commit, commit.go), so the cost of
	// an fsync is shared by every connection. With NoSync the file is
	// still written before the broker acknowledges anything, which
	// survives the broker process being killed (kill -9) but not the
	// machine losing power, and bbolt's authors warn that power loss can
	// then corrupt the file.
	NoSync bool

	// Username and Password, if set (both or neither), is a user name and
	// password every client may connect with. With neither this nor a
	// PasswordFile, clients connect anonymously.
	Username, Password string
	// PasswordFile, if set, is a file of users and their bcrypt password
	// hashes, "user:hash" a line (passwd.go; `lps broker passwd` writes
	// them): a client must present one of them, or Username and Password.
	// A client authenticated through it may only use the client id <user>
	// or <user>-<anything> (auth.go).
	PasswordFile string
	// ACLFile, if set, is a file of access rules in Mosquitto's acl_file
	// format (acl.go): what each user, and anonymous clients, may publish
	// and subscribe to; anything not granted is refused. Without it every
	// client may publish and subscribe to everything.
	ACLFile string
	// TLS, if set, serves MQTT over TLS on the listener. It needs a
	// certificate (Certificates or GetCertificate).
	TLS *tls.Config

	// MaxQueued bounds each queue of messages waiting for a subscriber's
	// receive quota or for it to reconnect: the queue of a client session
	// and the queue of a shared subscription group. A QoS 1/2 publish that
	// would exceed it is refused to the publisher with reason code 0x97
	// (quota exceeded), logged at error level and counted in
	// lps_broker_publishes_refused_total; the publisher keeps the message.
	// Default DefaultMaxQueued; for a group queue with a DataDir, where it
	// waits on disk, DefaultMaxQueuedStored.
	MaxQueued int
	// MaxStoreBytes bounds the bytes of DataDir's file in use (pages not
	// free). Once reached, a QoS 1/2 publish is refused at once with 0x97
	// "quota exceeded" (logged, counted in
	// lps_broker_publishes_refused_total{reason="store_full"}) until
	// consumers have drained enough. Default DefaultMaxStoreBytes;
	// negative: no bound. Ignored without a DataDir.
	MaxStoreBytes int64
	// MaxPacketSize is the largest packet a client may send, announced in
	// every CONNACK [MQTT-3.2.2-15]; a larger one ends the connection with
	// 0x95 "packet too large". Default DefaultMaxPacketSize.
	MaxPacketSize uint32
	// MaxConnections bounds the clients connected at once; one more is
	// refused with CONNACK 0x89 "server busy". Default
	// DefaultMaxConnections.
	MaxConnections int
	// MaxSessionExpiry caps the session expiry interval a client asks for;
	// the CONNACK tells it the value it got. Whole seconds, at least one.
	// Default DefaultMaxSessionExpiry.
	MaxSessionExpiry time.Duration
	// MaxInflight caps the messages in flight to one client (sent, not yet
	// acknowledged) below its receive maximum. Default DefaultMaxInflight;
	// at most 65535.
	MaxInflight int
	// MaxKeepAlive caps the keep alive of MQTT 5 clients: one that asks
	// for more, or for none, is told this value in its CONNACK (Server Keep
	// Alive, MQTT 5 section 3.2.2.3.14) and is disconnected after 1.5 times
	// it without a packet. MQTT 3.1.1 clients, which cannot be told, keep
	// theirs. Whole seconds, 1s to MaxKeepAliveLimit; default
	// DefaultMaxKeepAlive.
	MaxKeepAlive time.Duration

	// Queues are the durable queues declared at start: each is a shared
	// subscription group that exists from New on, takes every matching
	// QoS 1/2 message whether or not a member has subscribed, keeps it (in
	// DataDir) and hands its backlog to the members that subscribe later.
	// A QoS 1/2 publish that matches neither a subscription nor a queue is
	// answered 0x10 "No matching subscribers" and not kept. Default: none
	// (the lps broker role declares the LPS's own).
	Queues []Queue

	// Logger receives the broker's logs; mochi's own lines come through a
	// log/slog bridge under the name "mochi". Default: no logging.
	Logger *zap.Logger
	// Registerer, if set, gets the broker's metrics (lps_broker_*). They are
	// unregistered when Run returns, so a broker restarted in the same
	// process can register them again.
	Registerer prometheus.Registerer

	window int // tests only: the in-memory window of a group queue; 0: groupWindow
	// tests only: what the handover learns of a connection's end passes through it, so that a
	// test can hold a new connection between its CONNACK and its attach; nil: passed straight.
	handoverGate func(ended <-chan struct{}) <-chan struct{}
}

// Stats is a snapshot of what the broker holds.
type Stats struct {
	ClientsConnected int `json:"clients_connected"` // clients with an open connection
	Sessions         int `json:"sessions"`          // sessions held, connected or not
	// Queued counts QoS 1/2 messages waiting for a subscriber's receive
	// quota or for it to reconnect, in client and shared group queues.
	Queued int `json:"queued"`
	// Inflight counts QoS 1/2 messages sent to a subscriber and not yet
	// acknowledged (no PUBACK, or for QoS 2 no PUBREC).
	Inflight int `json:"inflight"`
	// Releasing counts QoS 2 messages the subscriber acknowledged with
	// PUBREC, whose handshake awaits its PUBCOMP. The subscriber has
	// processed them; they are not part of QueueDepth.
	Releasing int `json:"releasing"`
	Retained  int `json:"retained"` // retained messages, mochi's $SYS topics not counted
	// Delayed counts messages published to $delayed/<seconds>/<topic> that
	// wait for their time.
	Delayed int `json:"delayed"`
	// Queues maps each declared queue ("GROUP:FILTER", Queue.String) to the
	// messages waiting in it, not counting those in flight to a member.
	Queues map[string]int `json:"queues"`
}

// Broker is an embedded MQTT v5 broker: mochi-mqtt with the LPS's delivery
// rules (see the package documentation). Make one with New and run it once
// with Run.
type Broker struct {
	log    *zap.Logger
	srv    *mqtt.Server
	ln     *listener
	addr   net.Addr
	st     *store
	disp   *dispatcher
	met    *metrics
	queues []string // declared, as "GROUP:FILTER"
	ready  atomic.Bool
	used   atomic.Bool
	once   sync.Once
}

// New validates cfg, opens the listener and the data dir (restoring what it
// holds), and builds the mochi server with its hooks. The broker serves
// nothing until Run; connections made before wait in the listen backlog. If
// Run will not be called, Close releases the listener and the data dir.
func New(cfg Config) (_ *Broker, err error) {
	ln := cfg.Listener
	defer func() {
		if err != nil && ln != nil {
			_ = ln.Close()
		}
	}()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("validating config: %w", err)
	}
	maxGroupQueued := cfg.MaxQueued
	if maxGroupQueued == 0 {
		maxGroupQueued = DefaultMaxQueued
		if cfg.DataDir != "" {
			maxGroupQueued = DefaultMaxQueuedStored
		}
	}
	cfg.applyDefaults()

	b := &Broker{log: cfg.Logger, met: newMetrics()}
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Address); err != nil {
			return nil, fmt.Errorf("listening on %s: %w", cfg.Address, err)
		}
	}
	b.addr = ln.Addr()
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	if cfg.DataDir != "" {
		if b.st, err = openStore(cfg.DataDir, cfg.NoSync, b.log.Named("store"), b.met); err != nil {
			return nil, fmt.Errorf("opening data dir %s: %w", cfg.DataDir, err)
		}
		defer func() {
			if err != nil {
				_ = b.st.close(false)
			}
		}()
	}

	caps := mqtt.NewDefaultServerCapabilities()
	// mochi deletes inflight and retained messages older than this even when
	// they carry no expiry (Server.clearExpiredInflights and
	// clearExpiredRetainedMessages; default one day). A backlog must not
	// vanish because an outage lasted long: messages expire only by their
	// own message expiry interval.
	caps.MaximumMessageExpiryInterval = 0
	// mochi copies a PUBLISH's properties, user properties included, into
	// its PUBACK, PUBREC and PUBCOMP (buildAck). Nothing asks for that echo;
	// it makes acknowledgements as large as the alarm's properties, and
	// clients that expect a short acknowledgement (the Paho interoperability
	// client: test_retained_message, test_user_properties) fail on it.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.MaximumClients = int64(cfg.MaxConnections)
	caps.MaximumSessionExpiryInterval = uint32(cfg.MaxSessionExpiry / time.Second)
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       newSlogLogger(b.log.Named("mochi")),
		// Every packet is written to the connection at once, never left in
		// mochi's write buffer behind a later one: the dispatcher writes
		// some acknowledgements itself (answerNoSubscribers), which must
		// keep their place among mochi's.
		ClientNetWriteBufferSize: 1,
	})

	b.queues = make([]string, len(cfg.Queues))
	for i, q := range cfg.Queues {
		b.queues[i] = q.String()
	}
	b.disp = newDispatcher(b.srv, b.st, b.log.Named("dispatcher"), b.met, cfg.MaxQueued, cfg.MaxInflight, cfg.Queues)
	b.disp.maxStoreBytes, b.disp.maxGroupQueued = cfg.MaxStoreBytes, maxGroupQueued
	if cfg.window > 0 {
		b.disp.window = cfg.window
	}
	acc, err := loadAccess(cfg)
	if err != nil {
		return nil, err
	}
	b.disp.acc = acc
	b.ln = newListener("lps", ln, b.log.Named("listener"))
	ended := b.ln.ended
	if gate := cfg.handoverGate; gate != nil {
		ended = func(c net.Conn) <-chan struct{} { return gate(b.ln.ended(c)) }
	}
	hooks := []mqtt.Hook{&authHook{access: acc, srv: b.srv, log: b.log.Named("auth")}, &keepAliveHook{max: uint16(cfg.MaxKeepAlive / time.Second)},
		// Before the store and the dispatcher: a connection's session is theirs only once the
		// previous connection of its client id has ended.
		newHandoverHook(b.srv, ended, b.disp.OnSubscribed, b.log.Named("handover"))}
	if b.st != nil {
		hooks = append(hooks, b.st)
		if err := b.disp.load(); err != nil {
			return nil, fmt.Errorf("loading data dir %s: %w", cfg.DataDir, err)
		}
	}
	// mochi calls hooks in the order they were added: the dispatcher sees an
	// event after the store has recorded it.
	hooks = append(hooks, b.disp)
	for _, h := range hooks {
		if err := b.srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("adding %s hook: %w", h.ID(), err)
		}
	}

	if err := b.srv.AddListener(b.ln); err != nil {
		return nil, fmt.Errorf("adding listener: %w", err)
	}
	if err := b.met.register(cfg.Registerer, b.srv, b.Stats, b.queues); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	return b, nil
}

func (c *Config) validate() error {
	switch {
	case (c.Username == "") != (c.Password == ""):
		return errors.New("username and password must be set together")
	case c.MaxQueued < 0:
		return fmt.Errorf("max queued %d is negative", c.MaxQueued)
	case c.MaxInflight < 0 || c.MaxInflight > 65535:
		return fmt.Errorf("max inflight %d is outside 0..65535", c.MaxInflight)
	case c.MaxKeepAlive < 0 || c.MaxKeepAlive > MaxKeepAliveLimit || c.MaxKeepAlive%time.Second != 0:
		return fmt.Errorf("max keep alive %s is not a whole number of seconds from 1s to %s", c.MaxKeepAlive, MaxKeepAliveLimit)
	case c.MaxPacketSize != 0 && c.MaxPacketSize < minPacketSize:
		return fmt.Errorf("max packet size %d is below %d bytes", c.MaxPacketSize, minPacketSize)
	case c.MaxConnections < 0:
		return fmt.Errorf("max connections %d is negative", c.MaxConnections)
	case c.MaxSessionExpiry < 0 || (c.MaxSessionExpiry > 0 && c.MaxSessionExpiry < time.Second) ||
		c.MaxSessionExpiry/time.Second >= math.MaxUint32:
		return fmt.Errorf("max session expiry %s is outside 1s..%ds", c.MaxSessionExpiry, uint32(math.MaxUint32-1))
	case c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil:
		return errors.New("tls config has no certificate")
	}
	return validateQueues(c.Queues)
}

// loadAccess reads the password and ACL files.
func loadAccess(cfg Config) (*access, error) {
	acc := &access{}
	if cfg.Username != "" {
		acc.user, acc.pass = []byte(cfg.Username), []byte(cfg.Password)
	}
	var err error
	if cfg.PasswordFile != "" {
		if acc.passwords, err = LoadPasswordFile(cfg.PasswordFile); err != nil {
			return nil, err
		}
	}
	if cfg.ACLFile != "" {
		if acc.acl, err = LoadACL(cfg.ACLFile); err != nil {
			return nil, err
		}
	}
	return acc, nil
}

// applyDefaults fills in the documented defaults, in one place.
func (c *Config) applyDefaults() {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = DefaultMaxQueued
	}
	if c.MaxStoreBytes == 0 {
		c.MaxStoreBytes = DefaultMaxStoreBytes
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxSessionExpiry == 0 {
		c.MaxSessionExpiry = DefaultMaxSessionExpiry
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxKeepAlive == 0 {
		c.MaxKeepAlive = DefaultMaxKeepAlive
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Run serves MQTT until ctx is done, then shuts down gracefully: it stops
// accepting, disconnects every client (DISCONNECT "server shutting down"),
// waits for their goroutines, flushes the data dir and closes it. It
// returns nil after a shutdown caused by ctx, an error if the broker could
// not start. Run may be called once.
func (b *Broker) Run(ctx context.Context) error {
	if !b.used.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	defer b.shutdown()
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("starting mqtt server: %w", err)
	}
	b.ready.Store(true)
	b.log.Info("mqtt broker serving", zap.Stringer("address", b.addr), zap.Bool("persistent", b.st != nil),
		zap.Strings("queues", b.queues))
	<-ctx.Done()
	b.log.Info("mqtt broker stopping")
	return nil
}

// shutdown closes the mochi server (listener, clients, hooks, store), waits
// for the dispatcher's writers and unregisters the metrics.
func (b *Broker) shutdown() {
	b.once.Do(func() {
		b.ready.Store(false)
		_ = b.srv.Close() // always nil
		b.disp.wait()
		b.met.unregister()
	})
}

// Close releases the listener and the data dir of a Broker whose Run was
// never called. After Run it does nothing (Run releases them itself).
func (b *Broker) Close() error {
	if b.used.CompareAndSwap(false, true) {
		b.shutdown()
	}
	return nil
}

// Addr returns the address the broker listens on.
func (b *Broker) Addr() net.Addr { return b.addr }

// Ready reports whether the broker is serving: true from the moment Run has
// started accepting connections until shutdown begins.
func (b *Broker) Ready() bool { return b.ready.Load() }

// Stats returns a snapshot of the broker's sessions and messages.
func (b *Broker) Stats() Stats {
	st := b.disp.stats()
	st.Retained = retainedCount(b.srv)
	return st
}

// QueueDepth returns how many messages subscribers have yet to process:
// queued plus in flight plus delayed (Stats.Queued + Stats.Inflight +
// Stats.Delayed). It is zero once every consumer has drained its backlog; a
// delayed message (a retry waiting for its time) is work not yet done.
func (b *Broker) QueueDepth() int {
	st := b.disp.stats()
	return st.Queued + st.Inflight + st.Delayed
}
