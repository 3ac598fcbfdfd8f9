package testutil

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"

	"github.com/lpsdev/lps/alarm"
)

// LastAlarm is an upstream that counts the alarms it received, keeps the last one and answers
// 200 with Answer.
type LastAlarm struct {
	Answer string

	mu   sync.Mutex
	n    int
	last alarm.Alarm
}

func (b *LastAlarm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var a alarm.Alarm
	json.NewDecoder(r.Body).Decode(&a)
	b.mu.Lock()
	b.n++
	b.last = a
	b.mu.Unlock()
	io.WriteString(w, b.Answer)
}

// Last returns how many alarms arrived and the last of them.
func (b *LastAlarm) Last() (int, alarm.Alarm) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.last
}
