#!/usr/bin/env bash
# Herald's benchmarks (docs/BENCHMARKS.md): a release build, then herald-bench,
# which prints each figure beside its baseline measured in the same run.
#   ./deploy/bench.sh                       # every benchmark
#   ./deploy/bench.sh ingest --rows 100000  # one, smaller
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/services.sh
export HERALD_TEST_PG="${HERALD_TEST_PG:-postgres://herald:herald@127.0.0.1:5432/postgres}"
cargo build --release --workspace --bins
./deploy/drop-test-queues.sh
status=0
HERALD_BENCH_KEEP_QUEUES=1 "${CARGO_TARGET_DIR:-target}/release/herald-bench" "$@" || status=$?
./deploy/drop-test-queues.sh
exit "$status"
