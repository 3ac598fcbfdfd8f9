package broker

import (
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// OnWill publishes a client's will message through the dispatcher and hands
// mochi back a will with no topic, which matches no subscription: mochi's
// sendLWT would otherwise deliver it through its own path. A will delay is
// honoured with a timer that a reconnect cancels [MQTT-3.1.3-9].
func (d *dispatcher) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: will.Qos, Retain: will.Retain},
		TopicName:   will.TopicName,
		Payload:     will.Payload,
		Properties:  packets.Properties{User: will.User},
		Origin:      cl.ID,
		Created:     time.Now().Unix(),
	}
	if will.WillDelayInterval == 0 {
		d.publishWill(pk)
	} else {
		d.mu.Lock()
		if !d.closed {
			id := cl.ID
			if old := d.wills[id]; old != nil {
				old.Stop()
			}
			var t *time.Timer
			t = time.AfterFunc(time.Duration(will.WillDelayInterval)*time.Second, func() {
				d.mu.Lock()
				mine := d.wills[id] == t && !d.closed
				if mine {
					delete(d.wills, id)
				}
				d.mu.Unlock()
				if mine {
					d.publishWill(pk)
				}
			})
			d.wills[id] = t
		}
		d.mu.Unlock()
	}
	return mqtt.Will{Flag: will.Flag}, nil
}

func (d *dispatcher) publishWill(pk packets.Packet) {
	// Not waited for: nobody is told the will was taken.
	if _, err := d.route(pk); err != nil && !errors.Is(err, errNoSubscribers) {
		d.log.Error("dropping will message", zap.String("client", pk.Origin), zap.String("topic", pk.TopicName), zap.Error(err))
		d.drop("will_refused", 1)
		return
	}
	if pk.FixedHeader.Retain {
		d.retain(pk)
	}
}
