#!/usr/bin/env bash
# Broker ingest rate, QoS 0 (or $QOS), with no plugin vs with iotpipe capturing every message, in one
# run on one machine: the brokers take turns, each figure is the median of $RUNS runs, and the
# ratio is of the medians. Prints one markdown table row per configuration.
#   usage: tests/bench/ingest.sh BUILD_DIR [messages]
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd)
n=${2:-400000}
runs=${RUNS:-5}
qos=0
work=$(mktemp -d /tmp/iotpipe-bench-ingest-XXXXXX)
chown mosquitto "$work"
trap 'pkill -f "mosquitto -c $work" 2>/dev/null || true; rm -rf "$work"' EXIT

conf() {  # name port [plugin options...]
  local name=$1 port=$2; shift 2
  { echo "listener $port 127.0.0.1"; echo "allow_anonymous true"
    if [ "$name" != plain ]; then
      echo "plugin $build/mosquitto_iotpipe.so"
      echo "plugin_opt_journal_dir $work/$name"
      echo "plugin_opt_journal_max_bytes 8G"
      echo "plugin_opt_metrics_interval 0"
      for o in "$@"; do echo "plugin_opt_$o"; done
    fi; } >"$work/$name.conf"
}
conf plain 18901
conf plugin 18902
declare -A rates
for r in $(seq "$runs"); do
  for name in plain plugin; do
    port=$([ $name = plain ] && echo 18901 || echo 18902)
    rm -rf "${work:?}/$name"
    mosquitto -c "$work/$name.conf" >"$work/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do mosquitto_pub -p "$port" -t x -n 2>/dev/null && break; sleep 0.1; done
    out=$("$build/tests/bench_blast" "$port" "$n" 2 1000)
    rate=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$out")
    rates[$name]+="$rate "
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep . | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }
mp=$(median <<<"${rates[plain]}"); mq=$(median <<<"${rates[plugin]}")
echo "| QoS $qos ingest, no plugin | $mp msg/s | $(spread <<<"${rates[plain]}") | |"
echo "| QoS $qos ingest, iotpipe capturing every message (file sink on) | $mq msg/s | $(spread <<<"${rates[plugin]}") | ratio $(awk -v a="$mq" -v b="$mp" 'BEGIN{printf "%.2f", a/b}') |"
