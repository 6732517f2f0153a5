#!/usr/bin/env bash
# The Herald demo: installs and starts PostgreSQL and RabbitMQ if missing,
# builds Herald, then runs the whole system (simulator, API, scheduler, two
# workers) on simulated numbers, sends a campaign of a few hundred recipients
# and shows its progress until it completes, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: Herald needs a Rust toolchain (1.94 or newer), e.g. from https://rustup.rs" >&2
  exit 1
fi

./deploy/services.sh
export HERALD_TEST_PG="${HERALD_TEST_PG:-postgres://herald:herald@127.0.0.1:5432/postgres}"
echo "Building Herald (the first build takes several minutes)…"
cargo build --workspace --bins
exec cargo run --quiet -p herald-tests --bin herald-demo
