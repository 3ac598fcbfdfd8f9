// Package mqttbroker is the `lps broker` role: the embedded MQTT v5 broker (package broker) on a
// tcptune listener, with an admin listener for /healthz, /readyz, /metrics and /stats — the
// queue state experiments use to tell that the LPS has drained.
package mqttbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/oklog/run"

	"github.com/lpsdev/lps/broker"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/mqtt2http"
	"github.com/lpsdev/lps/tcptune"
	"github.com/lpsdev/lps/transport"
)

// DefaultAdminListen is the admin listener's default: loopback, like the MQTT listener.
const DefaultAdminListen = "127.0.0.1:9090"

// DefaultQueues returns the durable queues the role declares unless told otherwise: the LPS's
// own, so that no alarm is refused or lost because no mqtt2http has subscribed yet —
// mqtt2http's share group on its topic and on its retry topics, and the dead-letter queue that
// `lps dead-letters` reads.
func DefaultQueues() []broker.Queue {
	return []broker.Queue{
		{Group: mqtt2http.DefaultShareGroup, Filter: mqtt2http.DefaultTopic},
		{Group: mqtt2http.DefaultShareGroup, Filter: mqtt2http.RetryFilter},
		{Group: mqtt2http.DeadLetterGroup, Filter: mqtt2http.DefaultDeadLetterTopic},
	}
}

// Config configures the broker role.
type Config struct {
	// Admin is the admin listener (health, metrics, stats); its Listen defaults to
	// DefaultAdminListen. Its Logger and Registry serve the whole role.
	Admin roles.Server
	// Listen is the MQTT address; "" means broker.DefaultAddress (loopback). Ignored when
	// Listener is set.
	Listen   string
	Listener net.Listener
	// DataDir keeps sessions and messages across restarts; "" keeps them in memory only.
	DataDir string
	// NoSync turns off fsync of DataDir: see broker.Config.NoSync.
	NoSync bool
	// Username and Password, when set, are a user every client may connect as.
	Username, Password string
	// PasswordFile and ACLFile: see broker.Config (users and bcrypt hashes; access rules in
	// Mosquitto's acl_file format).
	PasswordFile, ACLFile string
	// TLSCertFile and TLSKeyFile, when set, serve MQTT over TLS.
	TLSCertFile, TLSKeyFile string
	// MaxQueued and MaxInflight: see broker.Config; zero means its defaults.
	MaxQueued, MaxInflight int
	// MaxKeepAlive caps the keep alive of MQTT 5 clients: see broker.Config; zero means its
	// default.
	MaxKeepAlive time.Duration
	// MaxStoreBytes, MaxPacketSize, MaxConnections and MaxSessionExpiry: see broker.Config;
	// zero means its defaults (MaxStoreBytes negative: no bound).
	MaxStoreBytes    int64
	MaxPacketSize    uint32
	MaxConnections   int
	MaxSessionExpiry time.Duration
	// Queues are the durable queues declared at start (broker.Config.Queues). nil means
	// DefaultQueues(); a non-nil empty slice declares none.
	Queues []broker.Queue
}

// Broker is a running broker role.
type Broker struct {
	b     *broker.Broker
	admin *roles.HTTPService
}

// Validate checks cfg; New calls it. The broker checks the rest (broker.Config).
func (cfg Config) Validate() error {
	if err := cfg.Admin.Validate(); err != nil {
		return config.Within("Admin", err)
	}
	if cfg.Listener == nil && cfg.Listen != "" {
		if err := roles.ValidateListen(cfg.Listen); err != nil {
			return config.Invalid("Listen", cfg.Listen, "%v", err)
		}
	}
	switch {
	case cfg.MaxQueued < 0:
		return config.Invalid("MaxQueued", cfg.MaxQueued, "must not be negative (0: the default)")
	case cfg.MaxInflight < 0 || cfg.MaxInflight > 65535:
		return config.Invalid("MaxInflight", cfg.MaxInflight, "must be between 0 (the default) and 65535")
	case cfg.MaxKeepAlive < 0 || cfg.MaxKeepAlive > broker.MaxKeepAliveLimit || cfg.MaxKeepAlive%time.Second != 0:
		return config.Invalid("MaxKeepAlive", cfg.MaxKeepAlive, "must be whole seconds up to %s (0: the default)", broker.MaxKeepAliveLimit)
	case cfg.MaxPacketSize != 0 && cfg.MaxPacketSize < 1024:
		return config.Invalid("MaxPacketSize", cfg.MaxPacketSize, "must be 0 (the default) or at least 1024 bytes")
	case cfg.MaxConnections < 0:
		return config.Invalid("MaxConnections", cfg.MaxConnections, "must not be negative (0: the default)")
	case cfg.MaxSessionExpiry < 0 || (cfg.MaxSessionExpiry > 0 && cfg.MaxSessionExpiry < time.Second):
		return config.Invalid("MaxSessionExpiry", cfg.MaxSessionExpiry, "must be 0 (the default) or at least 1s")
	case (cfg.Username == "") != (cfg.Password == ""):
		return config.Invalid("Password", "", "a user name and a password go together")
	}
	seen := map[broker.Queue]bool{}
	for _, q := range cfg.Queues {
		if seen[q] {
			return config.Invalid("Queues", q.String(), "declared twice")
		}
		seen[q] = true
	}
	return nil
}

// New opens both listeners and the data dir.
func New(cfg Config) (_ *Broker, err error) {
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close() // New owns the listener it was given, also when it fails
		}
		return nil, err
	}
	if cfg.Admin.Listen == "" {
		cfg.Admin.Listen = DefaultAdminListen
	}
	cfg.Admin.SetDefaults()
	var tlsCfg *tls.Config
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			if cfg.Listener != nil {
				cfg.Listener.Close() // New owns the listener it was given, also when it fails
			}
			return nil, fmt.Errorf("loading TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln := cfg.Listener
	if ln == nil {
		addr := cfg.Listen
		if addr == "" {
			addr = broker.DefaultAddress
		}
		if ln, err = tcptune.Listen(context.Background(), "tcp", addr, cfg.Admin.Backlog); err != nil {
			return nil, fmt.Errorf("listening for MQTT on %s: %w", addr, err)
		}
	}
	if cfg.Queues == nil {
		cfg.Queues = DefaultQueues()
	}
	b, err := broker.New(broker.Config{
		Listener: ln, DataDir: cfg.DataDir, NoSync: cfg.NoSync,
		Username: cfg.Username, Password: cfg.Password, TLS: tlsCfg,
		PasswordFile: cfg.PasswordFile, ACLFile: cfg.ACLFile,
		MaxQueued: cfg.MaxQueued, MaxInflight: cfg.MaxInflight, MaxKeepAlive: cfg.MaxKeepAlive, Queues: cfg.Queues,
		MaxStoreBytes: cfg.MaxStoreBytes, MaxPacketSize: cfg.MaxPacketSize,
		MaxConnections: cfg.MaxConnections, MaxSessionExpiry: cfg.MaxSessionExpiry,
		Logger: cfg.Admin.Logger, Registerer: cfg.Admin.Registry,
	})
	if err != nil {
		return nil, err // broker.New closed the listener
	}
	mb := &Broker{b: b}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		transport.WriteJSON(w, http.StatusOK, mb.Stats())
	})
	mb.admin, err = roles.NewHTTPService(cfg.Admin, mux, func(context.Context) error {
		if !b.Ready() {
			return errors.New("broker not serving")
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	return mb, nil
}

// StatsBody is what GET /stats answers.
type StatsBody struct {
	broker.Stats
	// QueueDepth is what the consumers still have to take: queued plus in flight plus delayed
	// (broker.Broker.QueueDepth).
	QueueDepth int `json:"queue_depth"`
}

// Stats is the broker's state now.
func (b *Broker) Stats() StatsBody {
	return StatsBody{Stats: b.b.Stats(), QueueDepth: b.b.QueueDepth()}
}

// Addr is the MQTT address.
func (b *Broker) Addr() net.Addr { return b.b.Addr() }

// AdminAddr is the admin listener's address.
func (b *Broker) AdminAddr() net.Addr { return b.admin.Addr() }

// Run serves MQTT and the admin endpoints until ctx is done, then closes the broker, keeping
// its state in the data dir.
func (b *Broker) Run(ctx context.Context) error {
	var g run.Group
	bctx, bcancel := context.WithCancel(ctx)
	g.Add(func() error { return b.b.Run(bctx) }, func(error) { bcancel() })
	actx, acancel := context.WithCancel(ctx)
	g.Add(func() error { return b.admin.Run(actx) }, func(error) { acancel() })
	return g.Run()
}
