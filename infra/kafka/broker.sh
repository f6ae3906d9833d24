#!/usr/bin/env bash
# A local Apache Kafka broker (KRaft, single node) from Maven Central jars, no Docker.
#
#   bash infra/kafka/broker.sh start|stop|status|fetch
#
# Environment:
#   SIAGA_KAFKA_PORT             client port on 127.0.0.1 (default 9092)
#   SIAGA_KAFKA_CONTROLLER_PORT  controller port (default: a free port, remembered in the home)
#   SIAGA_KAFKA_HOME             data, config, pid file and logs (default ~/.cache/siaga/kafka-run-$PORT)
#   SIAGA_KAFKA_JARS             jar cache (default ~/.cache/siaga/kafka-<version>/libs)
#   SIAGA_KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 120)
#   SIAGA_KAFKA_HEAP             JVM heap (default 512m)
#
# Exit status: 0 ok; 1 failure; 3 from `status` when the broker is not running.
# See docs/kafka.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
PORT="${SIAGA_KAFKA_PORT:-9092}"
JARS="${SIAGA_KAFKA_JARS:-$HOME/.cache/siaga/kafka-$KAFKA_VERSION/libs}"
RUN_HOME="${SIAGA_KAFKA_HOME:-$HOME/.cache/siaga/kafka-run-$PORT}"
START_TIMEOUT="${SIAGA_KAFKA_START_TIMEOUT:-120}"
HEAP="${SIAGA_KAFKA_HEAP:-512m}"
STOP_TIMEOUT=30

DATA_DIR="$RUN_HOME/data"
LOG_DIR="$RUN_HOME/logs"
CONF="$RUN_HOME/server.properties"
PID_FILE="$RUN_HOME/broker.pid"
BOOTSTRAP="127.0.0.1:$PORT"

say() { echo "kafka[$PORT]: $*"; }
die() { echo "kafka[$PORT]: error: $*" >&2; exit 1; }

now_ms() { date +%s%3N; }

# The jars: fetched by Maven once per pom.xml content, into a cache outside the checkout.
fetch_jars() {
    local stamp
    stamp="$(sha256sum "$POM" | cut -c1-16)"
    if [[ -f "$JARS/.siaga-complete" && "$(cat "$JARS/.siaga-complete")" == "$stamp" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars; install it (apt-get install maven)"
    mkdir -p "$(dirname "$JARS")"
    # Two test sessions may start at once: one fetches, the other waits for it.
    exec 9>"$JARS.lock"
    flock 9
    if [[ -f "$JARS/.siaga-complete" && "$(cat "$JARS/.siaga-complete")" == "$stamp" ]]; then
        exec 9>&-
        return 0
    fi
    say "fetching Kafka $KAFKA_VERSION jars (first run only) into $JARS ..."
    local started tmp
    started="$(now_ms)"
    tmp="$JARS.tmp.$$"
    rm -rf "$tmp"
    if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "mvn could not fetch the Kafka jars (is Maven Central reachable?)"
    fi
    rm -f "$tmp.log"
    rm -rf "$JARS"
    mv "$tmp" "$JARS"
    echo "$stamp" >"$JARS/.siaga-complete"
    exec 9>&-
    say "fetched $(find "$JARS" -name '*.jar' | wc -l) jars in $(( ($(now_ms) - started) / 1000 ))s"
}

# BrokerTool.java (free port, readiness probe), compiled once per source version next to the jars.
TOOL_DIR=""
build_tool() {
    TOOL_DIR="$(dirname "$JARS")/tools-$(sha256sum "$HERE/BrokerTool.java" | cut -c1-16)"
    [[ -f "$TOOL_DIR/BrokerTool.class" ]] && return 0
    command -v javac >/dev/null || die "javac (a JDK, e.g. openjdk-17-jdk-headless) is needed"
    local tmp="$TOOL_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    javac -nowarn -cp "$JARS/*" -d "$tmp" "$HERE/BrokerTool.java" || die "could not compile BrokerTool.java"
    rm -rf "$TOOL_DIR"
    mv "$tmp" "$TOOL_DIR"
}

tool() {
    java -Xshare:auto -XX:TieredStopAtLevel=1 -Xmx128m -Dlog4j2.configurationFile="$HERE/log4j2-tool.xml" \
        -cp "$TOOL_DIR:$JARS/*" BrokerTool "$@"
}

# Whether pid is our broker: its command line names kafka.Kafka and our config. This guards against
# a recycled pid, and a zombie (empty command line) counts as gone.
is_our_broker() {
    [[ -n "$1" && -r "/proc/$1/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $CONF"
}

# The pid of our broker when it runs.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    is_our_broker "$pid" || return 1
    echo "$pid"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

log_tail() {
    local f
    for f in "$LOG_DIR/stdout.log" "$LOG_DIR/server.log" "$LOG_DIR/format.log"; do
        if [[ -s "$f" ]]; then
            echo "----- last lines of $f" >&2
            tail -n 40 "$f" >&2
        fi
    done
}

# The controller port: the configured one, else the one this home used before if still free, else a new one.
controller_port() {
    if [[ -n "${SIAGA_KAFKA_CONTROLLER_PORT:-}" ]]; then
        echo "$SIAGA_KAFKA_CONTROLLER_PORT"
        return
    fi
    local saved="$RUN_HOME/controller.port"
    if [[ -f "$saved" ]] && ! port_in_use "$(cat "$saved")"; then
        cat "$saved"
        return
    fi
    local port
    port="$(tool free-port)"
    echo "$port" >"$saved"
    echo "$port"
}

new_cluster_id() {
    local id
    # 16 random bytes, URL-safe base64 without padding, not starting with '-' (Kafka's Uuid rules).
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        [[ "$id" != -* ]] && break
    done
    echo "$id"
}

cmd_start() {
    local started pid
    started="$(now_ms)"
    command -v java >/dev/null || die "java (17+) is needed"
    fetch_jars
    build_tool
    if pid="$(running_pid)"; then
        say "already running (pid $pid)"
        tool await "$BOOTSTRAP" "$pid" "$START_TIMEOUT" || { log_tail; die "broker (pid $pid) does not answer on $BOOTSTRAP"; }
        return 0
    fi
    if port_in_use "$PORT"; then
        die "port $PORT is taken by another process; choose another with SIAGA_KAFKA_PORT"
    fi
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    local cport
    cport="$(controller_port)"
    sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
        "$HERE/server.properties.template" >"$CONF"

    if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
        say "formatting storage in $DATA_DIR"
        if ! java -Xmx256m -Dlog4j2.configurationFile="$HERE/log4j2-tool.xml" -cp "$JARS/*" kafka.tools.StorageTool \
            format -t "$(new_cluster_id)" -c "$CONF" >"$LOG_DIR/format.log" 2>&1; then
            log_tail
            die "could not format the storage in $DATA_DIR"
        fi
    fi

    say "starting on $BOOTSTRAP (controller 127.0.0.1:$cport, home $RUN_HOME)"
    # setsid + nohup: the broker outlives this script and is not hit by the terminal's Ctrl-C.
    setsid nohup java \
        -Xms"$HEAP" -Xmx"$HEAP" \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true \
        -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$HERE/log4j2.xml" \
        -cp "$JARS/*" kafka.Kafka "$CONF" >"$LOG_DIR/stdout.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    local rc=0
    tool await "$BOOTSTRAP" "$pid" "$START_TIMEOUT" || rc=$?
    if [[ $rc -ne 0 ]]; then
        log_tail
        if [[ $rc -eq 2 ]]; then
            rm -f "$PID_FILE"
            die "the broker exited during start"
        fi
        cmd_stop >/dev/null || true
        die "the broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s"
    fi
    say "ready on $BOOTSTRAP (pid $pid) in $(( ($(now_ms) - started) / 1000 ))s"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    say "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(( $(now_ms) + STOP_TIMEOUT * 1000 ))
    while is_our_broker "$pid" && (( $(now_ms) < deadline )); do
        sleep 0.2
    done
    if is_our_broker "$pid"; then
        say "still running after ${STOP_TIMEOUT}s; killing"
        kill -KILL "$pid" 2>/dev/null || true
        while is_our_broker "$pid"; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    say "stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        say "running (pid $pid) on $BOOTSTRAP, home $RUN_HOME"
        return 0
    fi
    say "not running (home $RUN_HOME)"
    return 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    fetch) fetch_jars; build_tool; say "jars ready in $JARS" ;;
    *) echo "usage: $0 start|stop|status|fetch" >&2; exit 64 ;;
esac
