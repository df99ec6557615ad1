#!/usr/bin/env bash
# Builds one configuration into build/<name>: plain (default), asan (ASan+UBSan) or fuzz (clang, libFuzzer).
#   usage: ci/build.sh [plain|asan|fuzz]
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-plain}
target=()
case "$kind" in
  plain) args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan)  args=(-DCMAKE_BUILD_TYPE=Debug -DIOTPIPE_SANITIZE=ON) ;;
  fuzz)  args=(-DCMAKE_BUILD_TYPE=Debug -DIOTPIPE_FUZZ=ON -DCMAKE_C_COMPILER=clang); target=(--target fuzz_all) ;;
  *) echo "usage: ci/build.sh [plain|asan|fuzz]" >&2; exit 2 ;;
esac
cmake -S . -B "build/$kind" "${args[@]}" >/dev/null
cmake --build "build/$kind" -j"$(nproc)" "${target[@]}" >"build/$kind.log" 2>&1 || { tail -n 60 "build/$kind.log" >&2; exit 1; }
echo "built build/$kind"
