package broker

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/boltpages"
)

// dbFile is the name of the database file inside Config.DataDir.
const dbFile = "broker.db"

// Buckets of the database. Keys never contain a NUL byte except as the
// separator we put there: MQTT forbids U+0000 in client identifiers, topic
// names and filters [MQTT-1.5.4-2].
var (
	bucketClients  = []byte("clients")  // client id → storage.Client
	bucketSubs     = []byte("subs")     // client id NUL filter → storage.Subscription
	bucketInbound  = []byte("inbound")  // client id NUL packet id → storage.Message (inbound QoS 2 awaiting PUBREL)
	bucketRetained = []byte("retained") // topic → storage.Message
	bucketOutbound = []byte("outbound") // ('c'|'g'|'d') NUL owner NUL seq → outRecord (messages owed to subscribers, delayed messages)
	bucketCounts   = []byte("counts")   // group filter → records of the group in bucketOutbound (uint64), so a restart need not count them
)

// errStoreClosed is returned by store operations after the store was closed.
var errStoreClosed = errors.New("store closed")

// store is the broker's persistence: a mochi hook that keeps sessions,
// subscriptions, inbound QoS 2 state and retained messages in a bbolt file,
// plus the outbound messages (queued and in flight) the dispatcher owns.
//
// mochi ships storage hooks (bolt, badger, pebble, redis), but none fits:
//   - hooks/storage/bolt does not store the packet id of inflight messages
//     (storage.Message.PacketID is never set in its OnQosPublish), so after a
//     restart every restored message of a client lands on packet id 0 and
//     all but one are lost; its package comment also declares it unmaintained;
//   - hooks/storage/badger stores the id, but its GC goroutine ranges over a
//     ticker channel that Stop never closes (one leaked goroutine per
//     broker), and it pulls in badger's large dependency tree and memory use;
//   - all of them key inflight messages on client id + packet id, the same
//     map mochi uses for both directions of a connection, and none can hold
//     messages that are queued but not yet in flight, which is where a
//     backlog lives (see dispatcher).
//
// One bbolt file (go.etcd.io/bbolt, pure Go, maintained by etcd) holding all
// of it lets the dispatcher move a message from a group queue to a
// subscriber in one transaction.
type store struct {
	mqtt.HookBase

	log *zap.Logger

	mu sync.RWMutex // guards db against use after Close
	db *bolt.DB

	used atomic.Int64 // bytes of the file in pages in use (not free), after the last transaction

	commits committer // the group commit (commit.go): every write goes through it
}

var _ mqtt.Hook = (*store)(nil)

// openStore opens (creating if needed) the database in dir and starts its
// committer. Every commit is fsynced unless noSync: then what the broker
// acknowledged survives a crash of the process (the kernel holds the pages),
// not a crash of the machine.
func openStore(dir string, noSync bool, log *zap.Logger, met *metrics) (*store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, dbFile)
	db, err := openBolt(path, &bolt.Options{ // checks a file that is there first (storecheck.go)
		// Another process holding the file (a second broker on the same
		// data dir) makes Open fail instead of hanging.
		Timeout:        time.Second,
		NoSync:         noSync,
		NoGrowSync:     noSync,
		NoFreelistSync: true, // rebuilt on open; saves a page write per transaction
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketClients, bucketSubs, bucketInbound, bucketRetained, bucketOutbound, bucketCounts} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("preparing %s: %w", path, err)
	}
	st := &store{log: log, db: db}
	st.measure()
	st.unmap()
	st.commits.start(st, met)
	return st, nil
}

// ID identifies the hook to mochi.
func (st *store) ID() string { return "lps-store" }

// Provides tells mochi which events the store handles.
func (st *store) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnWillSent,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnQosPublish,
		mqtt.OnQosComplete,
		mqtt.OnQosDropped,
		mqtt.OnClientExpired,
		mqtt.OnRetainedExpired,
		mqtt.StoredClients,
		mqtt.StoredSubscriptions,
		mqtt.StoredInflightMessages,
		mqtt.StoredRetainedMessages,
	}, b) >= 0
}

// Stop flushes and closes the database; mochi calls it from Server.Close.
func (st *store) Stop() error { return st.close(true) }

// close closes the database. When graceful, the changes still waiting for
// the committer are written and the file is flushed to disk first;
// otherwise they are dropped, as a crash would.
func (st *store) close(graceful bool) error {
	st.commits.stop(graceful)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.db == nil {
		return nil
	}
	var err error
	if graceful {
		// One last transaction that writes the free page list, which the
		// broker otherwise leaves out (NoFreelistSync): the next open then
		// reads it instead of walking every page of the file to rebuild it,
		// which would map a whole backlog into memory at start. After a
		// crash the walk happens once (unmap drops the pages after it).
		st.db.NoFreelistSync = false
		err = st.db.Update(func(*bolt.Tx) error { return nil })
		err = errors.Join(err, st.db.Sync())
	}
	err = errors.Join(err, st.db.Close())
	st.db = nil
	return err
}

// update runs fn in a read-write transaction.
func (st *store) update(fn func(tx *bolt.Tx) error) error {
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.db == nil {
		return errStoreClosed
	}
	return st.db.Update(fn)
}

// view runs fn in a read-only transaction.
func (st *store) view(fn func(tx *bolt.Tx) error) error {
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.db == nil {
		return errStoreClosed
	}
	return st.db.View(fn)
}

// put stores v under key in bucket and waits until it is on disk.
func (st *store) put(bucket, key []byte, v any) {
	var b batch
	if err := b.putValue(bucket, key, v); err != nil {
		st.logError("writing to data dir", bucket, err)
		return
	}
	st.write(&b, bucket)
}

// deleteKey deletes key from bucket and waits until that is on disk.
func (st *store) deleteKey(bucket, key []byte) {
	var b batch
	b.delIn(bucket, key)
	st.write(&b, bucket)
}

// deletePrefix deletes every key of bucket that starts with prefix and waits
// until that is on disk.
func (st *store) deletePrefix(bucket, prefix []byte) {
	var b batch
	b.delPrefix(bucket, prefix)
	st.write(&b, bucket)
}

// enqueue hands b to the committer; see committer.enqueue. A nil store (the
// in-memory broker) has nothing to write.
func (st *store) enqueue(b *batch) *flush {
	if st == nil {
		return nil
	}
	return st.commits.enqueue(b)
}

// write commits b and waits for it, logging a failure.
func (st *store) write(b *batch, bucket []byte) {
	if err := st.commits.enqueue(b).wait(); err != nil {
		st.logError("writing to data dir", bucket, err)
	}
}

// logError logs a failed store operation. After Close only mochi's
// housekeeping loop, racing the shutdown, still writes: worth a warning,
// not an error.
func (st *store) logError(msg string, bucket []byte, err error) {
	if errors.Is(err, errStoreClosed) {
		st.log.Warn(msg, zap.ByteString("bucket", bucket), zap.Error(err))
		return
	}
	st.log.Error(msg, zap.ByteString("bucket", bucket), zap.Error(err))
}

// each calls fn with every value of bucket, in key order.
func (st *store) each(bucket []byte, fn func(k, v []byte) error) error {
	return st.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(fn)
	})
}

// persistent reports whether the client's session outlives its connection,
// the negation of mochi's expire condition in attachClient.
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func clientPrefix(id string) []byte { return append([]byte(id), 0) }

func subKey(id, filter string) []byte { return append(clientPrefix(id), filter...) }

func inboundKey(id string, packetID uint16) []byte {
	return binary.BigEndian.AppendUint16(clientPrefix(id), packetID)
}

// OnSessionEstablished records a persistent client so that mochi restores it
// (and answers "session present") after a restart.
func (st *store) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if persistent(cl) {
		st.putClient(cl)
	}
}

// OnWillSent records that the client's will was used up.
func (st *store) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	if persistent(cl) {
		st.putClient(cl)
	}
}

func (st *store) putClient(cl *mqtt.Client) {
	props := cl.Properties.Props.Copy(false)
	st.put(bucketClients, []byte(cl.ID), storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
}

// OnDisconnect forgets a client whose session ends with its connection.
func (st *store) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	st.forget(cl.ID)
}

// OnClientExpired forgets a client whose session expired.
func (st *store) OnClientExpired(cl *mqtt.Client) { st.forget(cl.ID) }

// forget deletes everything mochi stored for a client.
func (st *store) forget(id string) {
	st.deleteKey(bucketClients, []byte(id))
	st.deletePrefix(bucketSubs, clientPrefix(id))
	st.deletePrefix(bucketInbound, clientPrefix(id))
}

// OnSubscribed records the granted subscriptions of a persistent client.
func (st *store) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !persistent(cl) {
		return
	}
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		st.put(bucketSubs, subKey(cl.ID, f.Filter), storage.Subscription{
			ID:                string(subKey(cl.ID, f.Filter)),
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            f.Filter,
			Qos:               codes[i],
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		})
	}
}

// OnUnsubscribed forgets subscriptions.
func (st *store) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, f := range pk.Filters {
		st.deleteKey(bucketSubs, subKey(cl.ID, f.Filter))
	}
}

// OnQosPublish records mochi's inflight entries. Since the dispatcher owns
// every outbound QoS 1/2 message, the only entries left to mochi are the
// PUBRECs of inbound QoS 2 messages awaiting the publisher's PUBREL; keeping
// them lets a publisher complete the handshake across a broker restart
// instead of getting "packet identifier not found". Inbound QoS 1 acks are
// deleted by mochi right after they are set, so they are not written.
func (st *store) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Pubrec || !persistent(cl) {
		return
	}
	// Not waited for: the message itself is on disk already (the
	// dispatcher stored it before OnPublish returned). Should this record
	// be lost with the machine, a PUBREL after the restart is answered
	// "packet identifier not found", which also ends the publisher's flow.
	var b batch
	if err := b.putValue(bucketInbound, inboundKey(cl.ID, pk.PacketID), storage.Message{
		T:           storage.InflightKey,
		Client:      cl.ID,
		PacketID:    pk.PacketID, // the field mochi's bolt hook forgets
		FixedHeader: pk.FixedHeader,
		Created:     pk.Created,
	}); err != nil {
		st.logError("writing to data dir", bucketInbound, err)
		return
	}
	st.commits.enqueue(&b)
}

// OnQosComplete deletes a completed inbound QoS 2 entry.
func (st *store) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Puback {
		return // inbound QoS 1: never written
	}
	st.forgetInbound(cl.ID, pk.PacketID)
}

// OnQosDropped deletes an abandoned inbound QoS 2 entry.
func (st *store) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	st.forgetInbound(cl.ID, pk.PacketID)
}

// forgetInbound deletes an inbound QoS 2 entry without waiting: a restart
// that finds it only lets the publisher complete a flow it has completed.
func (st *store) forgetInbound(id string, packetID uint16) {
	var b batch
	b.delIn(bucketInbound, inboundKey(id, packetID))
	st.commits.enqueue(&b)
}

// OnRetainedExpired deletes an expired retained message.
func (st *store) OnRetainedExpired(topic string) {
	st.deleteKey(bucketRetained, []byte(topic))
}

// putRetained stores or (for an empty payload) deletes the retained
// message of a topic and waits until that is on disk. The dispatcher calls
// it: mochi's own retain path is bypassed together with its delivery path.
func (st *store) putRetained(pk packets.Packet) error {
	key := []byte(pk.TopicName)
	var b batch
	if len(pk.Payload) == 0 {
		b.delIn(bucketRetained, key)
	} else if err := b.putValue(bucketRetained, key, toStorageMessage(pk, "")); err != nil {
		return err
	}
	return st.commits.enqueue(&b).wait()
}

// StoredClients returns the persistent clients for mochi to restore.
func (st *store) StoredClients() ([]storage.Client, error) {
	return loadAll[storage.Client](st, bucketClients)
}

// StoredSubscriptions returns the subscriptions for mochi to restore.
func (st *store) StoredSubscriptions() ([]storage.Subscription, error) {
	return loadAll[storage.Subscription](st, bucketSubs)
}

// StoredInflightMessages returns the inbound QoS 2 entries for mochi to restore.
func (st *store) StoredInflightMessages() ([]storage.Message, error) {
	return loadAll[storage.Message](st, bucketInbound)
}

// StoredRetainedMessages returns the retained messages for mochi to restore.
func (st *store) StoredRetainedMessages() ([]storage.Message, error) {
	return loadAll[storage.Message](st, bucketRetained)
}

func loadAll[T any](st *store, bucket []byte) ([]T, error) {
	var out []T
	err := st.each(bucket, func(k, v []byte) error {
		var t T
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decoding %s %q: %w", bucket, k, err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// Outbound messages. A record's key names its owner: 'c' a client session
// (queued for it or in flight to it), 'g' a shared subscription group
// (queued for whichever member gets it), 'd' the delayed messages (owner "";
// see delayed.go). The sequence number orders an owner's messages by arrival.

// outRecord is the stored form of an outMsg.
type outRecord struct {
	Seq       uint64          `json:"seq"`
	Group     string          `json:"group,omitempty"`
	State     msgState        `json:"state,omitempty"`
	Expiry    int64           `json:"expiry,omitempty"`
	PubQos    byte            `json:"pub_qos,omitempty"`
	PubRetain bool            `json:"pub_retain,omitempty"`
	Due       int64           `json:"due_ms,omitempty"` // delayed messages: when to publish, unix milliseconds
	Message   storage.Message `json:"msg"`
}

const (
	ownerClient  = 'c'
	ownerGroup   = 'g'
	ownerDelayed = 'd'
)

func outKey(kind byte, owner string, seq uint64) []byte {
	k := make([]byte, 0, len(owner)+11)
	k = append(k, kind, 0)
	k = append(k, owner...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// parseOutKey splits an outbound key into its parts.
func parseOutKey(k []byte) (kind byte, owner string, seq uint64, ok bool) {
	if len(k) < 11 || k[1] != 0 || k[len(k)-9] != 0 {
		return 0, "", 0, false
	}
	return k[0], string(k[2 : len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

func toStorageMessage(pk packets.Packet, client string) storage.Message {
	return storage.Message{
		Client:      client,
		Origin:      pk.Origin,
		PacketID:    pk.PacketID,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat:          pk.Properties.PayloadFormat,
			PayloadFormatFlag:      pk.Properties.PayloadFormatFlag,
			MessageExpiryInterval:  pk.Properties.MessageExpiryInterval,
			ContentType:            pk.Properties.ContentType,
			ResponseTopic:          pk.Properties.ResponseTopic,
			CorrelationData:        pk.Properties.CorrelationData,
			SubscriptionIdentifier: pk.Properties.SubscriptionIdentifier,
			User:                   pk.Properties.User,
		},
	}
}

// batch collects changes to the database so that one operation of the
// dispatcher is applied at once, in one transaction with whatever else the
// committer gathered.
type batch struct {
	ops []op
}

// op is one change: key set to val, key deleted (val nil), or with prefix
// every key that starts with key deleted.
type op struct {
	bucket, key, val []byte
	prefix           bool
}

// put stores an outbound record.
func (b *batch) put(key []byte, rec outRecord) {
	data, err := json.Marshal(rec)
	if err != nil {
		// outRecord holds only strings, numbers, byte slices and slices of
		// those: encoding cannot fail. Should it ever, failing loudly beats
		// a delivery state that silently stops being stored.
		panic(fmt.Sprintf("encoding outbound record: %v", err))
	}
	b.ops = append(b.ops, op{bucket: bucketOutbound, key: key, val: data})
}

// del deletes an outbound record.
func (b *batch) del(key []byte) { b.delIn(bucketOutbound, key) }

// putValue stores v, encoded as JSON, under key in bucket.
func (b *batch) putValue(bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b.ops = append(b.ops, op{bucket: bucket, key: key, val: data})
	return nil
}

// delIn deletes key from bucket.
func (b *batch) delIn(bucket, key []byte) {
	b.ops = append(b.ops, op{bucket: bucket, key: key})
}

// delPrefix deletes every key of bucket that starts with prefix.
func (b *batch) delPrefix(bucket, prefix []byte) {
	b.ops = append(b.ops, op{bucket: bucket, key: prefix, prefix: true})
}

// apply applies ops in one transaction, in order.
func (st *store) apply(ops []op) error {
	return st.update(func(tx *bolt.Tx) error {
		// Outbound keys mostly arrive in order (an owner's sequence
		// numbers grow): pages filled to bbolt's default of a half would
		// double the file a backlog takes.
		tx.Bucket(bucketOutbound).FillPercent = 0.9
		for _, o := range ops {
			bk := tx.Bucket(o.bucket)
			var err error
			switch {
			case o.prefix:
				c := bk.Cursor()
				for k, _ := c.Seek(o.key); err == nil && k != nil && bytes.HasPrefix(k, o.key); k, _ = c.Seek(o.key) {
					err = c.Delete()
				}
			case o.val == nil:
				err = bk.Delete(o.key)
			default:
				err = bk.Put(o.key, o.val)
			}
			if err != nil {
				return fmt.Errorf("%s %q: %w", o.bucket, o.key, err)
			}
		}
		return nil
	})
}

// loadOutbound calls fn for every outbound record of clients and delayed
// messages, in key order (so each owner's records arrive in sequence
// order). Group queues are read with loadGroups, a window at a time.
func (st *store) loadOutbound(fn func(kind byte, owner string, rec outRecord) error) error {
	return st.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbound).Cursor()
		for _, kind := range []byte{ownerClient, ownerDelayed} {
			prefix := []byte{kind, 0}
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				rec, err := decodeOutRecord(k, v)
				if err != nil {
					return err
				}
				_, owner, _, _ := parseOutKey(k)
				if err := fn(kind, owner, rec); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// measure updates st.used from the file's size and its free pages, as of
// the last transaction (bbolt updates its free page counts as a write
// transaction closes).
func (st *store) measure() {
	_ = st.view(func(tx *bolt.Tx) error {
		s := tx.DB().Stats()
		free := int64(s.FreePageN+s.PendingPageN) * int64(tx.DB().Info().PageSize)
		st.used.Store(max(tx.Size()-free, 0))
		return nil
	})
}

// usedBytes returns the bytes of the data dir's file in use, as of the last
// transaction: what Config.MaxStoreBytes bounds. Freed pages are reused
// before the file grows, so the file is as large as the most this ever was.
func (st *store) usedBytes() int64 { return st.used.Load() }

// unmap drops the file's pages from the broker's address space
// (boltpages): a backlog worked through would otherwise leave the broker's
// RSS as large as the file.
func (st *store) unmap() {
	_ = st.view(func(tx *bolt.Tx) error {
		boltpages.Drop(tx)
		return nil
	})
}

// groupRecords reads up to n records of group filter with sequence numbers
// above after, in order.
func (st *store) groupRecords(filter string, after uint64, n int) ([]outRecord, error) {
	var out []outRecord
	prefix := outKey(ownerGroup, filter, 0)
	prefix = prefix[:len(prefix)-8]
	err := st.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbound).Cursor()
		for k, v := c.Seek(outKey(ownerGroup, filter, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, v = c.Next() {
			rec, err := decodeOutRecord(k, v)
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// groupLoad is what a restart reads of a group queue: its first records
// (the window), how many it holds and its highest sequence number.
type groupLoad struct {
	filter  string
	head    []outRecord
	count   int
	lastSeq uint64
}

// loadGroups reads, for every group with records, its first n records, its
// count (from bucketCounts; counted by walking its keys in a file written
// before that bucket existed) and its last sequence number, without reading
// the rest: a backlog stays on disk.
func (st *store) loadGroups(n int) ([]groupLoad, error) {
	var out []groupLoad
	err := st.view(func(tx *bolt.Tx) error {
		counts := tx.Bucket(bucketCounts)
		c := tx.Bucket(bucketOutbound).Cursor()
		k, _ := c.Seek([]byte{ownerGroup, 0})
		for k != nil && k[0] == ownerGroup {
			_, owner, _, ok := parseOutKey(k)
			if !ok {
				return fmt.Errorf("malformed outbound key %q", k)
			}
			gl := groupLoad{filter: owner}
			prefix := outKey(ownerGroup, owner, 0)
			prefix = prefix[:len(prefix)-8]
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(gl.head) < n; k, v = c.Next() {
				rec, err := decodeOutRecord(k, v)
				if err != nil {
					return err
				}
				gl.head = append(gl.head, rec)
			}
			if v := counts.Get([]byte(owner)); len(v) == 8 {
				gl.count = int(binary.BigEndian.Uint64(v))
			} else {
				gl.count = 0
				for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
					gl.count++
				}
			}
			// Past the group's last key, then back to it.
			end := append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
			k, _ = c.Seek(end)
			var last []byte
			if k == nil {
				last, _ = c.Last()
			} else {
				last, _ = c.Prev()
			}
			if _, _, seq, ok := parseOutKey(last); ok {
				gl.lastSeq = seq
			}
			out = append(out, gl)
			k, _ = c.Seek(end)
		}
		return nil
	})
	return out, err
}

// putCount records in b how many records group filter has.
func (b *batch) putCount(filter string, n int) {
	if n <= 0 {
		b.delIn(bucketCounts, []byte(filter))
		return
	}
	b.ops = append(b.ops, op{bucket: bucketCounts, key: []byte(filter), val: binary.BigEndian.AppendUint64(nil, uint64(n))})
}

func decodeOutRecord(k, v []byte) (outRecord, error) {
	_, _, seq, ok := parseOutKey(k)
	if !ok {
		return outRecord{}, fmt.Errorf("malformed outbound key %q", k)
	}
	var rec outRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return outRecord{}, fmt.Errorf("decoding outbound %q: %w", k, err)
	}
	rec.Seq = seq
	return rec, nil
}
