package faults

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Mosquitto publishes its counters on $SYS every sys_interval (the cluster sets 1 s), retained,
// so a new subscriber gets the latest at once. The messages it still owes its clients — queued
// for a disconnected session, or in flight — are the ones in its store that are not retained
// ($SYS's own values are retained messages too).
const (
	sysStoreCount    = "$SYS/broker/store/messages/count"
	sysRetainedCount = "$SYS/broker/retained messages/count"
)

// mosquittoDepth returns how many messages Mosquitto at addr holds that are not retained: its
// queue depth, as of its last $SYS update (at most sys_interval old).
func mosquittoDepth(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("mosquitto $SYS: %w", err)
	}
	values := make(chan *paho.Publish, 4)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case values <- pr.Packet:
				default:
				}
				return true, nil
			},
		},
	})
	if _, err := c.Connect(ctx, &paho.Connect{KeepAlive: 10, CleanStart: true, ClientID: "lps-faults-sys-" + strconv.FormatInt(time.Now().UnixNano(), 36)}); err != nil {
		conn.Close()
		return 0, fmt.Errorf("mosquitto $SYS: connecting: %w", err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: sysStoreCount}, {Topic: sysRetainedCount},
	}}); err != nil {
		return 0, fmt.Errorf("mosquitto $SYS: subscribing: %w", err)
	}
	got := map[string]int{}
	for len(got) < 2 {
		select {
		case p := <-values:
			n, err := strconv.Atoi(strings.TrimSpace(string(p.Payload)))
			if err != nil {
				return 0, fmt.Errorf("mosquitto $SYS: %s is %q: %w", p.Topic, p.Payload, err)
			}
			got[p.Topic] = n
		case <-ctx.Done():
			return 0, fmt.Errorf("mosquitto $SYS: no %s and %s (is sys_interval set?): %w", sysStoreCount, sysRetainedCount, ctx.Err())
		}
	}
	return max(got[sysStoreCount]-got[sysRetainedCount], 0), nil
}
