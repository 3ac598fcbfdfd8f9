package tcptune_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/lpsdev/lps/tcptune"
)

func ExampleListen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Backlog 0 asks for DefaultBacklog, capped by net.core.somaxconn.
	ln, err := tcptune.Listen(ctx, "tcp", "127.0.0.1:0", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()

	served := make(chan struct{})
	go func() {
		defer close(served)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadString('\n')
		fmt.Fprint(conn, "hello, "+line)
	}()

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "lps\n")
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	fmt.Print(reply)
	<-served
	// Output: hello, lps
}

func ExampleReadSettings() {
	// A proc tree with the settings behind the original system's
	// 15-second stalls; ReadSettings("") reads the real /proc.
	procRoot, err := os.MkdirTemp("", "proc")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(procRoot)
	for file, value := range map[string]string{
		"net/core/somaxconn":             "128",
		"net/ipv4/tcp_max_syn_backlog":   "128",
		"net/ipv4/tcp_abort_on_overflow": "0",
		"net/ipv4/ip_local_port_range":   "32768\t60999",
	} {
		path := filepath.Join(procRoot, "sys", file)
		os.MkdirAll(filepath.Dir(path), 0o755)
		os.WriteFile(path, []byte(value+"\n"), 0o644)
	}

	s, err := tcptune.ReadSettings(procRoot)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("somaxconn:", s.SoMaxConn, "ports:", s.LocalPortRange)
	fmt.Println("fin timeout known:", s.Known(tcptune.KeyTCPFinTimeout))
	fmt.Println("backlog granted:", s.EffectiveBacklog(tcptune.DefaultBacklog))
	for _, w := range s.Warnings(tcptune.DefaultBacklog) {
		fmt.Println("warning:", w)
	}
	// Output:
	// somaxconn: 128 ports: [32768 60999]
	// fin timeout known: false
	// backlog granted: 128
	// warning: net.core.somaxconn=128 caps the requested listen backlog of 8192 at 128; raise it to at least 8192 (in a container, through its sysctls) to get the whole queue
	// warning: net.ipv4.tcp_abort_on_overflow=0 while the listen queue can fill (net.core.somaxconn=128, net.ipv4.tcp_max_syn_backlog=128 below the backlog of 8192): a full queue then drops connection attempts silently and clients stall for seconds until they retransmit (the original system's 15-second delays); set net.ipv4.tcp_abort_on_overflow=1 so they are refused at once, and raise the limits
}
