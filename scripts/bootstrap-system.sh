#!/usr/bin/env bash
# Installs the system packages Switchboard's tests and tools use (Debian/Ubuntu names).
# Runs apt-get when root; otherwise prints the exact command to run and exits non-zero
# if something is missing. Usage: scripts/bootstrap-system.sh [runtime|test]
set -euo pipefail
profile="${1:-test}"

# command-name:debian-package
runtime_pkgs=("espeak-ng:espeak-ng")
test_pkgs=("sipp:sip-tester" "chromium:chromium" "redis-server:redis-server" "sox:sox")

wanted=("${runtime_pkgs[@]}")
[ "$profile" = "test" ] && wanted+=("${test_pkgs[@]}")

missing=()
for pair in "${wanted[@]}"; do
  cmd="${pair%%:*}"; pkg="${pair##*:}"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: system packages present (${profile})"
  exit 0
fi

cmdline="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing ${missing[*]} (apt-get, this can take a minute)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $cmdline -qq
else
  echo "bootstrap: missing system packages: ${missing[*]}" >&2
  echo "bootstrap: run as root:  sudo apt-get update && sudo $cmdline" >&2
  exit 1
fi
