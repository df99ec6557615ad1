#!/usr/bin/env bash
# Runs every benchmark and writes its tables into BENCHMARKS.md and its plots into docs/benchmarks/.
# Each table in BENCHMARKS.md sits between "<!-- bench:NAME -->" and "<!-- /bench -->"; only those
# blocks are rewritten, the prose around them is left alone (read it against the new figures).
#   usage: tests/bench/run.sh [NAME...]    (default: all, in this order; about 40 minutes)
#     machine   the machine the figures come from
#     micro     per-message costs: main thread, processor, series memory (tests/bench/micro.sh)
#     ingest    QoS 0 and 1 ingest: no plugin vs capture only vs file sink (tests/bench/ingest.sh)
#     kafka     Kafka sink vs a raw librdkafka producer (tests/bench/kafka.sh)
#     pg        PostgreSQL sink vs a raw binary COPY (tests/bench/pg.sh)
#     sustained the highest end-to-end rate held for 60 s with Kafka and PostgreSQL, reconciled
#     latency   publish -> MQTT alert / Kafka / PostgreSQL at half that rate
#     catchup   PostgreSQL stopped for 60 s under load, then the drain
#     memory    plugin memory per active series, 10k / 100k / 1M series
#   (the last four: tests/bench/pipeline.py; run it with --help for its options)
# Builds build/plain first. Run it on an otherwise idle machine: the figures are only as quiet as it.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ci/build.sh plain >/dev/null
build=build/plain
out=$(mktemp -d /tmp/iotpipe-bench-run-XXXXXX)
trap 'rm -rf "$out"' EXIT
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(machine micro ingest kafka pg sustained latency catchup memory)

machine() {
  local cpu mem
  cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)
  mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
  echo "| cores | memory | CPU | kernel | OS | mosquitto | measured |"
  echo "|---|---|---|---|---|---|---|"
  echo "| $(nproc) | $mem | $cpu | $(uname -r) | $(. /etc/os-release && echo "$PRETTY_NAME") |" \
       "$(dpkg-query -W -f='${Version}' mosquitto) | $(date -u +%Y-%m-%d) |"
}

# The rate the sustained run held, for the latency run at half of it
held_rate() { sed -n 's/.*<!-- held=\([0-9]*\) -->.*/\1/p' BENCHMARKS.md | head -n 1; }

run() {
  case "$1" in
    machine)   machine ;;
    micro)     tests/bench/micro.sh "$build" ;;
    ingest)    tests/bench/ingest.sh "$build" 1000000 400000 ;;
    kafka)     RUNS=9 tests/bench/kafka.sh "$build" 1000000 ;;
    pg)        tests/bench/pg.sh "$build" 300000 ;;
    sustained) python3 tests/bench/pipeline.py sustained --build "$build" ;;
    latency)   python3 tests/bench/pipeline.py latency --build "$build" --rate $(( $(held_rate) / 2 )) ;;
    catchup)   python3 tests/bench/pipeline.py catchup --build "$build" --rate $(( $(held_rate) / 2 )) ;;
    memory)    python3 tests/bench/pipeline.py memory --build "$build" ;;
    *) echo "tests/bench/run.sh: no benchmark named $1" >&2; exit 2 ;;
  esac
}

for name in "${names[@]}"; do
  echo "== $name" >&2
  run "$name" | tee "$out/$name.md"
  python3 - "$name" "$out/$name.md" <<'EOF'
import re, sys
name, table = sys.argv[1], open(sys.argv[2]).read().strip()
text = open("BENCHMARKS.md").read()
block = re.compile(r"(<!-- bench:%s -->\n).*?(<!-- /bench -->)" % re.escape(name), re.S)
if not block.search(text):
    sys.exit(f"BENCHMARKS.md has no block <!-- bench:{name} -->")
if len(table.splitlines()) < 2 or not table.splitlines()[1].startswith("|---"):
    table = "| what | figure | range | note |\n|---|---|---|---|\n" + table
text = block.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
open("BENCHMARKS.md", "w").write(text)
EOF
done
