#!/usr/bin/env bash
# The demo: Debian's mosquitto with iotpipe delivering to the file sink, a throwaway PostgreSQL 15
# cluster and a single-node Kafka (both started here, as ci/setup.sh installed them), a few
# reference messages from mosquitto_pub, then a simulated fleet from iotpipe-sim with its progress
# line; ends by showing the journal and what arrived where.
#   IOTPIPE_DEMO_SINKS=file   the file sink only (no PostgreSQL, no Kafka)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/build.sh plain >/dev/null
bin=$PWD/build/plain

work=$(mktemp -d /tmp/iotpipe-demo-XXXXXX)
chown mosquitto "$work"     # the broker runs the plugin as the mosquitto user
port=${IOTPIPE_DEMO_PORT:-18883}
free_port() { (cd tests/e2e && python3 -c 'from services import free_port; print(free_port(2))'); }
full=$([ "${IOTPIPE_DEMO_SINKS:-all}" = file ] && echo false || echo true)
cleanup() {
  [ -n "${broker:-}" ] && { kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null || true; }
  [ -n "${pg_port:-}" ] && ci/pg.sh stop "$work/pg" >/dev/null 2>&1 || true
  [ -n "${kafka_port:-}" ] && ci/kafka.sh stop "$work/kafka" >/dev/null 2>&1 || true
}
trap cleanup EXIT
if $full; then
  echo "== starting PostgreSQL 15 and Kafka (KRaft, one node) on loopback"
  pg_port=$(free_port); ci/pg.sh start "$work/pg" "$pg_port" >/dev/null
  kafka_port=$(free_port); ci/kafka.sh start "$work/kafka" "$kafka_port" >/dev/null
  sinks="plugin_opt_pg_conninfo $(ci/pg.sh url "$work/pg" "$pg_port")
plugin_opt_kafka_brokers 127.0.0.1:$kafka_port"
fi
"$bin/iotpipe-sim" --devices 200 --threshold 23 --registry "$work/registry.json"
cat conf/registry.example.json | python3 -c '
import json, sys
fleet = json.load(open(sys.argv[1])); fleet["devices"] += json.load(sys.stdin)["devices"]
json.dump(fleet, open(sys.argv[1], "w"))' "$work/registry.json"
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
plugin $bin/mosquitto_iotpipe.so
plugin_opt_journal_dir $work/journal
plugin_opt_file_sink_dir $work/out
plugin_opt_registry_file $work/registry.json
plugin_opt_window 5s
plugin_opt_window_lateness 1s
plugin_opt_metrics_interval 1s
${sinks:-}
CONF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker=$!
for _ in $(seq 50); do mosquitto_pub -p "$port" -t demo/ping -n 2>/dev/null && break; sleep 0.1; done

echo "== an alert subscriber on alerts/#"
mosquitto_sub -p "$port" -t 'alerts/#' -v >"$work/alerts.txt" &
sub=$!
sleep 0.3
now_ms=$(date +%s%3N)
echo "== reference messages with mosquitto_pub"
pub() { echo "   $2"; mosquitto_pub -p "$port" -q 1 -t "$1" -m "$2"; }
pub devices/temp-007/telemetry "{\"deviceId\":\"temp-007\",\"sensorId\":\"temp\",\"value\":22.5,\"ts\":$now_ms}"
pub devices/temp-007/telemetry "{\"deviceId\":\"temp-007\",\"value\":27.1,\"ts\":$(( now_ms / 1000 + 1 ))}"
pub devices/temp-007/telemetry "{\"deviceId\":\"temp-007\",\"value\":21.0,\"ts\":$(( now_ms + 2000 ))}"
pub devices/hum-012/telemetry "{\"deviceId\":\"hum-012\",\"ts\":$now_ms,\"readings\":{\"hum\":41,\"temp\":22.5}}"
pub devices/temp-007/telemetry "{\"deviceId\":\"temp-007\",\"value\":\"warm\"}"
pub devices/nobody/telemetry "{\"value\":1}"

echo "== a simulated fleet: 200 devices, 4 connections, 2000 msg/s for 5 s, QoS 1, with spikes and bad payloads"
"$bin/iotpipe-sim" -p "$port" --devices 200 --connections 4 --rate 2000 --duration 5 --qos 1 --spike 0.002 --bad 0.002 \
  | tee "$work/sim.txt"
acked=$(sed -n 's/.*acked=\([0-9]*\).*/\1/p' "$work/sim.txt")
sleep 7    # let the 5 s windows close by processing time
kill $sub 2>/dev/null || true

echo "== the ingest journal: its first records, its cursor, a summary (iotpipe-journal -n 3)"
"$bin/iotpipe-journal" -n 3 "$work/journal/ingest"
echo "== NDJSON output in $work/out"
for kind in enriched alert quarantine aggregate; do
  printf '%-11s %6d lines   e.g. ' "$kind" "$(wc -l <"$work/out/$kind.ndjson")"
  grep -m1 temp-007 "$work/out/$kind.ndjson" || head -n 1 "$work/out/$kind.ndjson" || true
done
echo "== alerts seen on MQTT"
head -n 3 "$work/alerts.txt"
echo "   ($(wc -l <"$work/alerts.txt") in all)"
echo "== counters (\$SYS/broker/iotpipe/stats)"
mosquitto_sub -p "$port" -t '$SYS/broker/iotpipe/stats' -C 1 -W 15
echo "== broker log"
grep -E 'iotpipe( [0-9.]+)?:' "$work/mosquitto.log"
echo "== what arrived where: $acked messages acknowledged by the simulator, 6 from mosquitto_pub"
kinds=(enriched alert quarantine aggregate)
tables=(metrics alerts quarantine metrics_agg)
topics=(devices.enriched devices.alerts devices.quarantine devices.aggregated)
printf '   %-22s %10s %10s %10s %10s\n' "" "${kinds[@]}"
row() { printf '   %-22s %10s %10s %10s %10s\n' "$@"; }
counts=(); for k in "${kinds[@]}"; do counts+=("$(wc -l <"$work/out/$k.ndjson")"); done
row "file sink (NDJSON)" "${counts[@]}"
if $full; then
  url=$(ci/pg.sh url "$work/pg" "$pg_port")
  counts=(); for t in "${tables[@]}"; do counts+=("$(psql -At "$url" -c "SELECT count(*) FROM $t")"); done
  row "PostgreSQL (rows)" "${counts[@]}"
  counts=(); for t in "${topics[@]}"; do
    counts+=("$(kcat -b "127.0.0.1:$kafka_port" -C -t "$t" -o beginning -e -q 2>/dev/null | wc -l)"); done
  row "Kafka (records)" "${counts[@]}"
fi
row "MQTT alerts/#" "" "$(wc -l <"$work/alerts.txt")" "" ""
echo "demo files: $work"
