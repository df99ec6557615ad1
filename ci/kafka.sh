#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft: broker and controller in one process, loopback only)
# run from jars that Maven fetches from Maven Central (ci/kafka/pom.xml), since the distribution
# tarball is not reachable from here.
#
#   ci/kafka.sh install               fetch the jars into the cache if missing
#   ci/kafka.sh start DIR PORT        configure (first time), format DIR/data if empty, start the
#                                     broker on 127.0.0.1:PORT (controller on PORT+1), wait until
#                                     it serves metadata (no-op if it is already running)
#   ci/kafka.sh stop DIR              SIGTERM (controlled shutdown), then SIGKILL after 30 s
#   ci/kafka.sh kill DIR              kill -9 (fault tests); waits until the process is gone
#   ci/kafka.sh restart DIR [PORT]    stop if running, start again on the existing data
#   ci/kafka.sh status DIR            exit 0 if running
#   ci/kafka.sh bootstrap DIR         print 127.0.0.1:PORT
#
# DIR holds server.properties, log4j.properties, data/, kafka.log, kafka.pid and kafka.port.
# Topics are auto-created with 4 partitions (so per-key ordering means something), replication 1.
# Environment: IOTPIPE_CACHE (default ~/.cache/iotpipe), IOTPIPE_KAFKA_VERSION (default 3.9.1),
# IOTPIPE_KAFKA_HEAP (default 512m), IOTPIPE_KAFKA_TIMEOUT (start deadline, default 60 s),
# JAVA_HOME or java on PATH (OpenJDK 17 on Debian 12).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${IOTPIPE_KAFKA_VERSION:-3.9.1}
CACHE=${IOTPIPE_CACHE:-${HOME:-/root}/.cache/iotpipe}
HOME_K="$CACHE/kafka-$VERSION"
LIB="$HOME_K/lib"
HEAP=${IOTPIPE_KAFKA_HEAP:-512m}
START_TIMEOUT=${IOTPIPE_KAFKA_TIMEOUT:-60}

die() { echo "ci/kafka.sh: $*" >&2; exit 1; }
usage() {
  die "usage: ci/kafka.sh install | start DIR PORT | stop DIR | kill DIR | restart DIR [PORT] | status DIR | bootstrap DIR"
}

java_bin() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"
  elif command -v java >/dev/null; then command -v java
  else die "no java found (run ci/setup.sh)"; fi
}

do_install() {
  [ -f "$LIB/.complete" ] && return 0
  command -v mvn >/dev/null || die "mvn not found (run ci/setup.sh)"
  mkdir -p "$HOME_K"
  # One installer at a time (parallel test workers may all call install).
  exec 9>"$HOME_K/.lock"
  flock 9
  [ -f "$LIB/.complete" ] && return 0
  local tmp="$HOME_K/lib.tmp" out
  rm -rf "$tmp"
  # Maven's own repository goes into the cache too, and is dropped once the jars are copied.
  if ! out=$(cd "$HERE/kafka" && mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$HOME_K/m2" \
        -Dkafka.version="$VERSION" dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1); then
    echo "$out" | tail -n 40 >&2
    die "fetching Kafka $VERSION jars with mvn failed"
  fi
  ls "$tmp"/kafka_2.13-"$VERSION".jar >/dev/null 2>&1 || die "kafka_2.13-$VERSION.jar missing after mvn"
  rm -rf "$LIB" "$HOME_K/m2"
  mv "$tmp" "$LIB"
  touch "$LIB/.complete"
}

# Prints the pid of the broker running in DIR, or nothing. Checks that the pid still belongs to
# a java process started on DIR, as a stale pid file may name an unrelated process.
broker_pid() {
  local pid
  [ -s "$DIR/kafka.pid" ] || return 0
  pid=$(cat "$DIR/kafka.pid")
  [ -r "/proc/$pid/cmdline" ] || return 0
  if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$DIR/server.properties"; then echo "$pid"; fi
}

wait_gone() {  # pid seconds
  local deadline=$(( SECONDS + $2 ))
  while kill -0 "$1" 2>/dev/null; do
    (( SECONDS >= deadline )) && return 1
    sleep 0.1
  done
}

show_log() {
  [ -f "$DIR/kafka.log" ] && tail -n 40 "$DIR/kafka.log" >&2
  return 0
}

write_config() {
  local port=$1 cport=$(( $1 + 1 ))
  cat >"$DIR/server.properties" <<EOF
# written by ci/kafka.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
# tests: no 3 s wait before the first consumer group rebalance
group.initial.rebalance.delay.ms=0
# After a kill -9 the restarted controller refuses the broker's registration until the old
# session expires (default 9 s, then register backoff on top): shorten it for fault tests.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2500
num.network.threads=2
num.io.threads=4
log.retention.hours=24
EOF
  cat >"$DIR/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.kafka.log.LogCleaner=WARN
EOF
}

do_start() {
  [ -n "$PORT" ] || usage
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "bad port '$PORT'"
  do_install
  mkdir -p "$DIR/data"
  if [ -n "$(broker_pid)" ]; then
    wait_ready "$(broker_pid)" 0
    return 0
  fi
  write_config "$PORT"
  echo "$PORT" >"$DIR/kafka.port"
  local java
  java=$(java_bin)
  if [ ! -f "$DIR/data/meta.properties" ]; then
    # A cluster id is 16 random bytes in unpadded base64url (what StorageTool random-uuid makes).
    local id out
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    if ! out=$("$java" -Xmx256m -cp "$LIB/*" -Dlog4j.configuration="file:$DIR/log4j.properties" \
          kafka.tools.StorageTool format -t "$id" -c "$DIR/server.properties" 2>&1); then
      echo "$out" >&2
      die "formatting $DIR/data failed"
    fi
  fi
  local logpos=0
  [ -f "$DIR/kafka.log" ] && logpos=$(stat -c %s "$DIR/kafka.log")
  # setsid + stdio to files: the broker outlives this script and holds no pipe of the caller's
  # (pytest's subprocess.run would otherwise wait for it).
  setsid "$java" -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$DIR/log4j.properties" \
    -cp "$LIB/*" kafka.Kafka "$DIR/server.properties" \
    </dev/null >>"$DIR/kafka.log" 2>&1 &
  echo $! >"$DIR/kafka.pid"
  wait_ready "$!" "$logpos"
}

# Ready = the process is up, logged that it started, and answers a metadata request listing
# itself as a broker. $2: where this run's part of kafka.log starts.
wait_ready() {
  local pid=$1 logpos=$2 deadline=$(( SECONDS + START_TIMEOUT )) port
  port=$(cat "$DIR/kafka.port")
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log; die "kafka exited during start-up (log: $DIR/kafka.log)"
    fi
    if tail -c +"$(( logpos + 1 ))" "$DIR/kafka.log" 2>/dev/null | grep -q 'Kafka Server started'; then
      if ! command -v kcat >/dev/null; then return 0; fi
      if kcat -b "127.0.0.1:$port" -L -m 2 2>/dev/null | grep -q "broker 1 at 127.0.0.1:$port"; then
        return 0
      fi
    fi
    if (( SECONDS >= deadline )); then
      show_log; die "kafka on port $port not ready after ${START_TIMEOUT}s (log: $DIR/kafka.log)"
    fi
    sleep 0.2
  done
}

do_stop() {
  local pid
  pid=$(broker_pid)
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 30; then
      kill -9 "$pid" 2>/dev/null || true
      wait_gone "$pid" 10 || die "kafka (pid $pid) did not die"
    fi
  fi
  rm -f "$DIR/kafka.pid"
}

do_kill() {
  local pid
  pid=$(broker_pid)
  if [ -n "$pid" ]; then
    kill -9 "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "kafka (pid $pid) did not die"
  fi
  rm -f "$DIR/kafka.pid"
}

[ $# -ge 1 ] || usage
cmd=$1
if [ "$cmd" != install ]; then
  [ $# -ge 2 ] || usage
  DIR=$(realpath -m -- "$2")
  PORT=${3:-}
fi

case "$cmd" in
  install)   do_install ;;
  start)     do_start ;;
  stop)      do_stop ;;
  kill)      do_kill ;;
  restart)
    do_stop
    if [ -z "$PORT" ]; then
      [ -s "$DIR/kafka.port" ] || die "no PORT given and $DIR/kafka.port absent"
      PORT=$(cat "$DIR/kafka.port")
    fi
    do_start ;;
  status)    [ -n "$(broker_pid)" ] ;;
  bootstrap) [ -s "$DIR/kafka.port" ] || die "$DIR/kafka.port absent"; echo "127.0.0.1:$(cat "$DIR/kafka.port")" ;;
  *)         usage ;;
esac
