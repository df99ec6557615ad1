#!/usr/bin/env bash
# Broker ingest rate, QoS 0 and QoS 1, three brokers in one run on one machine:
#   plain    Debian's mosquitto, no plugin
#   capture  iotpipe capturing every message and processing it, no sink (file_sink_dir off)
#   file     iotpipe with its default file sink (NDJSON)
# The publisher is bench_blast (pre-encoded packets, 2 connections, 1000 devices). The brokers
# take turns; each figure is the median of $RUNS runs with the range, and the ratios are of the
# medians. Prints markdown rows for BENCHMARKS.md, and for the last run of each broker the CPU its
# threads and the publisher used (where the two cores went).
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

# CPU seconds of each thread of process $1, "name seconds" per line (threads of one name summed)
thread_cpu() {
  for t in /proc/"$1"/task/*; do
    echo "$(cat "$t/comm" 2>/dev/null) $(awk '{print ($14 + $15) / 100}' "$t/stat" 2>/dev/null)"
  done | awk 'NF == 2 {s[$1] += $2} END {for (n in s) print n, s[n]}'
}
# share of one core per thread name between two thread_cpu snapshots over $3 seconds
cpu_share() {
  join <(sort "$1") <(sort "$2") | awk -v t="$3" '{printf "%s %.0f %%, ", $1, ($3 - $2) / t * 100}' | sed 's/, $//'
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep . | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }

for qos in 0 1; do
  n=$([ $qos = 0 ] && echo "$n0" || echo "$n1")
  declare -A rates=() cpu=()
  for _ in $(seq "$runs"); do
    for name in plain capture file; do
      rm -rf "${work:?}/$name"
      mosquitto -c "$work/$name.conf" >"$work/$name.log" 2>&1 &
      pid=$!
      for _ in $(seq 50); do mosquitto_pub -p "${port[$name]}" -t x -n 2>/dev/null && break; sleep 0.1; done
      thread_cpu "$pid" >"$work/cpu0"
      TIMEFORMAT="%U %S"
      { time out=$("$build/tests/bench_blast" "${port[$name]}" "$n" 2 1000 "$qos") ; } 2>"$work/blast.time"
      thread_cpu "$pid" >"$work/cpu1"
      secs=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$out")
      cpu[$name]="$(cpu_share "$work/cpu0" "$work/cpu1" "$secs"), publisher $(awk -v t="$secs" '{printf "%.0f %%", ($1 + $2) / t * 100}' "$work/blast.time")"
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
  for name in plain capture file; do
    echo "| QoS $qos, $name: share of one core per thread in the last run | ${cpu[$name]} | | 2 cores in all |"
  done
  unset rates cpu
done
