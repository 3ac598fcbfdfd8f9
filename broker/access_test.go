package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lpsdev/lps/internal/testutil"
)

// The compose topology's files, tested here as they are committed.
const (
	composeACL    = "../compose/broker.acl"
	composePasswd = "../compose/broker.passwd"
)

// composeQueues are the queues the lps broker role declares by default
// (roles/mqttbroker.DefaultQueues, which imports this package).
var composeQueues = []Queue{
	{Group: "legacy_proxy", Filter: "+/message"},
	{Group: "legacy_proxy", Filter: "+/retry/message"},
	{Group: "dead_letters", Filter: "lps/dead-letter"},
}

// demoPassword is the password of a compose demo user (compose/broker.passwd).
func demoPassword(user string) string { return "demo-" + user }

// writeFile writes a test file and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// subscribeCodes subscribes to filters and returns the SUBACK's reason codes.
func subscribeCodes(t testing.TB, c *paho.Client, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sa, err := c.Subscribe(ctx, subscription(filters...))
	if sa == nil {
		t.Fatalf("subscribing %v: %v", filters, err)
	}
	return sa.Reasons
}

// publishCode publishes at qos (1 or 2) and returns the reason code of the
// PUBACK, or of the PUBREC (if it refused) or PUBCOMP.
func publishCode(t testing.TB, c *paho.Client, topic string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{QoS: qos, Topic: topic, Payload: []byte("x")})
	if pr == nil {
		t.Fatalf("publishing to %s: %v", topic, err)
	}
	return pr.ReasonCode
}

// The Paho interoperability suite's rules (anonymous clients, no password
// file): a deny rule's refusal is 0x80 on the wire, a filter nothing grants
// 0x87, a granted one its QoS; a refused filter does not hurt the others of
// the same SUBSCRIBE.
func TestACLSubscribeReasonCodes(t *testing.T) {
	b := startBroker(t, Config{ACLFile: writeFile(t, "acl", "topic readwrite #\ntopic deny test/nosubscribe\n")})
	c := mustDial(t, b.Addr().String(), clientOpts{id: "paho", clean: true})
	got := subscribeCodes(t, c, "test/nosubscribe", "TopicA/+", "$SYS/#", "#", "$share/g/TopicA", "$share/g/test/nosubscribe")
	if want := []byte{0x80, 2, 0x87, 2, 2, 0x80}; !slices.Equal(got, want) {
		t.Errorf("SUBACK reason codes %#x, want %#x", got, want)
	}
	// Anonymous clients may publish what the rules grant, and not a $ topic.
	if code := publishCode(t, c, "TopicA/B", 1); code != 0 {
		t.Errorf("publish to TopicA/B: %#x, want 0", code)
	}
	if code := publishCode(t, c, "test/nosubscribe", 1); code != 0x87 {
		t.Errorf("publish to test/nosubscribe: %#x, want 0x87", code)
	}
	// A refusal is five bytes, without a reason string the client may not
	// want [MQTT-3.1.2-29]; a refused QoS 2 flow ends with its PUBREC.
	raw, _ := dialRaw(t, b.Addr().String(), rawOpts{id: "raw", noProblemInfo: true})
	for _, qos := range []byte{1, 2} {
		ack := raw.publish("$TopicA/B", qos, false, "x")
		if ack.ReasonCode != 0x87 || ack.Properties.ReasonString != "" {
			t.Errorf("QoS %d publish to $TopicA/B: reason %#x %q, want 0x87 and no reason string", qos, ack.ReasonCode, ack.Properties.ReasonString)
		}
	}
	raw.ping() // nothing else was written before the PINGRESP
	// An anonymous client's will is checked against the anonymous rules.
	if _, ca, err := dial(t, b.Addr().String(), clientOpts{id: "will", clean: true, will: "test/nosubscribe"}); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Errorf("will to test/nosubscribe: %v, CONNACK %+v; want 0x87", err, ca)
	}
	disconnect(mustDial(t, b.Addr().String(), clientOpts{id: "will", clean: true, will: "TopicA/will"}))
	// A user name is not believed without credentials: still the anonymous rules.
	u := mustDial(t, b.Addr().String(), clientOpts{id: "named", clean: true, user: "admin", pass: "x"})
	if got := subscribeCodes(t, u, "test/nosubscribe"); !slices.Equal(got, []byte{0x80}) {
		t.Errorf("client with an unchecked user name: %#x, want 0x80", got)
	}
}

// startComposeBroker runs a broker with the compose topology's password file,
// ACL and queues.
func startComposeBroker(t *testing.T, cfg Config) *runningBroker {
	t.Helper()
	cfg.PasswordFile, cfg.ACLFile, cfg.Queues = composePasswd, composeACL, composeQueues
	return startBroker(t, cfg)
}

// dialAs connects with a compose demo user's credentials.
func dialAs(t *testing.T, b *runningBroker, user, clientID string) *paho.Client {
	t.Helper()
	return mustDial(t, b.Addr().String(), clientOpts{id: clientID, clean: true, user: user, pass: demoPassword(user)})
}

// Every rule of the compose topology's ACL, tried by the user it is for and by
// users it is not for. A refused publish is answered 0x87 at QoS 1 and 2 and
// neither routed nor stored.
func TestComposeACL(t *testing.T) {
	b := startComposeBroker(t, Config{DataDir: t.TempDir()})
	clients := map[string]*paho.Client{}
	for _, u := range []string{"proxy1-1", "proxy1-2", "proxy1-3", "proxy2-1", "proxy2-2", "proxy2-3", "lps"} {
		clients[u] = dialAs(t, b, u, u)
	}
	clients["proxy2-1-retry"] = dialAs(t, b, "proxy2-1", "proxy2-1-retry")
	clients["lps-dead-letters"] = dialAs(t, b, "lps", "lps-dead-letters")

	const ok, refused = byte(0), byte(0x87)
	for _, tc := range []struct {
		client, topic string
		want          byte
	}{
		// http2mqtt: its own <SERVICE_NAME>/message only.
		{"proxy1-1", "proxy1-1/message", ok},
		{"proxy1-2", "proxy1-2/message", ok},
		{"proxy1-3", "proxy1-3/message", ok},
		{"proxy1-2", "proxy1-1/message", refused},
		{"proxy1-1", "proxy1-3/message", refused},
		{"proxy2-1", "proxy1-1/message", refused},
		{"proxy2-1", "proxy2-1/message", refused},
		{"proxy1-1", "proxy1-1/retry/message", refused},
		{"proxy1-1", "lps/dead-letter", refused},
		// mqtt2http: its own retry topic, directly or through $delayed, and the dead letters.
		{"proxy2-1", "proxy2-1/retry/message", ok},
		{"proxy2-1-retry", "proxy2-1/retry/message", ok},
		{"proxy2-2", "$delayed/60/proxy2-2/retry/message", ok},
		{"proxy2-3", "$delayed/0/proxy2-3/retry/message", ok},
		{"proxy2-1", "$delayed/60/proxy2-2/retry/message", refused},
		{"proxy2-1", "proxy2-2/retry/message", refused},
		{"proxy1-1", "$delayed/60/proxy1-1/message", ok}, // checked as what it will be: a publish to proxy1-1/message
		{"proxy1-1", "$delayed/60/proxy1-2/message", refused},
		{"proxy2-1", "lps/dead-letter", ok},
		{"proxy2-2", "lps/dead-letter", ok},
		{"proxy2-3", "lps/dead-letter", ok},
		// The operator replays to an alarm topic, and publishes nothing else.
		{"lps-dead-letters", "proxy1-1/message", ok},
		{"lps", "lps/dead-letter", refused},
	} {
		for _, qos := range []byte{1, 2} {
			before := b.Stats()
			got := publishCode(t, clients[tc.client], tc.topic, qos)
			if got != tc.want {
				t.Errorf("%s publishes to %s at QoS %d: %#x, want %#x", tc.client, tc.topic, qos, got, tc.want)
			}
			if after := b.Stats(); got == refused && (after.Queued != before.Queued || after.Delayed != before.Delayed) {
				t.Errorf("%s to %s refused, yet kept: queued %d -> %d, delayed %d -> %d", tc.client, tc.topic,
					before.Queued, after.Queued, before.Delayed, after.Delayed)
			}
		}
	}

	const alarms, retries, deadLetters = "$share/legacy_proxy/+/message", "$share/legacy_proxy/+/retry/message", "$share/dead_letters/lps/dead-letter"
	for _, tc := range []struct {
		client string
		filter string
		want   byte
	}{
		{"proxy2-1", alarms, 2},
		{"proxy2-2", alarms, 2},
		{"proxy2-3", alarms, 2},
		{"proxy2-1-retry", retries, 2},
		{"proxy2-2", retries, 2},
		{"lps-dead-letters", deadLetters, 2},
		{"proxy1-1", alarms, refused},
		{"proxy1-1", retries, refused},
		{"lps", alarms, refused},
		{"proxy2-1", deadLetters, refused},
		{"proxy2-1", "$share/legacy_proxy/#", refused},
		{"proxy2-1", "$share/other/+/message", refused},
		{"proxy2-1", "+/message", refused},
		{"proxy2-1", "#", refused},
		{"proxy1-1", "proxy1-1/message", refused},
		{"lps", "lps/dead-letter", refused},
	} {
		if got := subscribeCodes(t, clients[tc.client], tc.filter); !slices.Equal(got, []byte{tc.want}) {
			t.Errorf("%s subscribes to %s: %#x, want %#x", tc.client, tc.filter, got, tc.want)
		}
	}

	// A will is a publish the broker makes for its client: checked as one.
	for _, tc := range []struct {
		user, will string
		code       byte
	}{
		{"proxy1-3", "proxy1-3/message", 0},
		{"proxy1-3", "proxy1-1/message", 0x87},
		{"proxy2-3", "lps/dead-letter", 0},
		{"proxy2-3", "proxy2-3/message", 0x87},
	} {
		c, ca, err := dial(t, b.Addr().String(), clientOpts{id: tc.user + "-will", clean: true, user: tc.user, pass: demoPassword(tc.user), will: tc.will})
		switch {
		case tc.code == 0 && err != nil:
			t.Errorf("%s with a will to %s: %v", tc.user, tc.will, err)
		case tc.code == 0:
			disconnect(c)
		case err == nil || ca == nil || ca.ReasonCode != tc.code:
			t.Errorf("%s with a will to %s: %v, CONNACK %+v; want %#x", tc.user, tc.will, err, ca, tc.code)
		}
	}

	// Nobody connects without credentials.
	if _, ca, err := dial(t, b.Addr().String(), clientOpts{id: "anon", clean: true}); err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Errorf("anonymous client: %v, CONNACK %+v; want 0x86", err, ca)
	}
}

// The first attack of issue 14: a client that is not in the group subscribes
// to $share/legacy_proxy/+/message, to take alarms and acknowledge them away.
// It is refused, and the alarms go to the real members only.
func TestACLRefusesJoiningTheGroup(t *testing.T) {
	b := startComposeBroker(t, Config{})
	const filter = "$share/legacy_proxy/+/message"
	attacker := dialAs(t, b, "proxy1-2", "proxy1-2-x")
	if got := subscribeCodes(t, attacker, filter); !slices.Equal(got, []byte{0x87}) {
		t.Fatalf("attacker's SUBACK %#x, want 0x87", got)
	}
	col := newCollector()
	o := consumer("proxy2-1", 10, col, 0)
	o.user, o.pass = "proxy2-1", demoPassword("proxy2-1")
	member := mustDial(t, b.Addr().String(), o)
	subscribe(t, member, filter)
	want := payloads("alarm", 20)
	publish(t, dialAs(t, b, "proxy1-1", "proxy1-1"), "proxy1-1/message", want, 4)
	testutil.Eventually(t, testTimeout, func() error {
		if m := col.missing(want); len(m) > 0 {
			return errors.New("member still waiting for " + strings.Join(m, ","))
		}
		return nil
	})
	b.disp.mu.Lock()
	members := sortedKeys(b.disp.groups[filter].members)
	b.disp.mu.Unlock()
	if !slices.Equal(members, []string{"proxy2-1"}) {
		t.Errorf("group members %v, want proxy2-1 only", members)
	}
}

// The second attack: a user connects with another's client id and clean
// start, which would discard that session and its queue. It is refused 0x85,
// and the real session keeps its subscription and what was queued for it.
func TestClientIDBelongsToItsUser(t *testing.T) {
	b := startComposeBroker(t, Config{DataDir: t.TempDir()})
	addr := b.Addr().String()
	col := newCollector()
	real := consumer("proxy2-1", 10, col, 0)
	real.user, real.pass = "proxy2-1", demoPassword("proxy2-1")
	real.clean, real.expiry = false, 3600
	c := mustDial(t, addr, real)
	// A plain subscription of its own would be refused; the session's
	// queue is the group's share of it plus what is in flight, so subscribe
	// and leave with messages owed.
	subscribe(t, c, "$share/legacy_proxy/+/message")
	disconnect(c)
	want := payloads("queued", 10)
	publish(t, dialAs(t, b, "proxy1-1", "proxy1-1"), "proxy1-1/message", want, 2)

	for _, tc := range []struct {
		name, user, pass, id string
		code                 byte
	}{
		{"another user's client id", "proxy1-1", demoPassword("proxy1-1"), "proxy2-1", 0x85},
		{"a prefix that is not <user>-", "proxy2-1", demoPassword("proxy2-1"), "proxy2-10", 0x85},
		{"wrong password", "proxy2-1", "guess", "proxy2-1", 0x86},
		{"unknown user", "mallory", "x", "proxy2-1", 0x86},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ca, err := dial(t, addr, clientOpts{id: tc.id, clean: true, user: tc.user, pass: tc.pass})
			if err == nil || ca == nil || ca.ReasonCode != tc.code {
				t.Errorf("connect: %v, CONNACK %+v; want reason %#x", err, ca, tc.code)
			}
		})
	}
	// Its own retry connection's id is the user's.
	disconnect(dialAs(t, b, "proxy2-1", "proxy2-1-retry"))

	c2, ca, err := dial(t, addr, real)
	if err != nil {
		t.Fatalf("the real proxy2-1 reconnecting: %v", err)
	}
	if !ca.SessionPresent {
		t.Error("the real proxy2-1's session is gone")
	}
	testutil.Eventually(t, testTimeout, func() error {
		if m := col.missing(want); len(m) > 0 {
			return errors.New("proxy2-1 still waiting for " + strings.Join(m, ","))
		}
		return nil
	})
	disconnect(c2)
}

// A password file beside the single --username: both admit, the single user
// keeps any client id (it is one identity shared by every client, as before).
func TestPasswordFileBesideUsername(t *testing.T) {
	pw := writeFile(t, "passwd", "alice:"+hashFor(t, "alice-pw")+"\n")
	b := startBroker(t, Config{PasswordFile: pw, Username: "shared", Password: "shared-pw"})
	addr := b.Addr().String()
	for _, tc := range []struct {
		name, user, pass, id string
		code                 byte
	}{
		{"file user", "alice", "alice-pw", "alice-1", 0},
		{"file user, wrong password", "alice", "shared-pw", "alice", 0x86},
		{"single user, any client id", "shared", "shared-pw", "proxy2-1", 0},
		{"single user, wrong password", "shared", "alice-pw", "x", 0x86},
		{"unknown", "bob", "alice-pw", "bob", 0x86},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ca, err := dial(t, addr, clientOpts{id: tc.id, clean: true, user: tc.user, pass: tc.pass})
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				disconnect(c)
				return
			}
			if err == nil || ca == nil || ca.ReasonCode != tc.code {
				t.Errorf("connect: %v, CONNACK %+v; want reason %#x", err, ca, tc.code)
			}
		})
	}
	t.Run("malformed hash", func(t *testing.T) {
		bad := writeFile(t, "passwd", "alice:"+hashFor(t, "x")+"\nbob:$2a$10$short\n")
		if _, err := New(Config{Address: "127.0.0.1:0", PasswordFile: bad}); err == nil || !strings.Contains(err.Error(), "password file "+bad+", line 2") {
			t.Errorf("New: %v, want an error naming %s, line 2", err, bad)
		}
	})
}

// A plain subscription that only overlaps a deny rule is granted, and the
// denied topics are withheld from it; a publish that only such a subscriber
// would get has nobody to take it (0x10).
func TestACLWithholdsDeniedTopics(t *testing.T) {
	pw := writeFile(t, "passwd", "pub:"+hashFor(t, "p")+"\nsub:"+hashFor(t, "s")+"\n")
	acl := writeFile(t, "acl", "user pub\ntopic write a/#\nuser sub\ntopic read a/#\ntopic deny a/secret\n")
	b := startBroker(t, Config{PasswordFile: pw, ACLFile: acl})
	addr := b.Addr().String()
	got := make(chan string, 10)
	sub := mustDial(t, addr, clientOpts{id: "sub", clean: true, user: "sub", pass: "s",
		onPublish: func(_ *paho.Client, p *paho.Publish) { got <- p.Topic }})
	if codes := subscribeCodes(t, sub, "a/+", "a/secret"); !slices.Equal(codes, []byte{2, 0x80}) {
		t.Fatalf("SUBACK %#x, want 2 and 0x80", codes)
	}
	pub := mustDial(t, addr, clientOpts{id: "pub", clean: true, user: "pub", pass: "p"})
	if code := publishCode(t, pub, "a/secret", 1); code != 0x10 {
		t.Errorf("publish to a/secret: %#x, want 0x10 (its only subscriber may not read it)", code)
	}
	if code := publishCode(t, pub, "a/public", 1); code != 0 {
		t.Errorf("publish to a/public: %#x, want 0", code)
	}
	// Messages reach one subscriber in order: had a/secret been sent, it
	// would come first.
	select {
	case topic := <-got:
		if topic != "a/public" {
			t.Errorf("subscriber got %s first, want a/public", topic)
		}
	case <-time.After(testTimeout):
		t.Fatal("subscriber got nothing")
	}
}

// The shared-delivery metric keeps at most maxSharedSeries label pairs.
func TestSharedDeliveriesLabelsAreBounded(t *testing.T) {
	m := newMetrics()
	for i := range maxSharedSeries + 44 {
		m.sharedDelivery("$share/g/t", "client-"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('A'+i/26)))
	}
	m.sharedDelivery("$share/g/t", "client-aA") // an existing pair still counts under its own labels
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.sharedDeliveries)
	if n := promtest.CollectAndCount(reg, "lps_broker_shared_deliveries_total"); n != maxSharedSeries+1 {
		t.Errorf("%d series, want %d and other", n, maxSharedSeries)
	}
	if got := promtest.ToFloat64(m.sharedDeliveries.WithLabelValues(otherLabel, otherLabel)); got != 44 {
		t.Errorf("other: %v, want 44", got)
	}
	if got := promtest.ToFloat64(m.sharedDeliveries.WithLabelValues("$share/g/t", "client-aA")); got != 2 {
		t.Errorf("client-aA: %v, want 2", got)
	}
}

// A group membership kept in the data dir from before the broker had access
// rules ends when its client comes back: it cannot keep taking alarms it may
// no longer subscribe to.
func TestACLRevokesKeptSubscriptions(t *testing.T) {
	dir := t.TempDir()
	const filter = "$share/legacy_proxy/+/message"
	first := startBroker(t, Config{DataDir: dir, PasswordFile: composePasswd, Queues: composeQueues})
	stale := clientOpts{id: "proxy1-2", expiry: 3600, user: "proxy1-2", pass: demoPassword("proxy1-2")}
	subscribe(t, mustDial(t, first.Addr().String(), stale), filter)
	first.stop()

	b := startComposeBroker(t, Config{DataDir: dir})
	members := func() []string {
		b.disp.mu.Lock()
		defer b.disp.mu.Unlock()
		if g := b.disp.groups[filter]; g != nil {
			return sortedKeys(g.members)
		}
		return nil
	}
	if m := members(); !slices.Equal(m, []string{"proxy1-2"}) {
		t.Fatalf("members after the restart %v, want the kept proxy1-2 (the premise)", m)
	}
	c, ca, err := dial(t, b.Addr().String(), stale)
	if err != nil || !ca.SessionPresent {
		t.Fatalf("proxy1-2 coming back: %v, session present %t", err, ca != nil && ca.SessionPresent)
	}
	testutil.Eventually(t, testTimeout, func() error {
		if m := members(); len(m) > 0 {
			return errors.New("members still " + strings.Join(m, ","))
		}
		return nil
	})
	disconnect(c)
	b.stop()
	// The data dir no longer holds it either.
	third := startComposeBroker(t, Config{DataDir: dir})
	third.disp.mu.Lock()
	g := third.disp.groups[filter]
	n := 0
	if g != nil {
		n = len(g.members)
	}
	third.disp.mu.Unlock()
	if n != 0 {
		t.Errorf("after another restart the group has %d members, want none", n)
	}
}
