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
# Test queues, deleted in one call inside the broker: one AMQP delete per
# quorum queue takes RabbitMQ about a second, and the scheduler benchmark
# leaves a thousand.
drop_test_queues() {
  rabbitmqctl -q eval '[rabbit_amqqueue:delete(Q, false, false, <<"herald-bench">>)
    || Q <- rabbit_amqqueue:list(),
       binary:match(element(4, amqqueue:get_name(Q)), <<"herald_t_">>) =/= nomatch], ok.' >/dev/null
}
drop_test_queues
status=0
HERALD_BENCH_KEEP_QUEUES=1 "${CARGO_TARGET_DIR:-target}/release/herald-bench" "$@" || status=$?
drop_test_queues
exit "$status"
