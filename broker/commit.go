package broker

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// committer is the store's group commit. Every change to the database is
// handed to it in the order the broker makes them (the dispatcher enqueues
// under its lock), and one goroutine writes whatever has gathered since its
// last write in one bbolt transaction, fsynced.
//
// Why: bbolt fsyncs each transaction twice (pages, then meta page), and a
// message costs about six changes on its way through the broker (stored for
// the group, moved to a subscriber, PUBREC state, completion, the
// publisher's inbound QoS 2 record and its deletion). One synchronous
// transaction each, under the dispatcher's lock, made fsync the broker's
// speed limit, which is why it used to run with NoSync. Gathered, a
// transaction carries the changes of every connection that were made while
// the previous one was being written, and its cost is shared: the more load,
// the more each fsync carries.
//
// Who waits: a publisher's message must be on disk before it is
// acknowledged, so OnPublish waits for the flush that carries it, outside
// the dispatcher's lock (other connections go on meanwhile). Changes that
// only track delivery (a subscriber's acknowledgement, a move from a group
// queue to a member) are not waited for: lost with the machine, they make a
// restart deliver a message again, never lose one.
type committer struct {
	st  *store
	met *metrics

	mu      sync.Mutex
	wake    *sync.Cond
	pending []op
	next    *flush // carries pending; replaced when the writer takes them
	writing *flush // the flush being written, nil between writes
	closing bool
	done    chan struct{} // closed when the writer returned

	// Callbacks of written flushes (then), run in order by their own
	// goroutine so that the writer never waits for what they lock.
	calls     []func()
	callWake  *sync.Cond
	callsDone chan struct{}

	beforeApply func([]op) // tests only: called before each transaction
}

// flush is one transaction of the committer: waiting on it returns when its
// changes are on disk, or with the error that kept them off.
type flush struct {
	done chan struct{}
	err  error

	// guarded by committer.mu
	written   bool
	callbacks []func(error)
}

func newFlush() *flush { return &flush{done: make(chan struct{})} }

// isDone reports whether f is written. A nil flush carried nothing.
func (f *flush) isDone() bool {
	if f == nil {
		return true
	}
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// wait waits until f is written. A nil flush carried nothing and is done.
func (f *flush) wait() error {
	if f == nil {
		return nil
	}
	<-f.done
	return f.err
}

// start starts the writer.
func (c *committer) start(st *store, met *metrics) {
	c.st, c.met = st, met
	if met != nil {
		met.storeUsedBytes.Set(float64(st.usedBytes()))
	}
	c.wake = sync.NewCond(&c.mu)
	c.callWake = sync.NewCond(&c.mu)
	c.next = newFlush()
	c.done = make(chan struct{})
	c.callsDone = make(chan struct{})
	go c.run()
	go c.runCalls()
}

// then calls fn with f's outcome once f is written, on the committer's
// callback goroutine, in the order of the flushes. fn may lock what it
// likes but must not wait for a later flush. A nil f means "after every
// change enqueued so far": fn runs after the callbacks of every earlier
// flush (with a nil error), so that acknowledgements that need no write of
// their own keep their place among those that do.
func (c *committer) then(f *flush, fn func(error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f == nil {
		switch {
		case len(c.pending) > 0:
			f = c.next
		case c.writing != nil:
			f = c.writing
		default:
			c.queueCall(fn, nil)
			return
		}
	}
	if f.written {
		c.queueCall(fn, f.err)
		return
	}
	f.callbacks = append(f.callbacks, fn)
}

// queueCall queues fn(err) for the callback goroutine. c.mu must be held.
func (c *committer) queueCall(fn func(error), err error) {
	c.calls = append(c.calls, func() { fn(err) })
	c.callWake.Signal()
}

// finish marks f written with err, releases its waiters and queues its
// callbacks. c.mu must be held.
func (c *committer) finish(f *flush, err error) {
	f.err, f.written = err, true
	close(f.done)
	for _, fn := range f.callbacks {
		c.queueCall(fn, err)
	}
	f.callbacks = nil
}

// runCalls runs the callbacks of written flushes until the writer ended and
// none is left.
func (c *committer) runCalls() {
	defer close(c.callsDone)
	for {
		c.mu.Lock()
		for len(c.calls) == 0 && !c.writerDone() {
			c.callWake.Wait()
		}
		calls := c.calls
		c.calls = nil
		c.mu.Unlock()
		if len(calls) == 0 {
			return
		}
		for _, call := range calls {
			call()
		}
	}
}

// writerDone reports whether the writer returned.
func (c *committer) writerDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// enqueue hands b's changes to the writer and returns the flush that will
// carry them. Flushes complete in the order of their changes: when one is
// done, so is every earlier one. A nil committer (in-memory broker) or an
// empty batch has nothing to wait for.
func (c *committer) enqueue(b *batch) *flush {
	if c == nil || c.wake == nil || len(b.ops) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return &flush{done: closedChan, err: errStoreClosed, written: true}
	}
	c.pending = append(c.pending, b.ops...)
	c.wake.Signal()
	return c.next
}

// unmapEvery is how often the writer drops the file's pages from the
// broker's address space (store.unmap): what a tenth of a second of
// transactions and refills touches is all the file adds to its RSS.
const unmapEvery = 100 * time.Millisecond

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// run writes what gathered, one transaction at a time, until stop.
func (c *committer) run() {
	defer func() {
		c.mu.Lock()
		close(c.done)
		c.callWake.Broadcast()
		c.mu.Unlock()
	}()
	var lastUnmap time.Time
	for {
		c.mu.Lock()
		for len(c.pending) == 0 && !c.closing {
			c.wake.Wait()
		}
		if len(c.pending) == 0 { // closing, and everything written
			c.mu.Unlock()
			return
		}
		ops, f := c.pending, c.next
		c.pending, c.next, c.writing = nil, newFlush(), f
		hook := c.beforeApply
		c.mu.Unlock()
		if hook != nil {
			hook(ops)
		}

		start := time.Now()
		err := c.st.apply(ops)
		if c.met != nil {
			c.met.storeCommits.Inc()
			c.met.storeChanges.Observe(float64(len(ops)))
			c.met.storeCommitSeconds.Observe(time.Since(start).Seconds())
		}
		c.st.measure()
		if c.met != nil {
			c.met.storeUsedBytes.Set(float64(c.st.usedBytes()))
		}
		if time.Since(lastUnmap) >= unmapEvery {
			c.st.unmap()
			lastUnmap = time.Now()
		}
		if err != nil {
			c.st.logError("writing to data dir; publishes waiting on it are refused, and a restart may deliver messages again",
				ops[0].bucket, err)
		}
		c.mu.Lock()
		c.finish(f, err)
		c.writing = nil
		c.mu.Unlock()
	}
}

// stop ends the writer. Graceful, it first writes what is pending;
// otherwise what is pending is dropped (as a crash would drop it) and its
// waiters get errStoreClosed. Later enqueues fail with errStoreClosed.
func (c *committer) stop(graceful bool) {
	if c.wake == nil {
		return
	}
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		if !graceful && len(c.pending) > 0 {
			c.st.log.Warn("closing data dir without writing pending changes", zap.Int("changes", len(c.pending)))
			c.pending = nil
			c.finish(c.next, errStoreClosed)
		}
		c.wake.Broadcast()
	}
	c.mu.Unlock()
	<-c.done
	<-c.callsDone
}
