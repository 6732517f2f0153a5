#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ are installed, running and reachable on
# 127.0.0.1, and that Postgres has a `herald` role (password `herald`, may
# create databases) for the demo and the tests. Installs with apt when a
# service is missing (needs root). Safe to run again: it only does what is
# missing.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 120); do
    if port_open "$port"; then return 0; fi
    sleep 1
  done
  log "$name did not start listening on port $port"
  return 1
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  apt_install postgresql postgresql-client
fi
if ! port_open 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432 PostgreSQL
fi
# The socket's peer authentication lets the postgres OS user in on any stock
# install; from there, make sure the herald role exists.
as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald') THEN
    CREATE ROLE herald LOGIN CREATEDB PASSWORD 'herald';
  END IF;
END
$$;
SQL
log "PostgreSQL ready (role herald)"

# --- RabbitMQ ---------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  apt_install rabbitmq-server
fi
if ! port_open 5672; then
  log "starting RabbitMQ"
  # Every quorum queue with messages keeps files open: a thousand numbers'
  # send queues need far more than the usual 1024 descriptors, and a broker
  # out of them silently stops accepting connections.
  # Debian's wrapper starts it through `su`, which resets the limit to
  # 1024: raise it inside.
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && id rabbitmq >/dev/null 2>&1; then
    as_root su rabbitmq -s /bin/sh -c 'cd /var/lib/rabbitmq &&
      { ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; } &&
      exec /usr/lib/rabbitmq/bin/rabbitmq-server -detached'
  else
    as_root rabbitmq-server -detached
  fi
  wait_port 5672 RabbitMQ
  as_root rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi
# A broker started elsewhere may have the low limit: say so (the tests need
# little; `./deploy/bench.sh scheduler` needs a thousand queues' worth).
fd_limit=$(as_root rabbitmqctl status 2>/dev/null |
  awk '/File Descriptors/ { f = 1 } f && /limit:/ { gsub(/[^0-9]/, "", $NF); print $NF; exit }')
if [ -n "$fd_limit" ] && [ "$fd_limit" -lt 4096 ]; then
  log "warning: RabbitMQ has only $fd_limit file descriptors; for the benchmarks restart it" \
    "with 'rabbitmqctl stop && $0'"
fi
log "RabbitMQ ready"
