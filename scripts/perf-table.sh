#!/usr/bin/env bash
# perf-table.sh: the throughput table of issue 15, measured from outside on this machine.
#
# For each configuration it starts `lps up` (every role in one process, ephemeral ports),
# sends ALARMS alarms from DEVICES closed-model devices with no think time, waits until
# rast-sim has every acked alarm (lps load --verify), and prints one row: acked/s (first send
# to last ack), delivered end to end/s (first send to the moment rast-sim had them all; the
# poll's resolution is 0.2 s), latency p50/p99, lost, duplicated, and the CPU seconds the
# `lps up` process used per 1,000 alarms (utime+stime from /proc/PID/stat); for the LPS also how
# evenly the broker spread the alarms over the three mqtt2http (the largest deviation of one
# consumer's share from the mean, from lps_broker_shared_deliveries_total). "vs" is a row's
# delivered rate against the last baseline row before it in the same round (issue 15's ratio:
# the machine's speed drifts between rounds, so a ratio is only fair within one round).
#
#   scripts/perf-table.sh                      # the default rows
#   LPS=/tmp/lps scripts/perf-table.sh "lps --model none --max-inflight 32"
#   REPEAT=3 DURATION=10s scripts/perf-table.sh   # every row three times, interleaved
#   RATE=300 DURATION=30s scripts/perf-table.sh    # open model: latency at a rate every row keeps up with
# Each argument is one row: a topology and the further flags of `lps up`, optionally after
# "bin=PATH " to run another lps binary for that row (an older build, for a before/after table). On a shared 2-core
# machine one run varies by ±15 %: compare rows of the same round, or the medians of rounds.
set -euo pipefail
LPS=${LPS:-$(mktemp -d)/lps}
[ -x "$LPS" ] || (cd "$(dirname "$0")/.." && CGO_ENABLED=0 go build -o "$LPS" .)
DURATION=${DURATION:-3s}
DEVICES=${DEVICES:-60}
REPEAT=${REPEAT:-1}
RATE=${RATE:-}
if [ -n "$RATE" ]; then model=(--rate "$RATE"); else model=(--devices "$DEVICES" --think 1us); fi
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(
  "baseline --model none"
  "lps --model none"
  "lps --model none --max-inflight 1"
  "baseline"
  "lps"
  "lps --max-inflight 1"
)
clk=$(getconf CLK_TCK)
printf '%-45s %9s %9s %6s %8s %8s %5s %5s %9s %6s\n' run acked/s deliv/s vs p50 p99 lost dup cpu-s/1k fair%
for round in $(seq "$REPEAT"); do
basedeliv=
for row in "${rows[@]}"; do
  bin=$LPS
  if [[ $row == bin=* ]]; then read -r binarg rest <<<"$row"; bin=${binarg#bin=}; else rest=$row; fi
  read -r topo flags <<<"$rest"
  out=$(mktemp)
  # shellcheck disable=SC2086
  "$bin" up --topology "$topo" $flags --ephemeral-ports --status-every 0 --log-level warn >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q '^ready' "$out" && break; sleep 0.1; done
  grep -q '^ready' "$out" || { cat "$out"; kill "$pid"; exit 1; }
  urls=$(grep -o 'lps load .*--url [^ ]*' "$out" | sed 's/.*--url //')
  sim=$(awk '$2=="rast-sim"{print $3}' "$out")
  cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  t0=$(date +%s.%N)
  res=$("$LPS" load "${model[@]}" --duration "$DURATION" --progress 0 --verify-quiet 60s \
    --url "$urls" --verify "$sim" 2>&1 || true)
  t1=$(date +%s.%N)
  cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  fair=-
  admin=$(grep -o '(admin http://[^)]*' "$out" | sed 's/(admin //' || true)
  if [ -n "$admin" ]; then
    fair=$(curl -s "$admin/metrics" | awk -F'[{}" ]+' '/^lps_broker_shared_deliveries_total/ && /\+\/message/ {n[$0]=$NF; sum+=$NF; k++}
      END {if (k==0) {print "-"; exit}; m=sum/k; d=0; for (i in n) {x=(n[i]-m)/m*100; if (x<0) x=-x; if (x>d) d=x}; printf "%.1f", d}')
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  acked=$(awk '$1=="acked"{print $2}' <<<"$res")
  persec=$(awk '$1=="throughput"{print $2}' <<<"$res")
  p50=$(awk '$2=="p50"{print $3}' <<<"$res"); p99=$(awk '$2=="p99"{print $3}' <<<"$res")
  lost=$(awk '$1=="lost"{print $2}' <<<"$res"); dup=$(awk '$1=="duplicated"{print $2}' <<<"$res")
  # The load's own start-up and the verify's last poll are inside t0..t1: an upper bound of
  # the time to deliver, so the delivered rate is a lower bound.
  deliv=$(echo "$acked / ($t1 - $t0)" | bc -l)
  [ "$topo" = baseline ] && basedeliv=$deliv
  vs=-
  [ -n "$basedeliv" ] && vs=$(printf '%.0f%%' "$(echo "$deliv / $basedeliv * 100" | bc -l)")
  printf '%-45s %9s %9.0f %6s %8s %8s %5s %5s %9.3f %6s\n' "$row" "$persec" "$deliv" "$vs" \
    "$p50" "$p99" "$lost" "$dup" "$(echo "($cpu1 - $cpu0) / $clk / $acked * 1000" | bc -l)" "$fair"
  rm -f "$out"
done
done
