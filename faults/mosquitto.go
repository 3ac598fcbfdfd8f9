package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/lpsdev/lps/topology"
)

// Mosquitto publishes its counters on $SYS every sys_interval (the cluster sets 1 s), retained,
// so a new subscriber gets the latest at once and then every update. The messages it still owes
// its clients — queued for a disconnected session, or in flight — are the ones in its store that
// are not retained ($SYS's own values are retained messages too).
const (
	sysStoreCount    = "$SYS/broker/store/messages/count"
	sysRetainedCount = "$SYS/broker/retained messages/count"
)

// sysWatcher reads Mosquitto's queue depth from $SYS over one connection that it keeps. A
// connection per reading would be a session change each time, and with autosave_on_changes
// every change makes Mosquitto write (and fsync) its whole database: on a busy machine that
// alone stalled Mosquitto until it stopped accepting connections.
type sysWatcher struct {
	addr string

	mu      sync.Mutex
	client  *paho.Client // nil until connected, and again once its connection ended
	values  map[string]int
	arrived chan struct{} // closed and replaced whenever a value arrives
}

func newSysWatcher(addr string) *sysWatcher {
	return &sysWatcher{addr: addr, values: map[string]int{}, arrived: make(chan struct{})}
}

// depth returns how many messages Mosquitto holds that are not retained, as of its last $SYS
// update (at most sys_interval old); it connects first when needed (the broker may have been
// restarted).
func (w *sysWatcher) depth(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.connect(ctx); err != nil {
		return 0, err
	}
	for {
		w.mu.Lock()
		store, okS := w.values[sysStoreCount]
		retained, okR := w.values[sysRetainedCount]
		arrived := w.arrived
		w.mu.Unlock()
		if okS && okR {
			return max(store-retained, 0), nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return 0, fmt.Errorf("mosquitto $SYS: no %s and %s (is sys_interval set?): %w", sysStoreCount, sysRetainedCount, ctx.Err())
		}
	}
}

func (w *sysWatcher) connect(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.client != nil {
		select {
		case <-w.client.Done():
			w.client = nil
		default:
			return nil
		}
	}
	w.values = map[string]int{} // a restarted broker starts its counters again
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", w.addr)
	if err != nil {
		return fmt.Errorf("mosquitto $SYS: %w", err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				n, err := strconv.Atoi(strings.TrimSpace(string(pr.Packet.Payload)))
				if err != nil {
					return true, nil // not a counter; the reading waits for a good one
				}
				w.mu.Lock()
				w.values[pr.Packet.Topic] = n
				close(w.arrived)
				w.arrived = make(chan struct{})
				w.mu.Unlock()
				return true, nil
			},
		},
	})
	if _, err := c.Connect(ctx, &paho.Connect{KeepAlive: 30, CleanStart: true, ClientID: "lps-faults-sys-" + strconv.FormatInt(time.Now().UnixNano(), 36)}); err != nil {
		conn.Close()
		return fmt.Errorf("mosquitto $SYS: connecting: %w", err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: sysStoreCount}, {Topic: sysRetainedCount},
	}}); err != nil {
		c.Disconnect(&paho.Disconnect{})
		return fmt.Errorf("mosquitto $SYS: subscribing: %w", err)
	}
	w.client = c
	return nil
}

// close disconnects.
func (w *sysWatcher) close() {
	w.mu.Lock()
	c := w.client
	w.client = nil
	w.mu.Unlock()
	if c != nil {
		_ = c.Disconnect(&paho.Disconnect{}) // the broker may be gone already
	}
}

// startMosquitto starts Mosquitto as the cluster's broker n, with the persistence and limits
// that the Mosquitto BrokerKind describes.
func (c *Cluster) startMosquitto(ctx context.Context, n topology.Node) error {
	// Mosquitto cannot tell which port it got, so the port is picked here: free a moment ago,
	// and taken by Mosquitto within milliseconds. Another program could take it in between; a
	// start then fails loudly (address in use), it cannot go wrong silently.
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(c.cfg.Dir, "mosquitto-data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := []string{
		"listener " + port + " 127.0.0.1",
		"allow_anonymous true",
		"persistence true",
		"persistence_location " + dir + "/",
		"autosave_on_changes true", // see Mosquitto: snapshot after every change,
		"autosave_interval " + strconv.Itoa(max(c.cfg.MosquittoAutosave, 1)), // the shortest window Mosquitto offers
		"max_queued_messages 0", // no bound: a consumer's backlog is never dropped
		"sys_interval 1",        // $SYS counters every second: how Drain sees Mosquitto's queue
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice", // connections and disconnections, not every snapshot
	}
	if c.cfg.MosquittoDebug {
		conf = append(conf, "log_type all")
	}
	if os.Geteuid() == 0 {
		conf = append(conf, "user root") // else Mosquitto drops to a user who cannot write dir
	}
	confPath := filepath.Join(c.cfg.Dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	c.Broker = NewProcess(ProcessConfig{
		Name:    n.Name,
		Path:    c.cfg.MosquittoPath,
		Args:    []string{"-c", confPath},
		LogPath: filepath.Join(c.cfg.Dir, n.Name+".log"),
		Ready:   TCPReady(addr),
	})
	c.BrokerAddr = addr
	return c.startTier(ctx, c.Broker)
}
