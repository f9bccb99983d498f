#!/usr/bin/env bash
# `make test`: start the local Kafka broker if it is not running, run the whole
# suite (unit + integration against the real broker, Prometheus, Alertmanager),
# and stop the broker again if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."

started_kafka=0
if ! deploy/kafka/kafka.sh status >/dev/null 2>&1; then
  deploy/kafka/kafka.sh up
  started_kafka=1
fi
cleanup() { if [ "$started_kafka" = 1 ]; then deploy/kafka/kafka.sh down || true; fi; }
trap cleanup EXIT

.venv/bin/python -m pytest "$@"
