# make image          build the static lps binary and the FROM-scratch image $(IMAGE); offline, nothing is pulled
# make lps-up         image + logs/ + the LPS topology (compose/lps.yml) in the background, project "lps"
# make baseline-up    image + logs/ + the baseline topology (compose/baseline.yml), project "lps-baseline"
# make lps-down       stop and remove the LPS containers; the broker's volume (queued alarms) stays
# make baseline-down  the same for the baseline
# make test-compose   the compose test on this machine's Docker engine (fails without one)

IMAGE   ?= lps:latest
VERSION ?= $(shell git describe --always 2>/dev/null || echo dev)
GO      ?= go
DOCKER  ?= docker
# docker compose v2 when the plugin is there, else the docker-compose v1 command.
COMPOSE ?= $(shell $(DOCKER) compose version >/dev/null 2>&1 && echo "$(DOCKER) compose" || echo docker-compose)

.PHONY: lps image logdir lps-up lps-down baseline-up baseline-down test-compose

lps:
	CGO_ENABLED=0 $(GO) build -buildvcs=true -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o lps .

# The image's lps leaves out the experiment kit (-tags noexperiment): its report's plotting
# library is 10.4 of the full binary's 24.6 MB, and experiments run on the host, not in a container.
image:
	CGO_ENABLED=0 $(GO) build -tags noexperiment -buildvcs=true -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o lps .
	$(DOCKER) build -t $(IMAGE) .

# Every container writes logs/<service>.log as uid 65532; Docker would create a missing logs/
# owned by root, which that user cannot write.
logdir:
	mkdir -p logs && chmod 1777 logs

lps-up: image logdir
	LPS_IMAGE=$(IMAGE) $(COMPOSE) -p lps -f compose/lps.yml up -d

lps-down:
	$(COMPOSE) -p lps -f compose/lps.yml down

baseline-up: image logdir
	LPS_IMAGE=$(IMAGE) $(COMPOSE) -p lps-baseline -f compose/baseline.yml up -d

baseline-down:
	$(COMPOSE) -p lps-baseline -f compose/baseline.yml down

test-compose:
	LPS_REQUIRE_DOCKER=1 $(GO) test -count=1 -v -timeout 15m ./compose/
