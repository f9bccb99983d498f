#!/usr/bin/env bash
# Install the system packages the integration tests use: Debian's prometheus
# (prometheus + promtool) and prometheus-alertmanager (alertmanager + amtool).
# Java 17 and Maven (for the local Kafka broker) are checked by deploy/kafka/kafka.sh.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-system-deps: installing ${missing[*]} (Debian packages)"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "install-system-deps: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1
fi
command -v apt-get >/dev/null 2>&1 || { echo "install-system-deps: no apt-get; install ${missing[*]} by hand" >&2; exit 1; }
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages enable system services; the tests start their own instances.
for unit in prometheus prometheus-alertmanager prometheus-node-exporter; do
  (command -v systemctl >/dev/null 2>&1 && $SUDO systemctl disable --now "$unit" >/dev/null 2>&1) || true
done
