#!/usr/bin/env bash
# `make demo`: a local Kafka broker, the infersight daemon, and simulated traffic
# for three models in which credit-risk's feature f3 shifts by one standard
# deviation half-way. Shows the drift alert firing and an excerpt of /metrics,
# then stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${DEMO_METRICS_PORT:-9108}"
TOPIC="demo-$(date +%s)"
RUN_DIR=.run
LOG="$RUN_DIR/demo-daemon.log"
mkdir -p "$RUN_DIR"

started_kafka=0
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"; wait "$daemon_pid" || true
  fi
  if [ "$started_kafka" = 1 ]; then deploy/kafka/kafka.sh down >/dev/null || true; fi
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/5 local Apache Kafka broker"
if deploy/kafka/kafka.sh status >/dev/null 2>&1; then echo "already running; leaving it up afterwards"
else deploy/kafka/kafka.sh up; started_kafka=1; fi

step "2/5 infersight daemon on topic $TOPIC (metrics on :$PORT, log in $LOG)"
.venv/bin/infersight run --config deploy/demo-config.yaml --topic "$TOPIC" --group-id "$TOPIC" \
  --metrics-port "$PORT" --metrics-host 127.0.0.1 >"$LOG" 2>&1 &
daemon_pid=$!
for _ in $(seq 60); do grep -q "connected to" "$LOG" && break; sleep 0.5; done
grep "connected to" "$LOG" || { echo "daemon did not connect:"; cat "$LOG"; exit 1; }

step "3/5 simulated traffic: 3 models x 8000 records; credit-risk feature f3 shifts +1 sd at record 3000"
.venv/bin/infersight simulate --topic "$TOPIC" --scenario covariate_shift --feature f3 --magnitude 1.0 \
  --models 3 --records 8000 --shift-at 3000 --rate 6000 --seed 7

step "4/5 waiting for the drift alert"
for _ in $(seq 120); do grep -q "alert firing" "$LOG" && break; sleep 0.5; done
sleep 2  # let the daemon finish the last batches
if ! grep -q "alert firing" "$LOG"; then echo "no alert fired; daemon log:"; tail -20 "$LOG"; exit 1; fi
grep "alert " "$LOG" | sed -E 's/^[^ ]+ WARNING infersight.alerts: /  /'

step "5/5 excerpt of http://127.0.0.1:$PORT/metrics"
.venv/bin/python - "$PORT" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
always = ("infersight_records_total", "infersight_kafka_connected")
when_set = ("infersight_drift_detected{", "infersight_alert_active{")  # shown only where they are 1
for line in text.splitlines():
    if line.startswith(always) or (line.startswith(when_set) and line.endswith(" 1.0")):
        print("  " + line)
    elif line.startswith("infersight_drift_score{") and 'feature="f3",model="credit-risk"' in line:
        print("  " + line)
PY
echo; echo "Done. The daemon is stopped$( [ "$started_kafka" = 1 ] && echo ' and so is the broker')."
