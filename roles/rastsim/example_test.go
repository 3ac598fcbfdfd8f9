package rastsim_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/rastsim"
)

// The mascots2022 model: the more requests are in flight when a command arrives, the faster the
// original backend answered; from four on the prediction is negative and the simulator answers
// at once.
func ExamplePredict() {
	for pr1 := 0; pr1 <= 4; pr1++ {
		fmt.Printf("PR1=%d: %.4f s\n", pr1, rastsim.Predict(pr1, 0, rastsim.AlarmRequestType))
	}
	// Output:
	// PR1=0: 0.0353 s
	// PR1=1: 0.0249 s
	// PR1=2: 0.0145 s
	// PR1=3: 0.0041 s
	// PR1=4: -0.0063 s
}

// An exact name wins; otherwise the first name in file order that contains the path, ignoring
// case, as the original matched.
func ExampleMapping_Lookup() {
	m, err := rastsim.LoadMapping(strings.NewReader(`{"ID_GET_TERMINPLAN_GRUPPE": 96, "ID_GET_TERMINPLAN": 97}`))
	if err != nil {
		panic(err)
	}
	for _, path := range []string{"/ID_GET_TERMINPLAN", "/terminplan", "/gruppe", "/NOPE"} {
		name, typ, ok := m.Lookup(path)
		fmt.Println(path, "->", name, typ, ok)
	}
	// Output:
	// /ID_GET_TERMINPLAN -> ID_GET_TERMINPLAN 97 true
	// /terminplan -> ID_GET_TERMINPLAN_GRUPPE 96 true
	// /gruppe -> ID_GET_TERMINPLAN_GRUPPE 96 true
	// /NOPE ->  0 false
}

// A simulator in-process, as tests and `lps experiment` run it.
func ExampleNew() {
	sim, err := rastsim.New(rastsim.Config{Server: roles.Server{Listen: "127.0.0.1:0"}, Model: rastsim.ModelNone})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	defer func() { cancel(); <-done }()

	req, _ := http.NewRequest(http.MethodPost, "http://"+sim.Addr().String()+"/ID_REQ_KC_STORE7D3BPACKET", nil)
	req.Header.Set("Request-Id", "alarm-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body), resp.Header.Get("X-Pred-Process-Time"))
	fmt.Printf("%+v\n", sim.Counts())
	// Output:
	// 200 Success 0
	// {Received:1 Distinct:1 Duplicates:0 InFlight:0 ByCommand:map[ID_REQ_KC_STORE7D3BPACKET:{Received:1 Duplicates:0}]}
}
