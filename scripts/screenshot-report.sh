#!/usr/bin/env bash
# Takes a screenshot of an experiment's report.html with headless Chromium, to look at the page
# as a reader would (and to check that it needs nothing from the network: every host name is
# made unresolvable, so a page that tried to fetch a font or a stylesheet would show it).
#
#   scripts/screenshot-report.sh REPORT.html OUT.png [WIDTH [HEIGHT]]
#
# WIDTH defaults to 1000 CSS pixels (the page is laid out for about 900) and HEIGHT to 6000:
# Chromium captures the window, not the whole page, so the height must reach past the last plot.
# Needs Debian's chromium (apt-get install -y chromium).
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 4 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTH [HEIGHT]]" >&2
  exit 2
fi
report="$1"
out="$2"
width="${3:-1000}"
height="${4:-6000}"

if [ ! -f "$report" ]; then
  echo "screenshot-report: $report: no such file" >&2
  exit 1
fi
browser=""
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then
    browser="$b"
    break
  fi
done
if [ -z "$browser" ]; then
  echo "screenshot-report: no chromium: install Debian's chromium (apt-get install -y chromium)" >&2
  exit 1
fi

# A profile of its own, removed afterwards, so that the screenshot does not depend on (or
# change) anyone's browser settings.
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT

abs="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$profile" --no-first-run --disable-extensions --disable-sync \
  --disable-background-networking --disable-component-update --disable-default-apps \
  --host-resolver-rules="MAP * ~NOTFOUND" \
  --window-size="$width,$height" --screenshot="$out_abs" "file://$abs" 2>"$profile/stderr" || {
  cat "$profile/stderr" >&2
  exit 1
}
if [ ! -s "$out_abs" ]; then
  echo "screenshot-report: chromium wrote no screenshot" >&2
  cat "$profile/stderr" >&2
  exit 1
fi
echo "$out"
