#!/usr/bin/env bash
# Local single-node Apache Kafka 4.x (KRaft, broker+controller in one JVM) for
# development and tests. No Docker: the broker runs from jars that Maven
# resolves from Maven Central (deploy/kafka/pom.xml).
#
#   deploy/kafka/kafka.sh up       resolve jars, format storage once, start, wait until answering
#   deploy/kafka/kafka.sh down     stop (SIGTERM, then SIGKILL after 30 s); KAFKA_WIPE=1 also deletes data
#   deploy/kafka/kafka.sh status   exit 0 if a broker answers metadata requests on KAFKA_PORT
#   deploy/kafka/kafka.sh wait     wait (up to KAFKA_WAIT_SECS) until it answers
#
# Environment (all optional):
#   KAFKA_PORT             client listener on 127.0.0.1           (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (default 9093)
#   KAFKA_HOME_DIR         state dir: lib/ data/ logs/ pid        (default <repo>/.kafka)
#   KAFKA_DATA_DIR         log.dirs                               (default $KAFKA_HOME_DIR/data)
#   KAFKA_WAIT_SECS        readiness timeout for up/wait          (default 90)
#   KAFKA_HEAP_OPTS        JVM heap flags                         (default -Xms256m -Xmx768m)
#   KAFKA_PYTHON           python with kafka-python for the probe (default <repo>/.venv/bin/python)
#   KAFKA_WIPE=1           with `down`: delete the data dir too
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HOME_DIR="${KAFKA_HOME_DIR:-$REPO/.kafka}"
mkdir -p "$KAFKA_HOME_DIR"
KAFKA_HOME_DIR="$(cd "$KAFKA_HOME_DIR" && pwd)"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$KAFKA_HOME_DIR/data}"
case "$KAFKA_DATA_DIR" in /*) ;; *) KAFKA_DATA_DIR="$PWD/$KAFKA_DATA_DIR" ;; esac
KAFKA_WAIT_SECS="${KAFKA_WAIT_SECS:-90}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
KAFKA_PYTHON="${KAFKA_PYTHON:-$REPO/.venv/bin/python}"

POM="$HERE/pom.xml"
TEMPLATE="$HERE/server.properties.template"
LOG4J="$HERE/log4j2.properties"
LIB="$KAFKA_HOME_DIR/lib"
LOGS="$KAFKA_HOME_DIR/logs"
PROPS="$KAFKA_HOME_DIR/server.properties"
PIDFILE="$KAFKA_HOME_DIR/kafka.pid"
CLUSTER_ID_FILE="$KAFKA_HOME_DIR/cluster.id"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

say() { echo "kafka.sh: $*"; }
die() { echo "kafka.sh: ERROR: $*" >&2; exit 1; }

for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
  [[ "$p" =~ ^[0-9]+$ ]] || die "ports must be numbers (KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT)"
done
[[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

# ---------------------------------------------------------------- prerequisites

require_java() {
  command -v java >/dev/null 2>&1 ||
    die "'java' not found on PATH. The Kafka 4 broker needs a Java 17+ runtime (Debian: apt-get install -y openjdk-17-jre-headless)."
  local v major
  v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  major="${v%%.*}"
  [[ "$major" == 1 ]] && major="$(echo "$v" | cut -d. -f2)"
  if [[ "$major" =~ ^[0-9]+$ ]] && (( major < 17 )); then
    die "java $v found, but the Kafka 4 broker needs Java 17 or newer."
  fi
}

require_mvn() {
  command -v mvn >/dev/null 2>&1 ||
    die "'mvn' not found on PATH. It is needed once to fetch the Kafka jars from Maven Central (Debian: apt-get install -y maven)."
}

# ------------------------------------------------------------------------ jars

pom_stamp() { sha256sum "$POM" | cut -d' ' -f1; }

jars_ready() {
  [[ -f "$LIB/.stamp" && "$(cat "$LIB/.stamp")" == "$(pom_stamp)" ]] &&
    compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null
}

resolve_jars() {
  jars_ready && return 0
  require_mvn
  say "resolving Kafka jars from Maven Central into $LIB (first run only) ..."
  local tmp="$LIB.tmp.$$"
  rm -rf "$tmp"
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$KAFKA_HOME_DIR/mvn.log" 2>&1; then
    tail -n 40 "$KAFKA_HOME_DIR/mvn.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not resolve the Kafka jars (full output: $KAFKA_HOME_DIR/mvn.log)."
  fi
  pom_stamp >"$tmp/.stamp"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
}

kafka_version() {
  local j
  j="$(compgen -G "$LIB/kafka_2.13-*.jar" | head -n1 || true)"
  j="${j##*/kafka_2.13-}"
  echo "${j%.jar}"
}

# --------------------------------------------------------------------- process

# pid of the broker started from our server.properties, or nothing
broker_pid() {
  local pid
  if [[ -f "$PIDFILE" ]]; then
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
       tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $PROPS"; then
      echo "$pid"
      return 0
    fi
  fi
  # pid file lost or stale: look for a JVM started on exactly our properties file
  local d
  for d in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -qF "kafka.Kafka $PROPS"; then
      echo "${d#/proc/}" >"$PIDFILE"
      echo "${d#/proc/}"
      return 0
    fi
  done
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_owner() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null | head -n1 | sed -n 's/.*users:((\(.*\)))/\1/p'
}

# ----------------------------------------------------------------------- probe

PY_PROBE='
import logging, sys
logging.disable(logging.CRITICAL)
from kafka import KafkaAdminClient
try:
    admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], client_id="infersight-kafka-sh-probe",
                             request_timeout_ms=3000, bootstrap_timeout_ms=3000)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
except Exception as exc:
    print("%s: %s" % (type(exc).__name__, exc), file=sys.stderr)
    sys.exit(1)
live = [b for b in cluster.get("brokers", []) if not b.get("is_fenced", False)]
sys.exit(0 if live else 1)
'

have_py_probe() {
  [[ -x "$KAFKA_PYTHON" ]] && "$KAFKA_PYTHON" -c 'import kafka' >/dev/null 2>&1
}

# 0 when a broker on KAFKA_PORT answers a cluster-metadata request with at least
# one unfenced broker (not just an open port).
answering() {
  port_open "$KAFKA_PORT" || return 1
  if [[ -z "${_PROBE:-}" ]]; then
    if have_py_probe; then _PROBE=py; else _PROBE=java; fi
  fi
  if [[ "$_PROBE" == py ]]; then
    timeout 15 "$KAFKA_PYTHON" -c "$PY_PROBE" "$BOOTSTRAP" 2>/dev/null
  else
    # fallback without the venv: the jars' own BrokerApiVersionsCommand
    jars_ready || return 1
    local cfg="$KAFKA_HOME_DIR/probe.properties"
    printf 'request.timeout.ms=3000\ndefault.api.timeout.ms=5000\nsocket.connection.setup.timeout.ms=2000\n' >"$cfg"
    timeout 20 java -Xshare:auto -XX:TieredStopAtLevel=1 -Xmx128m -Dlog4j2.level=OFF \
      -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$LOGS" -cp "$LIB/*" \
      org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" \
      --command-config "$cfg" 2>/dev/null | grep -q "(id: "
  fi
}

# byte size of server.log when this start began: log_tail shows only newer lines
_LOG_OFFSET=0
log_tail() {
  local f
  if [[ -s "$LOGS/server.out" ]]; then
    echo "----- last lines of $LOGS/server.out -----" >&2
    tail -n "${1:-40}" "$LOGS/server.out" >&2
  fi
  f="$LOGS/server.log"
  if [[ -s "$f" ]] && (( $(stat -c %s "$f") > _LOG_OFFSET )); then
    echo "----- ERROR/FATAL lines of $f (this start) -----" >&2
    tail -c "+$((_LOG_OFFSET + 1))" "$f" | grep -E '^\[[^]]*\] (ERROR|FATAL)' | tail -n 15 >&2 || true
    echo "----- last lines of $f (this start) -----" >&2
    tail -c "+$((_LOG_OFFSET + 1))" "$f" | tail -n "${1:-40}" >&2
  fi
}

# wait_ready [pid]: wait until answering; fail early if the given pid dies
wait_ready() {
  local pid="${1:-}" deadline=$((SECONDS + KAFKA_WAIT_SECS))
  while (( SECONDS < deadline )); do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "kafka.sh: ERROR: the broker process (pid $pid) exited during startup." >&2
      log_tail 60
      rm -f "$PIDFILE"
      return 1
    fi
    answering && return 0
    sleep 0.5
  done
  echo "kafka.sh: ERROR: no broker answered on $BOOTSTRAP within ${KAFKA_WAIT_SECS}s." >&2
  log_tail 60
  return 1
}

# ---------------------------------------------------------------------- config

render_config() {
  mkdir -p "$KAFKA_DATA_DIR" "$LOGS"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@KAFKA_DATA_DIR@|$KAFKA_DATA_DIR|g" \
      "$TEMPLATE" >"$PROPS.tmp"
  mv "$PROPS.tmp" "$PROPS"
}

format_storage() {
  [[ -f "$KAFKA_DATA_DIR/meta.properties" ]] && return 0
  local cid
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid="$(cat "$CLUSTER_ID_FILE")"
  else
    cid="$(java -cp "$LIB/*" -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$LOGS" \
           kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    [[ -n "$cid" ]] || die "kafka.tools.StorageTool random-uuid produced no cluster id."
    echo "$cid" >"$CLUSTER_ID_FILE"
  fi
  say "formatting $KAFKA_DATA_DIR (cluster id $cid) ..."
  # static quorum (controller.quorum.voters), so no --standalone
  if ! java -cp "$LIB/*" -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$LOGS" \
       kafka.tools.StorageTool format --ignore-formatted -t "$cid" -c "$PROPS" \
       >"$LOGS/format.log" 2>&1; then
    cat "$LOGS/format.log" >&2
    die "formatting $KAFKA_DATA_DIR failed."
  fi
}

# -------------------------------------------------------------------- commands

cmd_up() {
  local t0=$SECONDS pid
  require_java

  if pid="$(broker_pid)"; then
    if answering; then
      say "already running (pid $pid) and answering on $BOOTSTRAP"
      return 0
    fi
    say "broker pid $pid is running but not answering yet; waiting ..."
    wait_ready "$pid" || exit 1
    say "Kafka answering on $BOOTSTRAP (pid $pid)"
    return 0
  fi
  rm -f "$PIDFILE"

  local p owner
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$p"; then
      owner="$(port_owner "$p")"
      die "port 127.0.0.1:$p is already in use by another process${owner:+ ($owner)}, not by a broker this script started from $PROPS. Stop it, or pick other ports: KAFKA_PORT=... KAFKA_CONTROLLER_PORT=..."
    fi
  done

  resolve_jars
  render_config
  format_storage

  _LOG_OFFSET="$(stat -c %s "$LOGS/server.log" 2>/dev/null || echo 0)"
  say "starting Kafka $(kafka_version) on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
  # own session (setsid) so Ctrl-C in the calling make/shell does not reach it
  # shellcheck disable=SC2086
  nohup setsid java $KAFKA_HEAP_OPTS \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$LOGS" \
    -cp "$LIB/*" kafka.Kafka "$PROPS" \
    >"$LOGS/server.out" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"

  if ! wait_ready "$pid"; then
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping the half-started broker (pid $pid)"
      stop_pid "$pid" 10 >/dev/null 2>&1 || true
    fi
    rm -f "$PIDFILE"
    exit 1
  fi
  say "Kafka $(kafka_version) answering on $BOOTSTRAP (pid $pid, $((SECONDS - t0))s; logs $LOGS)"
}

stop_pid() {
  local pid="$1" grace="$2" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  say "pid $pid did not stop within ${grace}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
}

cmd_down() {
  local pid
  if pid="$(broker_pid)"; then
    say "stopping Kafka (pid $pid) ..."
    stop_pid "$pid" 30
    say "stopped"
  else
    say "not running"
  fi
  rm -f "$PIDFILE"
  if [[ "${KAFKA_WIPE:-0}" == 1 ]]; then
    say "KAFKA_WIPE=1: deleting $KAFKA_DATA_DIR"
    rm -rf "$KAFKA_DATA_DIR" "$CLUSTER_ID_FILE"
  fi
}

cmd_status() {
  local pid=""
  pid="$(broker_pid || true)"
  if answering; then
    say "answering on $BOOTSTRAP${pid:+ (pid $pid)}"
    return 0
  fi
  if [[ -n "$pid" ]]; then
    say "process running (pid $pid) but not answering on $BOOTSTRAP"
  else
    say "not running"
  fi
  return 1
}

cmd_wait() {
  if answering; then
    say "answering on $BOOTSTRAP"
    return 0
  fi
  say "waiting up to ${KAFKA_WAIT_SECS}s for $BOOTSTRAP ..."
  _LOG_OFFSET="$(stat -c %s "$LOGS/server.log" 2>/dev/null || echo 0)"
  wait_ready "$(broker_pid || true)" || exit 1
  say "answering on $BOOTSTRAP"
}

# serialise up/down (e.g. make -j, or two shells) on one state dir
lock() {
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$KAFKA_HOME_DIR/.kafka.sh.lock"
  flock 9
}

case "${1:-}" in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  wait) cmd_wait ;;
  *)
    echo "usage: $0 up|down|status|wait" >&2
    exit 2
    ;;
esac
