#!/usr/bin/env bash
# Kafka sink throughput against a raw librdkafka producer, to one real Kafka broker (ci/kafka.sh) in
# one run: the same enriched-record messages (same JSON, keys, headers and sizes), the same producer
# settings (the sink's defaults), the same topic and so the same partitions. The two take turns;
# each figure is the median of $RUNS runs with the range; the ratio is the median of each turn's.
# Prints markdown rows for BENCHMARKS.md.
#   usage: tests/bench/kafka.sh [BUILD_DIR] [records]   (default build/plain, 500000)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "${1:-build/plain}" && pwd)
n=${2:-500000}
runs=${RUNS:-3}
bench="$build/tests/bench_kafka_raw"
tmp=$(mktemp -d /tmp/iotpipe-bench-kafka-XXXXXX)
trap 'ci/kafka.sh stop "$tmp/kafka" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

port=$(cd tests/e2e && python3 -c 'from services import free_port; print(free_port(2))')
ci/kafka.sh start "$tmp/kafka" "$port" >/dev/null
bs="127.0.0.1:$port"
topic=bench.kafka

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# warm-up, a full round of each: the topic gets created and the broker's JIT compiles its hot
# paths (a fresh broker is several times slower at first)
"$bench" raw "$bs" "$topic" "$n" >/dev/null 2>>"$tmp/err"
"$bench" sink "$bs" "$topic" "$n" >/dev/null 2>>"$tmp/err"
"$bench" raw "$bs" "$topic" "$n" >/dev/null 2>>"$tmp/err"
for _ in $(seq "$runs"); do
	# The sink's thread and librdkafka's under it run at the pipeline's nice 10 (thread.h): the raw
	# producer gets the same, so both compete alike with the Kafka broker on this machine.
	nice -n 10 "$bench" raw "$bs" "$topic" "$n" 2>>"$tmp/err" >>"$tmp/raw.out"
	"$bench" sink "$bs" "$topic" "$n" 2>>"$tmp/err" >>"$tmp/sink.out"
done
for m in raw sink; do
	field rate <"$tmp/$m.out" >"$tmp/$m"
	field thread_ns <"$tmp/$m.out" >"$tmp/$m.thread"
	field rdk_ns <"$tmp/$m.out" >"$tmp/$m.rdk"
done
# the ratio of each raw run and the sink run right after it: the machine's speed drifts between
# rounds (shared host), far less within one
paste "$tmp/sink" "$tmp/raw" | awk '{printf "%.2f\n", $1 / $2}' >"$tmp/ratio"
mr=$(median <"$tmp/raw"); ms=$(median <"$tmp/sink")
echo "| Kafka, raw librdkafka producer (same messages, settings and partitions; payloads, keys and headers made beforehand) | $mr msg/s | $(range <"$tmp/raw") | |"
echo "| Kafka sink: outbox → JSON → librdkafka, cursor on delivery reports | $ms records/s | $(range <"$tmp/sink") | |"
echo "| sink / raw, each sink run against the raw run before it | $(median <"$tmp/ratio") | $(range <"$tmp/ratio") | goal ≥ 0.80 |"
echo "| CPU per record, producing thread: raw producer loop vs sink thread (read, decode, JSON, produce, reports) | $(median <"$tmp/raw.thread") ns vs $(median <"$tmp/sink.thread") ns | $(range <"$tmp/raw.thread") ns; $(range <"$tmp/sink.thread") ns | |"
echo "| CPU per record, librdkafka's threads: raw vs sink | $(median <"$tmp/raw.rdk") ns vs $(median <"$tmp/sink.rdk") ns | $(range <"$tmp/raw.rdk") ns; $(range <"$tmp/sink.rdk") ns | |"
