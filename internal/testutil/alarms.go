package testutil

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"

	"github.com/lpsdev/lps/roles"
)

// LastAlarm is an upstream that counts the alarms it received, keeps the last one and answers
// 200 with Answer.
type LastAlarm struct {
	Answer string

	mu    sync.Mutex
	n     int
	alarm roles.Alarm
}

func (b *LastAlarm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var a roles.Alarm
	json.NewDecoder(r.Body).Decode(&a)
	b.mu.Lock()
	b.n++
	b.alarm = a
	b.mu.Unlock()
	io.WriteString(w, b.Answer)
}

// Last returns how many alarms arrived and the last of them.
func (b *LastAlarm) Last() (int, roles.Alarm) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.alarm
}
