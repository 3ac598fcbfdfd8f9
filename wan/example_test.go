package wan_test

import (
	"fmt"

	"github.com/lpsdev/lps/wan"
)

func ExampleParseProfile() {
	// A builtin profile by name.
	p, err := wan.ParseProfile("corporate-wan")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Name, p)

	// A builtin with one value changed.
	p, _ = wan.ParseProfile("corporate-wan,delay=80ms")
	fmt.Println(p.Name, p.Delay, p.Jitter)

	// An inline spec.
	p, _ = wan.ParseProfile("rate-out=1mbit, rate-in=2mbit, delay=40ms, jitter=10ms")
	fmt.Println(p.Name, p.EgressRate, p.IngressRate, p.Delay, p.Jitter, p.LossPercent)

	// Errors name the key and the value.
	_, err = wan.ParseProfile("rate-out=5mbps")
	fmt.Println(err)
	// Output:
	// corporate-wan rate-out=5mbit,rate-in=100mbit,delay=30ms,jitter=3ms,loss=0.01%
	// corporate-wan+custom 80ms 3ms
	// custom 1000000 2000000 40ms 10ms 0
	// parsing wan profile "rate-out=5mbps": rate-out="5mbps": byte unit "5mbps" is ambiguous (tc reads mbps as megabytes per second); write bits, e.g. 5mbit
}
