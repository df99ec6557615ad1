#!/usr/bin/env bash
# Broker ingest rate, QoS 0 and QoS 1, three brokers in one run on one machine:
#   plain    Debian's mosquitto, no plugin
#   capture  iotpipe capturing every message and processing it, no sink (file_sink_dir off)
#   file     iotpipe with its default file sink (NDJSON)
# The publisher is bench_blast (pre-encoded packets, 2 connections, 1000 devices). The brokers
# take turns; each figure is the median of $RUNS runs with the range, and the ratios are of the
# medians. Prints markdown rows for BENCHMARKS.md.
#   usage: tests/bench/ingest.sh BUILD_DIR [QoS 0 messages] [QoS 1 messages]
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd)
n0=${2:-1000000}
n1=${3:-400000}
runs=${RUNS:-5}
work=$(mktemp -d /tmp/iotpipe-bench-ingest-XXXXXX)
chown mosquitto "$work"
trap 'pkill -f "mosquitto -c $work" 2>/dev/null || true; rm -rf "$work"' EXIT

declare -A port=([plain]=18901 [capture]=18902 [file]=18903)
conf() {  # name [plugin options...]
  local name=$1; shift
  { echo "listener ${port[$name]} 127.0.0.1"; echo "allow_anonymous true"
    if [ "$name" != plain ]; then
      echo "plugin $build/mosquitto_iotpipe.so"
      echo "plugin_opt_journal_dir $work/$name"
      echo "plugin_opt_journal_max_bytes 8G"
      echo "plugin_opt_metrics_interval 0"
      for o in "$@"; do echo "plugin_opt_$o"; done
    fi; } >"$work/$name.conf"
}
conf plain
conf capture "file_sink_dir off"
conf file

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep . | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }

for qos in 0 1; do
  n=$([ $qos = 0 ] && echo "$n0" || echo "$n1")
  declare -A rates=()
  for _ in $(seq "$runs"); do
    for name in plain capture file; do
      rm -rf "${work:?}/$name"
      mosquitto -c "$work/$name.conf" >"$work/$name.log" 2>&1 &
      pid=$!
      for _ in $(seq 50); do mosquitto_pub -p "${port[$name]}" -t x -n 2>/dev/null && break; sleep 0.1; done
      out=$("$build/tests/bench_blast" "${port[$name]}" "$n" 2 1000 "$qos")
      rates[$name]+="$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$out") "
      kill "$pid"; wait "$pid" 2>/dev/null || true
    done
  done
  mp=$(median <<<"${rates[plain]}")
  echo "| QoS $qos ingest, no plugin ($n messages) | $mp msg/s | $(spread <<<"${rates[plain]}") | |"
  for name in capture file; do
    what=$([ $name = capture ] && echo "iotpipe capturing and processing, no sink (file_sink_dir off)" \
                               || echo "iotpipe with the file sink")
    m=$(median <<<"${rates[$name]}")
    echo "| QoS $qos ingest, $what | $m msg/s | $(spread <<<"${rates[$name]}") | ratio $(awk -v a="$m" -v b="$mp" 'BEGIN{printf "%.2f", a/b}') |"
  done
  unset rates
done
