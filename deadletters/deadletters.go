// Package deadletters reads the LPS's dead-letter queue: what mqtt2http could never deliver
// (an undecodable payload, an operator-set attempt budget spent, a publisher's expiry passed),
// kept by the embedded broker in the declared queue $share/dead_letters/lps/dead-letter until
// someone reads it. It lists the dead letters without taking them, and replays them: each is
// published back to the topic it came from, once, and only then taken off the queue.
//
// Listing leans on MQTT's acknowledgements: the reader subscribes to the queue with a receive
// maximum of Config.Limit and acknowledges nothing, so the broker keeps every message; when
// the reader disconnects, the embedded broker hands them back to the queue at once (Mosquitto
// keeps them for the reader's session). Replaying acknowledges a dead letter only after the
// broker confirmed its republished alarm (PUBCOMP), so a crash in between replays it once more
// (comp2's dedup window absorbs that) and never loses it.
package deadletters

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/roles/mqtt2http"
)

// Defaults of Config, applied in one place (Config.defaults).
const (
	// DefaultClientID is the reader's MQTT client id. Its session is persistent, so that on a
	// broker without declared queues (Mosquitto) the dead letters published while the reader
	// is away wait for it once it has subscribed.
	DefaultClientID = "lps-dead-letters"
	// DefaultLimit is how many dead letters one run reads at most (the receive maximum). The
	// embedded broker sends at most its own --max-inflight (1024 by default) unacknowledged
	// messages to one client, so a listing shows no more than that.
	DefaultLimit = 1000
	// DefaultIdle ends a run when no dead letter arrived for this long: MQTT has no "end of
	// queue", and a queue's backlog arrives in one burst.
	DefaultIdle = time.Second
	// DefaultTimeout bounds the whole run.
	DefaultTimeout = time.Minute
)

// Config configures a Reader.
type Config struct {
	// Broker is the broker URL; required. Username and Password authenticate.
	Broker, Username, Password string
	// ClientID is the reader's client id; "" means DefaultClientID.
	ClientID string
	// Group and Topic name the queue: $share/<Group>/<Topic>. "" means
	// mqtt2http.DeadLetterGroup and mqtt2http.DefaultDeadLetterTopic.
	Group, Topic string
	// Limit is the most dead letters read in one run; zero means DefaultLimit.
	Limit int
	// Idle ends the run when nothing arrived for this long; zero means DefaultIdle.
	Idle time.Duration
	// MQTT are the connection's further settings.
	MQTT mqttconn.Options
	// Logger: nil means none.
	Logger *zap.Logger
}

func (c *Config) defaults() error {
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Group == "" {
		c.Group = mqtt2http.DeadLetterGroup
	}
	if c.Topic == "" {
		c.Topic = mqtt2http.DefaultDeadLetterTopic
	}
	if c.Limit == 0 {
		c.Limit = DefaultLimit
	}
	if c.Idle == 0 {
		c.Idle = DefaultIdle
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	switch {
	case c.Limit < 1 || c.Limit > 65535:
		return config.Invalid("Limit", c.Limit, "must be between 1 and 65535 (it is the MQTT receive maximum)")
	case c.Idle < 0:
		return config.Invalid("Idle", c.Idle, "must not be negative")
	}
	if err := mqttconn.ValidateShareGroup(c.Group); err != nil {
		return config.Invalid("Group", c.Group, "%v", err)
	}
	if err := mqttconn.ValidateFilter(c.Topic); err != nil {
		return config.Invalid("Topic", c.Topic, "%v", err)
	}
	return nil
}

// Entry is one dead letter as read from the queue.
type Entry struct {
	mqtt2http.DeadLetter
	// Raw is the message's payload, the envelope as published.
	Raw []byte
	// Err is set when the payload is not a dead-letter envelope; only Raw is then meaningful.
	Err error
}

// Age is how long ago the message was dead-lettered.
func (e Entry) Age(now time.Time) time.Duration {
	if e.Time.IsZero() {
		return 0
	}
	return now.Sub(e.Time)
}

// Alarm returns the payload the dead letter carries, decoded from its envelope.
func (e Entry) Alarm() ([]byte, error) {
	if e.Err != nil {
		return nil, e.Err
	}
	switch e.PayloadEncoding {
	case "base64":
		return base64.StdEncoding.DecodeString(e.Payload)
	case "utf-8", "":
		return []byte(e.Payload), nil
	}
	return nil, fmt.Errorf("unknown payload encoding %q", e.PayloadEncoding)
}

func parse(pub *paho.Publish) Entry {
	e := Entry{Raw: pub.Payload}
	if err := json.Unmarshal(pub.Payload, &e.DeadLetter); err != nil {
		e.Err = fmt.Errorf("not a dead-letter envelope: %w", err)
		return e
	}
	if e.Topic == "" {
		e.Err = errors.New("not a dead-letter envelope: it names no topic")
	}
	if e.Kind == "" && pub.Properties != nil { // envelopes from before Kind was written
		e.Kind = pub.Properties.User.Get("reason")
	}
	return e
}

// Reader reads the dead-letter queue: one run of List or ReplayAll per Reader.
type Reader struct {
	cfg  Config
	conn *mqttconn.Conn
	in   chan paho.PublishReceived
}

// Result is what a run did.
type Result struct {
	// Read is how many dead letters the run saw; Taken how many it took off the queue.
	Read, Taken int
	// More is true when the run stopped at Limit: more may wait.
	More bool
}

// New validates cfg and prepares the connection; List or ReplayAll connects.
func New(cfg Config) (*Reader, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &Reader{cfg: cfg, in: make(chan paho.PublishReceived, cfg.Limit)}
	conn, err := mqttconn.New(mqttconn.Config{
		Broker:         cfg.Broker,
		Username:       cfg.Username,
		Password:       cfg.Password,
		ClientID:       cfg.ClientID,
		Options:        cfg.MQTT,
		ReceiveMaximum: uint16(cfg.Limit),
		ManualAck:      true,
		// The channel holds Limit messages and the broker sends no more unacknowledged ones.
		OnPublish:     func(pr paho.PublishReceived) { r.in <- pr },
		Subscriptions: []paho.SubscribeOptions{{Topic: mqttconn.SharedFilter(cfg.Group, cfg.Topic), QoS: 2}},
		Logger:        cfg.Logger.Named("mqtt"),
	})
	if err != nil {
		return nil, err
	}
	r.conn = conn
	return r, nil
}

// List calls fn with every dead letter in the queue, oldest first, and takes none of them.
func (r *Reader) List(ctx context.Context, fn func(Entry)) (Result, error) {
	return r.run(ctx, func(_ context.Context, e Entry) (bool, error) {
		fn(e)
		return false, nil
	})
}

// ErrReplayedAgain ends a replay at a dead letter that was replayed earlier in the same run:
// its alarm was dead-lettered again (an undecodable payload is, at once), and replaying it
// once more would only go round in circles.
var ErrReplayedAgain = errors.New("dead-lettered again after its replay")

// ReplayAll replays the dead letters in the queue, oldest first: each is published back to its
// topic (to, when not empty) and taken off the queue once the broker confirmed it (Replay). fn
// learns of each and of its replay's error. The run stops at the first dead letter that cannot
// be replayed, or that comes back during the run (ErrReplayedAgain); it and the ones after it
// stay in the queue, and its error is returned.
func (r *Reader) ReplayAll(ctx context.Context, to string, fn func(Entry, error)) (Result, error) {
	replayed := map[string]bool{}
	var failed error
	res, err := r.run(ctx, func(ctx context.Context, e Entry) (bool, error) {
		key := e.RequestID + "\x00" + e.Payload
		var rerr error
		switch {
		case e.Err != nil:
			rerr = e.Err
		case replayed[key]:
			rerr = ErrReplayedAgain
		default:
			rerr = r.Replay(ctx, e, to)
		}
		fn(e, rerr)
		if rerr != nil {
			failed = rerr
			return false, errStop
		}
		replayed[key] = true
		return true, nil
	})
	if errors.Is(failed, ErrReplayedAgain) {
		return res, nil // everything that was in the queue was replayed
	}
	return res, errors.Join(failed, err)
}

// errStop, returned by a visit, ends the run without an error.
var errStop = errors.New("stop reading dead letters")

// visit handles one dead letter and says whether to take it off the queue. A run that takes
// dead letters must take every one before them — MQTT acknowledges in order, so one left
// behind holds back the acknowledgements of the later ones, and those come back — so a visit
// that cannot take one returns errStop.
type visit func(ctx context.Context, e Entry) (take bool, err error)

// run connects, subscribes to the queue and visits every dead letter that arrives, in order,
// until Limit were read, none arrived for Idle, a visit stopped it, or ctx ended. Then it sends
// the acknowledgements of the dead letters taken and disconnects; the broker keeps the rest.
func (r *Reader) run(ctx context.Context, v visit) (Result, error) {
	var res Result
	connCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- r.conn.Run(connCtx) }()
	finish := func(err error) (Result, error) {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if werr := r.conn.WaitAcks(actx); werr != nil && err == nil && res.Taken > 0 {
			err = fmt.Errorf("sending the acknowledgements of the dead letters taken (they stay in the queue): %w", werr)
		}
		cancel()
		stop()
		return res, errors.Join(err, <-done)
	}
	if err := r.conn.AwaitReady(ctx); err != nil {
		return finish(fmt.Errorf("subscribing to %s at %s: %w", mqttconn.SharedFilter(r.cfg.Group, r.cfg.Topic), r.conn.Broker(), err))
	}
	idle := time.NewTimer(r.cfg.Idle)
	defer idle.Stop()
	for res.Read < r.cfg.Limit {
		var pr paho.PublishReceived
		select {
		case pr = <-r.in:
		case <-idle.C:
			return finish(nil)
		case <-ctx.Done():
			return finish(ctx.Err())
		}
		res.Read++
		take, err := v(ctx, parse(pr.Packet))
		if errors.Is(err, errStop) {
			return finish(nil)
		}
		if err != nil {
			return finish(err)
		}
		if take {
			if err := r.conn.Ack(pr); err != nil {
				return finish(fmt.Errorf("taking the dead letter off the queue: %w", err))
			}
			res.Taken++
		}
		idle.Reset(r.cfg.Idle)
	}
	res.More = true
	return finish(nil)
}

// Replay publishes the alarm a dead letter carries back to the topic it came from (to, when
// not empty), at QoS 2 with its Request-Id, and waits until the broker confirmed it; it fails
// when the broker would deliver it to nobody (no subscription, no queue).
func (r *Reader) Replay(ctx context.Context, e Entry, to string) error {
	payload, err := e.Alarm()
	if err != nil {
		return fmt.Errorf("replaying dead letter %s: %w", e.RequestID, err)
	}
	topic := e.Topic
	if to != "" {
		topic = to
	}
	props := alarm.PublishProperties(e.RequestID)
	if e.PayloadEncoding == "base64" {
		props.PayloadFormat = nil // not UTF-8: an undecodable payload goes back as it came
	}
	resp, err := r.conn.Publish(ctx, &paho.Publish{Topic: topic, QoS: 2, Payload: payload, Properties: props})
	if err != nil {
		return fmt.Errorf("replaying dead letter %s to %s: %w", e.RequestID, topic, err)
	}
	if resp != nil && resp.ReasonCode == mqttconn.ReasonNoMatchingSubscribers {
		return fmt.Errorf("replaying dead letter %s: the broker has no subscriber or queue for %s and would discard it", e.RequestID, topic)
	}
	return nil
}
