// Package broker is the embedded MQTT v5 broker of the LPS: the one between
// http2mqtt (publishers, QoS 2) and the mqtt2http instances (consumers of the
// shared subscriptions $share/legacy_proxy/+/message and
// $share/legacy_proxy/+/retry/message, persistent sessions, small receive
// maximum, manual acknowledgement). It turns an outage downstream into a
// backlog instead of lost alarms.
//
// It is mochi-mqtt (github.com/mochi-mqtt/server/v2) for the protocol —
// connections, CONNECT and authentication, the inbound half of QoS 1/2,
// subscriptions and the topic index, session takeover and expiry — with
// hooks that replace mochi's delivery path, because the LPS needs what
// mochi's does not give (the comment on the dispatcher type in dispatch.go
// lists mochi's behaviours it works around):
//
//   - Shared subscriptions are served round robin over the group members
//     that have receive quota. A group's messages wait in the group's own
//     queue until a member has quota, so a backlog spreads over the members
//     as fast as each works through it, and unacknowledged messages of a
//     member that disconnects go back to the group at once.
//   - Nothing is dropped because a client's inflight window is full:
//     messages queue, in order, and go out as acknowledgements free the
//     window. Queues are bounded by Config.MaxQueued; a publish that would
//     exceed the bound is refused to its publisher (reason code 0x97),
//     logged and counted, so the publisher keeps it.
//   - With a data dir a backlog costs disk, not memory: a group queue keeps
//     a window of its oldest messages in memory and reads the next ones
//     from the data dir, in order, as the window drains; a restart reads a
//     window and a count per group, not the backlog (backlog.go). The data
//     dir is bounded by Config.MaxStoreBytes: beyond it a QoS 1/2 publish is
//     refused at once with 0x97, until consumers have drained.
//   - Clients are bounded too: packet size (announced in CONNACK),
//     connections, session expiry (Config.MaxPacketSize, MaxConnections,
//     MaxSessionExpiry).
//   - Durable queues declared at start (Config.Queues; the lps broker role
//     declares the LPS's own) are shared subscription groups that exist
//     before anyone subscribes: they take and keep matching messages, and
//     the members that subscribe later get the backlog. A QoS 1/2 publish
//     that matches neither a subscription nor a declared queue is answered
//     0x10 "No matching subscribers" and not kept, so that a publisher such
//     as http2mqtt never takes for a success a message nobody will get
//     (MQTT 3.1.1 publishers, which have no reason codes, get their usual
//     acknowledgement). A retained one is still retained.
//   - Delayed publish, EMQX's convention: a message published to
//     $delayed/<seconds>/<topic> (seconds 0..4294967, a topic name without
//     wildcards and not starting with $) is kept, in the data dir, and
//     published to <topic> that many seconds later, as if its publisher
//     published it then. It is accepted only if <topic> has a subscription
//     or a declared queue when it is published (else 0x10); a malformed one
//     gets 0x90 "Topic Name invalid". Every CONNACK announces the feature
//     with the user property delayed-publish=$delayed. mqtt2http schedules
//     its retries this way.
//   - A message is stored (with Config.DataDir) before the publisher is
//     told it was accepted (PUBREC or PUBACK), and every step of its
//     delivery is stored before it is taken, so sessions, subscriptions,
//     queued, in-flight, delayed and retained messages survive a
//     restart — graceful, or the process killed. What is lost in a kill:
//     QoS 0 messages not yet written, and the will messages of the clients
//     connected at the time (the process is gone before it can send them).
//     Messages a subscriber had received but not acknowledged are delivered
//     again after the restart, so they may arrive twice.
//   - Access (auth.go, acl.go, passwd.go): clients authenticate with a user of
//     a bcrypt password file (Config.PasswordFile) or the single
//     Config.Username; a password-file user's client ids are <user> and
//     <user>-*, so no user can take over another's session. Access rules in
//     Mosquitto's acl_file format (Config.ACLFile) say what each user may
//     publish and subscribe to; a refused subscription gets 0x87 (0x80 for a
//     deny rule), a refused publish 0x87, neither stored nor routed.
//
// The broker passes the Eclipse Paho MQTT 5 interoperability suite
// (e2e/paho_test.go runs it against lps broker). What that took beyond
// mochi: MQTT 5 clients' keep alive is capped at Config.MaxKeepAlive and
// announced as Server Keep Alive (keepalive.go); clients that allow topic
// aliases get them (outAliases, send.go); a connection the broker closes
// lingers, so that its DISCONNECT reaches a client still sending
// (linger.go).
//
// A Broker is a value with Run(ctx), as every LPS role: New builds it on a
// listener the caller made, Run serves until ctx ends. Ready, Addr, Stats
// and QueueDepth report on it; QueueDepth (queued, in flight and delayed
// messages) reaching zero tells an experiment that the consumers have
// drained the backlog.
package broker
