package broker

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lpsdev/lps/mqttconn"
)

// Queue is a durable queue declared at start: the shared subscription group
// $share/<Group>/<Filter>, which takes and keeps matching messages whether or
// not a member has ever subscribed.
//
// Without it a shared group exists only while someone is subscribed to it,
// so a message published before the first consumer subscribed matches
// nothing and is refused (0x10); with it such messages wait in the group's
// queue, in the data dir, until members subscribe and take them, in order
// and round robin as any group's messages.
type Queue struct{ Group, Filter string }

// ParseQueue parses "GROUP:FILTER", e.g. "legacy_proxy:+/message". The group
// ends at the first colon, so a group declared this way has none in its name;
// the filter may have some.
func ParseQueue(s string) (Queue, error) {
	group, filter, ok := strings.Cut(s, ":")
	if !ok {
		return Queue{}, fmt.Errorf("queue %q is not GROUP:FILTER (e.g. legacy_proxy:+/message)", s)
	}
	q := Queue{Group: group, Filter: filter}
	if err := q.validate(); err != nil {
		return Queue{}, err
	}
	return q, nil
}

// String returns the queue as ParseQueue reads it, "GROUP:FILTER".
func (q Queue) String() string { return q.Group + ":" + q.Filter }

// shared returns the shared subscription filter of the queue, which names
// its group in the dispatcher and in the data dir.
func (q Queue) shared() string { return mqttconn.SharedFilter(q.Group, q.Filter) }

func (q Queue) validate() error {
	if err := mqttconn.ValidateShareGroup(q.Group); err != nil {
		return fmt.Errorf("queue %q: %w", q, err)
	}
	if err := mqttconn.ValidateFilter(q.Filter); err != nil {
		return fmt.Errorf("queue %q: %w", q, err)
	}
	return nil
}

// validateQueues checks each queue and that none is declared twice.
func validateQueues(qs []Queue) error {
	seen := make(map[Queue]bool, len(qs))
	var errs []error
	for _, q := range qs {
		if err := q.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[q] {
			errs = append(errs, fmt.Errorf("queue %q declared twice", q))
		}
		seen[q] = true
	}
	return errors.Join(errs...)
}
