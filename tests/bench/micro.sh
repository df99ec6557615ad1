#!/usr/bin/env bash
# The per-message costs of the foundation and the processor: prints markdown rows for BENCHMARKS.md
# (tests/bench/run.sh runs it with the others).
#   usage: tests/bench/micro.sh [BUILD_DIR]      (default build/plain; run ci/build.sh plain first)
# Instruction counts come from callgrind (repeatable whatever the machine is doing); times are
# per-thread CPU time, median of 5 runs with the range.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "${1:-build/plain}" && pwd)
tmp=$(mktemp -d /tmp/iotpipe-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# instructions inside the functions named in $2 (space separated) per iteration, from a callgrind run
# of "$3..." doing $1 iterations
instr_per() {
	local n=$1 toggles=()
	for fn in $2; do toggles+=(--toggle-collect="$fn"); done
	shift 2
	valgrind --tool=callgrind "${toggles[@]}" --callgrind-out-file="$tmp/cg.out" "$@" >/dev/null 2>"$tmp/cg.log"
	local total
	total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/cg.log")
	awk -v t="$total" -v n="$n" 'BEGIN{printf "%.0f", t / n}'
}

echo "| what | figure | range / note | goal |"
echo "|---|---|---|---|"

n=200000
ir=$(instr_per $n "pipeline_captures pipeline_capture" "$build/tests/bench_capture" $n)
for _ in 1 2 3 4 5; do "$build/tests/bench_capture" 1000000 | field cpu_ns_per_capture; done >"$tmp/cap"
echo "| main thread per captured message (topic match, capture header, journal append) | $(median <"$tmp/cap") ns CPU, $ir instructions | $(range <"$tmp/cap") ns | ≤ 0.3 µs |"

"$build/iotpipe-sim" --devices 1000 --registry "$tmp/fleet.json"
n=100000
ir_all=$(instr_per $n processor_handle "$build/tests/bench_processor" $n "$tmp/fleet.json")
ir_parse=$(instr_per $n payload_parse "$build/tests/bench_processor" $n "$tmp/fleet.json")
for _ in 1 2 3 4 5; do "$build/tests/bench_processor" 500000 "$tmp/fleet.json" | field cpu_ns_per_reading; done >"$tmp/proc"
echo "| processor per reference reading (parse, identify, validate, enrich, detect, window, encode, outbox append) | $(median <"$tmp/proc") ns CPU, $ir_all instructions | $(range <"$tmp/proc") ns | ≤ 1.5 µs |"
echo "| of which payload_parse (cJSON parse + walk) | $ir_parse instructions | | ≤ 0.5 µs |"
for s in 10000 100000; do
	"$build/tests/bench_processor" $((s * 2)) "" "$s" | sed -n "s/.*series=\([0-9]*\) bytes_per_series=\([0-9.]*\).*/| series state with \1 active series | \2 bytes per series | | ≤ 256 |/p"
done

# the Kafka sink's JSON per enriched record (series taken in turn: the worst order for what it keeps)
n=200000
ir=$(instr_per $n outrec_json "$build/tests/bench_json" $n 100 nokeep)
echo "| JSON of an enriched record, generator keeping no series (file sink) | $ir instructions | | |"
for s in 100 3000 10000 50000; do
	ir=$(instr_per $n outrec_json "$build/tests/bench_json" $n $s)
	echo "| JSON of an enriched record, Kafka sink's generator, $s series in turn | $ir instructions | | |"
done
