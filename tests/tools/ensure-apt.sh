#!/usr/bin/env bash
# Install the Debian packages the test suite drives (a browser, Prometheus and promtool, ...) when their
# commands are missing. Arguments are COMMAND=PACKAGE pairs. Root runs apt-get itself; anyone else gets sudo.
set -euo pipefail
missing=()
for pair in "$@"; do
  cmd=${pair%%=*}; pkg=${pair#*=}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]} for the tests (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
