#!/usr/bin/env bash
# Runs Herald's test suite: unit tests, and integration and end-to-end tests
# against a real PostgreSQL and RabbitMQ (installed and started if missing) and
# the simulated WhatsApp network.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: Herald needs a Rust toolchain (1.94 or newer), e.g. from https://rustup.rs" >&2
  exit 1
fi

./deploy/services.sh
export HERALD_TEST_PG="${HERALD_TEST_PG:-postgres://herald:herald@127.0.0.1:5432/postgres}"

# Checkers Herald did not write, used by some tests: the OpenAPI 3.1 validator
# and the Standard Webhooks reference library (Python, from PyPI).
venv="${HERALD_VENV:-$HOME/.cache/herald/venv}"
if [ ! -x "$venv/bin/python" ]; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv "$venv" >/dev/null 2>&1; then
    echo "[test] installing python3 and python3-venv"
    if [ "$(id -u)" -eq 0 ]; then as=(); else as=(sudo); fi
    "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/pip" install -q --disable-pip-version-check \
  openapi-spec-validator==0.9.0 standardwebhooks==1.1.0
export HERALD_TEST_PYTHON="$venv/bin/python"

# Prometheus and promtool (Debian's package, unpacked into a cache rather than
# installed: no service starts) for the test that scrapes a running stack and
# evaluates the alert rules.
prometheus_dir="${HERALD_PROMETHEUS_DIR:-$HOME/.cache/herald/prometheus}"
if [ ! -x "$prometheus_dir/usr/bin/prometheus" ]; then
  echo "[test] fetching Debian's prometheus package"
  download=$(mktemp -d)
  if ! (cd "$download" && apt-get download prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" -eq 0 ]; then as=(); else as=(sudo); fi
    "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    (cd "$download" && apt-get download prometheus >/dev/null 2>&1)
  fi
  mkdir -p "$prometheus_dir"
  dpkg -x "$download"/prometheus_*.deb "$prometheus_dir"
  rm -rf "$download"
fi
export PATH="$prometheus_dir/usr/bin:$PATH"

# Headless Chromium and ChromeDriver (Debian's packages) for the console's
# browser tests.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "[test] installing chromium and chromium-driver"
  if [ "$(id -u)" -eq 0 ]; then as=(); else as=(sudo); fi
  "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# Leftovers of interrupted runs: test databases and test queues.
if [ "$(id -u)" -eq 0 ]; then
  runuser -u postgres -- psql -qAt -d postgres \
    -c "SELECT datname FROM pg_database WHERE datname LIKE 'herald\_t\_%'" |
    while read -r db; do
      runuser -u postgres -- psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
    done
  ./deploy/drop-test-queues.sh || true
fi

# The end-to-end tests start the real binaries: build them first.
cargo build --workspace --bins
cargo test --workspace "$@"
