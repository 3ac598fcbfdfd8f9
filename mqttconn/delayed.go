package mqttconn

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Delayed publish, EMQX's convention, which the embedded broker implements: a message published
// to "$delayed/<seconds>/<topic>" is held by the broker and delivered to <topic> that many
// seconds later. mqtt2http uses it to wait out a retry's backoff without holding the message.
const (
	// DelayedPrefix starts a delayed topic.
	DelayedPrefix = "$delayed/"
	// MaxDelaySeconds is the longest delay a delayed topic may ask for (EMQX's limit, about
	// 49.7 days).
	MaxDelaySeconds = 4294967
	// DelayedPublishProperty is the CONNACK user property by which a broker announces that it
	// delays messages published to DelayedPrefix topics; its value is "$delayed". The embedded
	// broker sends it. Nothing in MQTT announces the feature, so a client cannot tell otherwise
	// without a round trip: Mosquitto takes such a publish and delivers it to nobody, and at
	// QoS 2 it does not even say so (no 0x10 in its PUBREC).
	DelayedPublishProperty = "delayed-publish"
)

// DelayedTopic returns the topic that delivers to topic after d, rounded up to whole seconds
// (the convention has no finer unit) and capped at MaxDelaySeconds.
func DelayedTopic(d time.Duration, topic string) string {
	secs := int64(math.Ceil(d.Seconds()))
	secs = min(max(secs, 0), MaxDelaySeconds)
	return DelayedPrefix + strconv.FormatInt(secs, 10) + "/" + topic
}

// ParseDelayed splits a delayed topic into its delay and target topic. ok is false for a topic
// that does not start with DelayedPrefix; err says what is wrong with one that does but is not
// "$delayed/<0..MaxDelaySeconds>/<topic name>".
func ParseDelayed(topic string) (delay time.Duration, target string, ok bool, err error) {
	rest, found := strings.CutPrefix(topic, DelayedPrefix)
	if !found {
		return 0, "", false, nil
	}
	secs, target, found := strings.Cut(rest, "/")
	if !found {
		return 0, "", true, fmt.Errorf("delayed topic %q has no target topic: want $delayed/<seconds>/<topic>", topic)
	}
	n, perr := strconv.ParseUint(secs, 10, 32)
	if perr != nil || n > MaxDelaySeconds || strings.HasPrefix(secs, "+") {
		return 0, "", true, fmt.Errorf("delayed topic %q: the delay %q is not a whole number of seconds from 0 to %d", topic, secs, MaxDelaySeconds)
	}
	if err := ValidateTopic(target); err != nil {
		return 0, "", true, fmt.Errorf("delayed topic %q: %w", topic, err)
	}
	return time.Duration(n) * time.Second, target, true, nil
}
