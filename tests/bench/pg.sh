#!/usr/bin/env bash
# The PostgreSQL sink's rate against a raw binary COPY of the same rows into the same table (same
# indexes, same partition), in one run on one throwaway PostgreSQL 15 (ci/pg.sh): the two take turns,
# each figure is the median of $RUNS runs with its spread, and the ratio is of the medians.
# The sink's figure is end to end: outbox records decoded, encoded, batched (pg_batch_rows) over
# pg_pool_size connections and committed (synchronous_commit on, fsync on), cursor moved.
# Prints one markdown table row per measurement.
#   usage: tests/bench/pg.sh BUILD_DIR [rows]     (RUNS=3 POOL=2 BATCH=5000 by default)
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd)
n=${2:-500000}
runs=${RUNS:-3}
pool=${POOL:-2}
batch=${BATCH:-5000}
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/iotpipe-bench-pg-XXXXXX)
chmod 755 "$work"
trap 'bash "$repo/ci/pg.sh" stop "$work/pg" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bash "$repo/ci/pg.sh" start "$work/pg" "$port" >/dev/null
url=$(bash "$repo/ci/pg.sh" url "$work/pg" "$port")
if ! out=$("$build/tests/bench_pg_sink" "$url" "$n" "$runs" "$pool" "$batch" 2>"$work/bench.log"); then
  cat "$work/bench.log" >&2
  exit 1
fi
sink=$(sed -n 's/^sink rate=//p' <<<"$out" | tr '\n' ' ')
copy=$(sed -n 's/^copy rate=//p' <<<"$out" | tr '\n' ' ')
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep . | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "–" hi}'; }
ms=$(median <<<"$sink"); mc=$(median <<<"$copy")
echo "| raw binary COPY into metrics, one transaction, $n rows | $mc rows/s | $(spread <<<"$copy") | |"
echo "| PostgreSQL sink, $n enriched records (pool $pool, batches of $batch) | $ms rows/s | $(spread <<<"$sink") | ratio $(awk -v a="$ms" -v b="$mc" 'BEGIN{printf "%.2f", a/b}') |"
