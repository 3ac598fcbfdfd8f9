// Package mqttconn is the MQTT v5 connection both bridges (http2mqtt and mqtt2http) share: it
// parses the broker URL, builds the autopaho configuration (persistent session, keepalive,
// reconnect backoff, TLS, credentials, receive maximum, manual acknowledgement), keeps the
// connection up, and reports its state to /readyz and Prometheus.
//
// # Session
//
// Every connection uses MQTT v5 with Clean Start off and a Session Expiry Interval of
// DefaultSessionExpiry (one day), so the broker keeps the session — the subscriptions of
// mqtt2http and the QoS 1/2 messages queued for it — across restarts of the process and
// outages of the network, and the client id is the service name so that a restarted instance
// resumes its own session.
//
// The client's half of the session (QoS 2 flows in progress) is kept in memory unless
// Options.SessionDir names a directory, where paho's file store keeps it across restarts. With
// the in-memory state a restarted process forgets the QoS 2 flows that were in progress when it
// died: the broker still has them, so an outgoing message whose PUBCOMP never arrived may or may
// not be delivered (http2mqtt never answered 2xx for it, so the sender retries: at least once),
// and an incoming message whose PUBREC was sent but not confirmed may be presented once more
// (a duplicate, never a loss). A broker that still holds an unfinished incoming flow under a
// packet identifier the new process reuses answers with a failure reason code (mochi: 0x91) or
// replaces it (Mosquitto); Conn.Publish reports failure reason codes as errors, so such a
// message is never confirmed by mistake. The file store costs an fsync per QoS 2 message, which
// is why it is opt-in.
//
// # Acknowledgements
//
// With Config.ManualAck, received QoS 1/2 messages are acknowledged only when Conn.Ack is
// called. They are sent in the order the messages arrived (an Ack of a later message waits for
// the earlier ones), as soon as that order allows, by this package rather than by paho's manual
// acknowledgement, which can lose the acknowledgements of the first messages of a connection
// (see ackOrder); WaitAcks waits until every Ack of the live connection was sent, so a clean
// shutdown does not leave acknowledged messages to be redelivered.
package mqttconn
