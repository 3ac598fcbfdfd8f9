// Package faults breaks a running LPS the way production does and checks that no alarm
// answered 2xx is lost (SPEC section 8).
//
// It has four parts:
//
//   - Process runs a built binary (lps, or Mosquitto) as a child process in its own process
//     group, logs its output to a file, waits for readiness, and stops it gracefully (Term,
//     SIGTERM), abruptly (Kill, SIGKILL) and starts it again with the same arguments and ports.
//   - Proxy is a TCP proxy that stands for the network between two parts: Cut drops every
//     connection and refuses new ones, Blackhole silences them, Restore heals the network.
//     FaultyUpstream is an HTTP proxy in front of the backend that answers 500 or answers late.
//   - Cluster starts the LPS topology as separate processes on loopback — rast-sim, three comp2,
//     the broker (the embedded one or Mosquitto), three mqtt2http and three http2mqtt each
//     reaching the broker through its own Proxy, three comp1 — and tells when its backlog has
//     drained (Drain) and what rast-sim received over all its runs (Received).
//   - Run drives alarms at a steady rate with loadgen (retry until 2xx), injects one Scenario's
//     fault, recovers, drains, and compares the load's ledger with rast-sim's per-Request-Id
//     counts: sent, acked, received, lost, duplicated, drain time.
//
// The suite in faults_test.go runs every Scenario against both brokers; `lps experiment` is
// meant to stand on the same parts. SigtermScenarios stop one process of each role gracefully
// (SIGTERM) under load and record how it exited (Shutdown); sigterm_test.go runs them on both
// brokers.
package faults
