#!/usr/bin/env bash
# A private, throw-away PostgreSQL cluster for the tests (Debian's
# PostgreSQL 15 binaries; never the system cluster):
#   scripts/pg-cluster.sh start DIR   initdb DIR/data, start it on a free
#                                     127.0.0.1 port, create role and database
#                                     `palisade` (may create databases), and
#                                     write DIR/env (PALISADE_TEST_PG=URL,
#                                     PALISADE_TEST_PG_DIR=DIR) and print it.
#   scripts/pg-cluster.sh restart DIR  fast restart
#   scripts/pg-cluster.sh down DIR    stop the server (fast), keep the data
#   scripts/pg-cluster.sh up DIR      start it again (the fault tests use
#                                     down/up to take the database away)
#   scripts/pg-cluster.sh stop DIR    stop it and delete DIR.
# As root the server runs as the `postgres` user (initdb refuses root).
set -euo pipefail
cmd=${1:?usage: pg-cluster.sh start|stop|restart DIR}
dir=${2:?usage: pg-cluster.sh start|stop|restart DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || bin=$(dirname "$(command -v initdb)")
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1
    echo "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=64MB" >"$dir/pg_opts"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$(cat "$dir/pg_opts")" start >/dev/null
    as_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE palisade LOGIN PASSWORD 'palisade' CREATEDB" \
      -c "CREATE DATABASE palisade OWNER palisade" >/dev/null
    printf 'PALISADE_TEST_PG=postgres://palisade:palisade@127.0.0.1:%s/palisade\nPALISADE_TEST_PG_DIR=%s\n' \
      "$port" "$dir" >"$dir/env"
    cat "$dir/env"
    ;;
  restart)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 restart >/dev/null
    ;;
  down)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    ;;
  up)
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$(cat "$dir/pg_opts")" start >/dev/null
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
