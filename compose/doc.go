// Package compose holds the Docker Compose topologies of the LPS, every service from the one
// lps image (../Dockerfile):
//
//   - baseline.yml: ars-comp-1-1..3 -> ars-comp-2-1..3 -> ars-comp-3 (rast-sim), the original's
//     docker-compose-legacy.yml;
//   - lps.yml: ars-comp-1-1..3 -> proxy1-1..3 (http2mqtt) -> broker -> proxy2-1..3 (mqtt2http)
//     -> ars-comp-2-1..3 -> ars-comp-3, the original's docker-compose-ng.yml, with the embedded
//     broker on a named volume;
//   - baseline.wan.yml and lps.wan.yml: overlays that shape the proxies' traffic like the
//     original's tc script (--wan-profile, NET_ADMIN).
//
// Its test builds the image and brings each topology up on the machine's Docker engine with a
// project name of its own and free host ports. It sends alarms (the LPS one through an outage
// of ars-comp-2-1 and proxy2-2) and checks at rast-sim that each arrived exactly once; it runs
// the baseline with its WAN overlay too, and a role without NET_ADMIN. It also brings lps.yml up
// as a fresh clone would, with no logs/ folder (Docker creates one the services cannot write),
// and checks that every service is healthy and says so once. It leaves no container,
// network, volume or image behind. It is skipped without a Docker engine unless
// LPS_REQUIRE_DOCKER=1.
//
// Every topology, and a config check of every file, runs under both docker compose v2 and
// docker-compose v1 (subtests v2 and v1), one after the other. Without one of them the test
// runs with the other, or fails when LPS_REQUIRE_DOCKER=1; ../scripts/install-compose-v2.sh
// builds v2 from source. LPS_COMPOSE names the commands to use instead, separated by commas
// ("docker compose" tests v2 only).
package compose
