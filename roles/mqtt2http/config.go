package mqtt2http

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/config"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/transport"
)

// Defaults of Config, applied in one place (Config.defaults).
const (
	// DefaultAdminListen is the admin listener's default: loopback, since it serves only health
	// and metrics (issue 14). A container or a Prometheus on another host sets 0.0.0.0:9090.
	DefaultAdminListen = "127.0.0.1:9090"
	// DefaultShareGroup is the original's shared subscription group.
	DefaultShareGroup = "legacy_proxy"
	// DefaultTopic is the original's filter: every "<service>/message" topic of http2mqtt.
	DefaultTopic = "+/message"
	// DefaultQoS is exactly once, as the original.
	DefaultQoS = 2
	// DefaultMaxInflight is chosen by measurement (scripts/perf-table.sh, 2 cores, 60 closed-model
	// senders, three instances): with 1, the original's, the consumers deliver a fifth of what
	// the publishers are acknowledged (1,250 of 7,000/s) and a backlog builds silently at
	// saturation; with 8 or 16 still a half to four fifths; with 32 all of it while rast-sim's
	// model is off, but with the model on 90-94 % and one consumer up to 5.2 % off the mean share.
	// 64 delivers 99 % either way with every consumer within 1 % of the mean, at the same rate and
	// CPU per alarm (four interleaved rounds) and the same drain of a 90,000 backlog. Where the load
	// shares the machine the consumers keep up while they can take about as many alarms at once as
	// there are senders (three of them at 64 against 150 senders: 90 %; at 32: 71 %). At 300
	// alarms/s it adds no latency that 1 does not. --max-inflight 1 reproduces the original.
	DefaultMaxInflight = 64
	// DefaultMaxAttempts is no limit: a message is retried until it is delivered, so an outage of
	// comp2 or the backend of any length (they last minutes to hours) is a backlog, as in the
	// original, which retried forever. An operator may set a budget; what exceeds it is a dead
	// letter.
	DefaultMaxAttempts = 0
	// DefaultRetryBase and DefaultRetryMax: the delay before a failed message's next attempt
	// doubles from 0.5 s up to 10 s (with jitter), so a recovered upstream waits at most about
	// 10 s for a message that failed during the outage.
	DefaultRetryBase = 500 * time.Millisecond
	DefaultRetryMax  = 10 * time.Second
	// DefaultDeadLetterTopic is one topic for every instance, so an operator watches a single
	// place; the envelope names the service, topic and request id. It deliberately matches
	// neither +/message nor +/retry/message.
	DefaultDeadLetterTopic = "lps/dead-letter"
	// DeadLetterGroup is the share group of the dead-letter queue: the embedded broker declares
	// $share/dead_letters/lps/dead-letter at start, so a dead letter waits there until someone reads
	// it (lps dead-letters).
	DeadLetterGroup = "dead_letters"
	// DefaultDrainTimeout bounds how long a shutdown waits for the forwards in flight before it
	// abandons them (unacknowledged, so the broker redelivers them).
	DefaultDrainTimeout = 15 * time.Second
	// DefaultPublishTimeout bounds one republish or dead-letter publish.
	DefaultPublishTimeout = 10 * time.Second

	// RetrySuffix makes the retry topic "<service-name>/retry/message", as the original.
	RetrySuffix = "/retry/message"
	// RetryClientSuffix makes the client id of the retry subscription's connection
	// "<service-name>-retry".
	RetryClientSuffix = "-retry"

	// RetryFilter is the retry topics' filter, subscribed in the share group besides Topic.
	RetryFilter = "+" + RetrySuffix
)

// Values of Config.DelayedPublish: who waits out a retry's backoff.
const (
	// DelayedPublishAuto uses the broker's delayed publish when its CONNACK announces it (the
	// embedded broker does), else holds retries in the bridge.
	DelayedPublishAuto = "auto"
	// DelayedPublishOn always publishes retries to "$delayed/<seconds>/<topic>" (EMQX supports
	// the convention without announcing it). On a broker without it the retries are lost.
	DelayedPublishOn = "on"
	// DelayedPublishOff never does: retries go to the retry topic at once with their due time.
	DelayedPublishOff = "off"
)

// Config configures a Bridge.
type Config struct {
	// ServiceName names the instance: MQTT client id (its persistent session), retry topic
	// "<ServiceName>/retry/message", logs. Required; no /, + or #.
	ServiceName string
	// Admin is the admin listener, serving /healthz, /readyz and /metrics only; its Listen
	// defaults to DefaultAdminListen (loopback).
	Admin roles.Server
	// Broker is the broker URL (mqtt://host:1883, mqtts://host:8883); required. Username and
	// Password authenticate with it.
	Broker, Username, Password string
	// ShareGroup is the shared subscription group; "" means DefaultShareGroup, or the group of a
	// "$share/<group>/..." Topic.
	ShareGroup string
	// Topic is the subscription filter; "" means DefaultTopic. A "$share/<group>/<filter>" value
	// sets the group, as the original's MQTT_TOPIC did.
	Topic string
	// QoS of the subscriptions and of republished messages, 1 or 2; zero means DefaultQoS.
	QoS int
	// Upstream is where alarms are forwarded (component 2); URL required.
	Upstream roles.Upstream
	// MaxInflight is the MQTT receive maximum and the number of concurrent forwards; zero means
	// DefaultMaxInflight.
	MaxInflight int
	// MaxAttempts is how many forwards a message gets before it is dead-lettered; zero means no
	// limit (DefaultMaxAttempts).
	MaxAttempts int
	// RetryBase and RetryMax bound the delay before a failed message is republished for its
	// next attempt (exponential with jitter); zero means DefaultRetryBase, DefaultRetryMax.
	RetryBase, RetryMax time.Duration
	// DelayedPublish says who waits out a retry's backoff: DelayedPublishAuto (""),
	// DelayedPublishOn or DelayedPublishOff.
	DelayedPublish string
	// DeadLetterTopic receives what cannot be delivered; "" means DefaultDeadLetterTopic.
	DeadLetterTopic string
	// DrainTimeout: zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// PublishTimeout bounds one republish or dead-letter publish; zero means
	// DefaultPublishTimeout.
	PublishTimeout time.Duration
	// MaxPayloadBytes is the largest payload forwarded; a larger one goes to the dead-letter
	// topic at once, since the upstream's body limit would refuse it however often it was tried.
	// Zero means transport.DefaultMaxBodyBytes (component 2's default limit); negative, none.
	MaxPayloadBytes int
	// Logger: nil means Admin.Logger, else none. Registry: nil means Admin.Registry, else a
	// fresh one.
	Logger   *zap.Logger
	Registry *prometheus.Registry
	// MQTT are the connection's further settings (keepalive, session, TLS, reconnect).
	MQTT mqttconn.Options
}

// settings is a validated Config with what follows from it.
type settings struct {
	Config
	group, filter string // the subscription: $share/<group>/<filter>
	retryTopic    string
}

func (c Config) settings() (settings, error) {
	s := settings{Config: c}
	if s.Logger == nil {
		s.Logger = s.Admin.Logger
	}
	if s.Registry == nil {
		s.Registry = s.Admin.Registry
	}
	s.Admin.ServiceName, s.Admin.Logger, s.Admin.Registry = s.ServiceName, s.Logger, s.Registry
	if s.Admin.Listen == "" {
		s.Admin.Listen = DefaultAdminListen // before SetDefaults, whose default is an API's :8080
	}
	s.Admin.SetDefaults()
	s.Logger, s.Registry = s.Admin.Logger, s.Admin.Registry

	if err := s.Admin.Validate(); err != nil {
		return s, config.Within("Admin", err)
	}
	if s.ServiceName == "" || strings.ContainsAny(s.ServiceName, "/+#") {
		return s, config.Invalid("ServiceName", s.ServiceName, "must be set and free of /, + and #: it is the MQTT client id and the first level of the retry topic")
	}
	s.retryTopic = s.ServiceName + RetrySuffix
	if err := mqttconn.ValidateTopic(s.retryTopic); err != nil {
		return s, config.Invalid("ServiceName", s.ServiceName, "%v", err)
	}
	if err := s.Upstream.Validate(); err != nil {
		return s, config.Within("Upstream", err)
	}

	if s.Topic == "" {
		s.Topic = DefaultTopic
	}
	group, filter, shared, err := mqttconn.SplitShared(s.Topic)
	if err != nil {
		return s, config.Invalid("Topic", s.Topic, "%v", err)
	}
	switch {
	case shared && s.ShareGroup != "" && s.ShareGroup != group:
		return s, config.Invalid("ShareGroup", s.ShareGroup, "the topic %q names share group %q", s.Topic, group)
	case shared:
	case s.ShareGroup != "":
		group = s.ShareGroup
	default:
		group = DefaultShareGroup
	}
	if err := mqttconn.ValidateShareGroup(group); err != nil {
		return s, config.Invalid("ShareGroup", group, "%v", err)
	}
	if err := mqttconn.ValidateFilter(filter); err != nil {
		return s, config.Invalid("Topic", s.Topic, "%v", err)
	}
	s.group, s.filter = group, filter

	if s.DeadLetterTopic == "" {
		s.DeadLetterTopic = DefaultDeadLetterTopic
	}
	if err := mqttconn.ValidateTopic(s.DeadLetterTopic); err != nil {
		return s, config.Invalid("DeadLetterTopic", s.DeadLetterTopic, "%v", err)
	}
	// A filter that also matches the retry or dead-letter topics would deliver those messages
	// twice (two matching shared subscriptions) or feed dead letters back in.
	for _, t := range []string{s.retryTopic, s.DeadLetterTopic} {
		if mqttconn.Match(filter, t) {
			return s, config.Invalid("Topic", s.Topic, "also matches %q; use a filter such as %q", t, DefaultTopic)
		}
	}
	if mqttconn.Match(RetryFilter, s.DeadLetterTopic) {
		return s, config.Invalid("DeadLetterTopic", s.DeadLetterTopic, "matches the retry filter %q", RetryFilter)
	}

	if s.QoS == 0 {
		s.QoS = DefaultQoS
	}
	if s.QoS < 1 || s.QoS > 2 {
		return s, config.Invalid("QoS", s.QoS, "use 2 (or 1); at QoS 0 a message cannot wait for its acknowledgement")
	}
	if s.MaxInflight == 0 {
		s.MaxInflight = DefaultMaxInflight
	}
	if s.MaxInflight < 1 || s.MaxInflight > 65535 {
		return s, config.Invalid("MaxInflight", s.MaxInflight, "must be between 1 and 65535 (it is the MQTT receive maximum; 0: the default)")
	}
	if s.MaxAttempts < 0 {
		return s, config.Invalid("MaxAttempts", s.MaxAttempts, "must not be negative (0: no limit)")
	}
	switch s.DelayedPublish {
	case "":
		s.DelayedPublish = DelayedPublishAuto
	case DelayedPublishAuto, DelayedPublishOn, DelayedPublishOff:
	default:
		return s, config.Invalid("DelayedPublish", s.DelayedPublish, "must be auto, on or off")
	}
	if s.RetryBase == 0 {
		s.RetryBase = DefaultRetryBase
	}
	if s.RetryMax == 0 {
		s.RetryMax = max(DefaultRetryMax, s.RetryBase)
	}
	if s.RetryBase < 0 {
		return s, config.Invalid("RetryBase", s.RetryBase, "must not be negative (0: the default)")
	}
	if s.RetryMax < s.RetryBase {
		return s, config.Invalid("RetryMax", s.RetryMax, "must not be below the retry base %s", s.RetryBase)
	}
	if s.DrainTimeout == 0 {
		s.DrainTimeout = DefaultDrainTimeout
	}
	if s.PublishTimeout == 0 {
		s.PublishTimeout = DefaultPublishTimeout
	}
	if s.MaxPayloadBytes == 0 {
		s.MaxPayloadBytes = transport.DefaultMaxBodyBytes
	}
	switch {
	case s.DrainTimeout < 0:
		return s, config.Invalid("DrainTimeout", s.DrainTimeout, "must not be negative (0: the default)")
	case s.PublishTimeout < 0:
		return s, config.Invalid("PublishTimeout", s.PublishTimeout, "must not be negative (0: the default)")
	}
	return s, nil
}
