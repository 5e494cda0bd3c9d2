#!/bin/sh
# Entrypoint of the local stand-in for the official `postgres` image (scripts/compose-images.sh
# bakes it in as /usr/local/bin/docker-entrypoint.sh). It implements the part of the official
# entrypoint that docker-compose.yml relies on, so the same service definition runs on either:
#
#   on the first start (no PG_VERSION in PGDATA): initdb with POSTGRES_USER as superuser and
#   the password from POSTGRES_PASSWORD_FILE, scram-sha-256 for every TCP client, trust on the
#   container's own socket; creates POSTGRES_DB; listens on all addresses. Then runs the command.
#
# Runs as the postgres user (compose sets `user: postgres`).
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  if [ -z "${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -s "$POSTGRES_PASSWORD_FILE" ]; then
    echo "docker-entrypoint.sh: POSTGRES_PASSWORD_FILE must name a non-empty file" >&2
    exit 1
  fi
  echo "docker-entrypoint.sh: initialising $PGDATA (superuser $user, database $db)"
  initdb --username="$user" --pwfile="$POSTGRES_PASSWORD_FILE" --encoding=UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  # initdb only lets 127.0.0.1 and ::1 in; the replicas connect over the compose network.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    # A server on a private socket only, so nobody connects before the database exists.
    pg_ctl -s -w -o "-c listen_addresses='' -c unix_socket_directories=/tmp" start
    createdb -h /tmp -U "$user" "$db"
    pg_ctl -s -w -m fast stop
  fi
fi

exec "$@"
