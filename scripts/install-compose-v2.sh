#!/usr/bin/env bash
# Installs Docker Compose v2 as a Docker CLI plugin ("docker compose"), built from source through
# the Go module proxy: the machines this project runs on reach no other registry, so the
# released binaries cannot be downloaded. Idempotent: does nothing when "docker compose version"
# already works.
#
#   scripts/install-compose-v2.sh          # as root: /usr/local/lib/docker/cli-plugins
#                                          # otherwise: ~/.docker/cli-plugins
#
# Environment: COMPOSE_V2_VERSION (the pinned version below), COMPOSE_V2_PLUGIN_DIR (where the
# plugin goes). Needs docker (the CLI) and go >= 1.24; building takes a few minutes and about
# 1.5 GB of Go module and build cache when the cache is cold.
set -euo pipefail

version="${COMPOSE_V2_VERSION:-v2.40.3}"
module=github.com/docker/compose/v2

if ! command -v docker >/dev/null 2>&1; then
  echo "install-compose-v2: no docker command: install Docker first" >&2
  exit 1
fi
if have=$(docker compose version 2>/dev/null); then
  echo "install-compose-v2: docker compose already works ($have); nothing to do"
  exit 0
fi

if [ -n "${COMPOSE_V2_PLUGIN_DIR:-}" ]; then
  dir="$COMPOSE_V2_PLUGIN_DIR"
elif [ "$(id -u)" = 0 ]; then
  dir=/usr/local/lib/docker/cli-plugins # searched by the docker CLI for every user
else
  dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
fi

# "go install $module/cmd@$version" refuses: compose's go.mod has exclude directives. So the
# module's source is fetched from the module proxy, verified against go.sum's checksum database
# as any module is, and built as the main module, as compose's own Makefile builds it.
export GOFLAGS= GOWORK=off CGO_ENABLED=0
start=$(date +%s)
echo "install-compose-v2: building docker compose $version from $module (go: $(go version))"
go mod download "$module@$version"
src="$(go env GOMODCACHE)/$module@$version"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$src" "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && go build -trimpath \
  -ldflags "-s -w -X $module/internal.Version=$version" \
  -o "$work/docker-compose" ./cmd)

mkdir -p "$dir"
install -m 0755 "$work/docker-compose" "$dir/docker-compose"
if ! have=$(docker compose version 2>&1); then
  echo "install-compose-v2: installed $dir/docker-compose, but docker compose version fails: $have" >&2
  exit 1
fi
echo "install-compose-v2: installed $dir/docker-compose in $(( $(date +%s) - start )) s: $have"
