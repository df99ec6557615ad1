#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, builds three
# configurations, then runs
#   - the unit tests under ASan+UBSan and the libFuzzer targets for a bounded time,
#   - the end-to-end tests against the ASan+UBSan plugin loaded into Debian's real mosquitto,
#   - the unit tests and the end-to-end tests of the plain (release) build, whose summaries end the output.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
bash ci/build.sh plain
bash ci/build.sh asan
bash ci/build.sh fuzz

echo "== unit tests, ASan+UBSan"
ctest --test-dir build/asan -L unit --output-on-failure -j2
echo "== fuzz targets (bounded time each, ASan+UBSan)"
ctest --test-dir build/fuzz -L fuzz --output-on-failure

asan_rt=$(gcc -print-file-name=libasan.so)
echo "== end-to-end, ASan+UBSan plugin in mosquitto"
IOTPIPE_PLUGIN=$PWD/build/asan/mosquitto_iotpipe.so IOTPIPE_ASAN_PRELOAD="$asan_rt" python3 -m pytest -q tests/e2e

echo "== unit tests, release build"
ctest --test-dir build/plain -L unit --output-on-failure -j2
echo "== end-to-end, release build"
IOTPIPE_PLUGIN=$PWD/build/plain/mosquitto_iotpipe.so python3 -m pytest -q tests/e2e
