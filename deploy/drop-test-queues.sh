#!/usr/bin/env bash
# Deletes the queues tests and benchmarks leave behind (names starting
# `herald_t_`) in one call inside the broker: one AMQP or `rabbitmqctl
# delete_queue` per quorum queue takes RabbitMQ about a second, and the
# scheduler benchmark leaves a thousand. A broker holding them is slow
# enough to fail tests. Needs to run where `rabbitmqctl` reaches the broker.
set -euo pipefail
rabbitmqctl -q eval '[rabbit_amqqueue:delete(Q, false, false, <<"herald">>)
  || Q <- rabbit_amqqueue:list(),
     binary:match(element(4, amqqueue:get_name(Q)), <<"herald_t_">>) =/= nomatch], ok.' >/dev/null
