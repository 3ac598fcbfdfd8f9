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
// the baseline with its WAN overlay too, and a role without NET_ADMIN. It leaves no container,
// network, volume or image behind. It is skipped without a Docker engine unless
// LPS_REQUIRE_DOCKER=1. LPS_COMPOSE picks the compose command ("docker compose" or
// "docker-compose"); by default v2 when present, else v1.
package compose
