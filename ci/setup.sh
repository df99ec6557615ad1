#!/usr/bin/env bash
# Installs what the build, the tests, the demo and the benchmarks need on a Debian 12 machine.
# Idempotent: what is already there is skipped (dpkg-query / importlib.metadata), so a second
# run takes seconds and touches no network. Quiet on success; on failure the tail of the
# failing step's output is shown.
#   usage: ci/setup.sh            (as root, or with sudo available)
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev valgrind
  mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev
  librdkafka-dev libcjson-dev libyajl-dev uthash-dev libxxhash-dev libisal-dev libcmocka-dev
  libpq-dev postgresql-15 postgresql-client-15
  kcat maven
  gnuplot-nox   # /usr/bin/gnuplot without the Qt/X11 stack that plain 'gnuplot' drags in
)
# Python distribution name -> requirement handed to pip.
PIP_PACKAGES=(
  "pytest|pytest"
  "paho-mqtt|paho-mqtt>=2,<3"
  "psycopg|psycopg[binary]>=3.1"
  "psycopg-binary|psycopg[binary]>=3.1"
  "confluent-kafka|confluent-kafka>=2"
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

die() { echo "ci/setup.sh: $*" >&2; exit 1; }
# Runs a step with its output captured; shows it only if the step fails.
quietly() {
  local what=$1; shift
  if ! "$@" >"$log" 2>&1; then
    echo "ci/setup.sh: $what failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root (or install sudo)"
  SUDO=(sudo)
fi

# --- Debian packages -------------------------------------------------------------------------
wanted=("${APT_PACKAGES[@]}")
# Kafka (ci/kafka.sh) and maven need a JRE; any java on PATH will do (OpenJDK 17 on Debian 12).
command -v java >/dev/null || wanted+=(default-jre-headless)

missing=()
for p in "${wanted[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != "ii " ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  quietly "apt-get update" "${SUDO[@]}" apt-get update -q
  quietly "apt-get install ${missing[*]}" \
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- The distribution's mosquitto service --------------------------------------------------
# Debian starts one on port 1883 on install; the tests start their own brokers.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  if systemctl is-enabled --quiet mosquitto 2>/dev/null || systemctl is-active --quiet mosquitto 2>/dev/null; then
    quietly "disabling mosquitto.service" "${SUDO[@]}" systemctl disable --now mosquitto
  fi
elif [ -x /etc/init.d/mosquitto ]; then
  # No systemd (containers, VMs without it): stop through the init script, which only acts
  # on the pid in /run/mosquitto/mosquitto.pid, so brokers started by tests are left alone.
  if [ -s /run/mosquitto/mosquitto.pid ] && kill -0 "$(cat /run/mosquitto/mosquitto.pid)" 2>/dev/null; then
    quietly "stopping mosquitto" "${SUDO[@]}" /etc/init.d/mosquitto stop
  fi
  if ls /etc/rc[2-5].d/S*mosquitto >/dev/null 2>&1; then
    quietly "disabling mosquitto" "${SUDO[@]}" update-rc.d mosquitto disable
  fi
fi

# --- Python packages (into the python3 on PATH, not Debian's) --------------------------------
command -v python3 >/dev/null || die "python3 not found on PATH"
mapfile -t pip_missing < <(python3 - "${PIP_PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
seen = set()
for item in sys.argv[1:]:
    dist, req = item.split("|", 1)
    try:
        version(dist)
    except PackageNotFoundError:
        if req not in seen:
            seen.add(req)
            print(req)
EOF
)
if [ ${#pip_missing[@]} -gt 0 ]; then
  quietly "pip install ${pip_missing[*]}" python3 -m pip install -q "${pip_missing[@]}"
fi

# --- Kafka broker jars for ci/kafka.sh (cached outside the repo; no-op once there) -----------
"$(dirname "${BASH_SOURCE[0]}")/kafka.sh" install
