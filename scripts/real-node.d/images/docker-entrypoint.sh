#!/bin/bash
# Entrypoint of the real test node's PostgreSQL image, written to the official postgres image's
# documented contract (hub.docker.com/_/postgres, "Environment Variables" and "Initialization
# scripts"): `docker-entrypoint.sh [postgres] [-c name=value ...]`.
# - arguments starting with "-" are the server's: `postgres` is put in front of them;
# - as root, the data folder is given to postgres and the script runs again as postgres;
# - an empty $PGDATA is initialised: initdb with POSTGRES_USER (default postgres) and
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_INITDB_ARGS,
#   remote connections allowed with scram-sha-256 (or POSTGRES_HOST_AUTH_METHOD), POSTGRES_DB
#   created, then *.sh and *.sql in /docker-entrypoint-initdb.d run against a server that
#   listens on the socket only;
# - then postgres is exec'd with listen_addresses='*'.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
  exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

if [ "$(id -u)" = '0' ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != 'trust' ]; then
    echo 'error: database is uninitialized and superuser password is not specified.' >&2
    echo '  Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust).' >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" 2>/dev/null || true
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of arguments, as documented
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-}
  rm -f "$pwfile"
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p 5432" start
  export PGUSER="$POSTGRES_USER" PGHOST=/var/run/postgresql PGPORT=5432
  if [ "$POSTGRES_DB" != 'postgres' ]; then
    psql -v ON_ERROR_STOP=1 --dbname postgres --set db="$POSTGRES_DB" \
      -c 'CREATE DATABASE :"db"'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "running $f"; . "$f" ;;
      *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --dbname "$POSTGRES_DB" -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGUSER PGHOST PGPORT
  echo 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@" -c listen_addresses='*'
