package mqttconn

import (
	"errors"
	"fmt"
)

// Errors of Publish and Ack that callers branch on.
var (
	// ErrNotConnected means there was no connection to the broker when the request was made;
	// nothing was sent.
	ErrNotConnected = errors.New("not connected to the MQTT broker")
	// ErrConnectionLost means the connection broke before the broker confirmed. A published
	// QoS 1/2 message stays in the session and may still be delivered after the reconnect; an
	// acknowledgement was not sent, so the broker redelivers the message.
	ErrConnectionLost = errors.New("connection to the MQTT broker lost before it confirmed")
)

// Reason codes of MQTT v5 acknowledgements that callers look at.
const (
	// ReasonNoMatchingSubscribers (0x10) is a success: the broker took the message but no
	// subscription matched, so nobody will receive it.
	ReasonNoMatchingSubscribers byte = 0x10
	// ReasonPacketIDInUse (0x91): the broker still holds an unfinished flow under the packet
	// identifier (for example from before a restart with an in-memory session state).
	ReasonPacketIDInUse byte = 0x91
	// ReasonQuotaExceeded (0x97): the broker is over a limit for now.
	ReasonQuotaExceeded byte = 0x97
)

// ReasonCodeError reports an acknowledgement (PUBACK, PUBREC or PUBCOMP) whose reason code is
// 0x80 or more: the broker did not take the message.
type ReasonCodeError struct {
	Code   byte
	Reason string // the reason string the broker sent, if any
}

func (e *ReasonCodeError) Error() string {
	s := fmt.Sprintf("broker refused the message: reason code 0x%02x (%s)", e.Code, reasonName(e.Code))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Transient reports whether the same message may well be taken if sent again soon: the
// broker is over a quota, or a packet identifier was still in use.
func (e *ReasonCodeError) Transient() bool {
	switch e.Code {
	case ReasonPacketIDInUse, ReasonQuotaExceeded, 0x89: // 0x89 server busy
		return true
	}
	return false
}

func reasonName(code byte) string {
	switch code {
	case 0x00:
		return "success"
	case ReasonNoMatchingSubscribers:
		return "no matching subscribers"
	case 0x80:
		return "unspecified error"
	case 0x83:
		return "implementation specific error"
	case 0x87:
		return "not authorized"
	case 0x89:
		return "server busy"
	case 0x90:
		return "topic name invalid"
	case ReasonPacketIDInUse:
		return "packet identifier in use"
	case 0x92:
		return "packet identifier not found"
	case ReasonQuotaExceeded:
		return "quota exceeded"
	case 0x99:
		return "payload format invalid"
	default:
		return "unknown"
	}
}
