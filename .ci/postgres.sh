#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1:${PGPORT:-55432} (trust
# auth, data under /tmp) and prints the admin URL the PostgreSQL e2e test takes.
# Installs Debian's server package first if this machine has none.
set -euo pipefail
port="${PGPORT:-55432}"
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
id postgres >/dev/null 2>&1 || useradd --system --create-home postgres
data=/tmp/themodel-pg-$port
if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
  rm -rf "$data" && mkdir -p "$data" && chown postgres "$data"
  su postgres -s /bin/sh -c "'$bindir/initdb' -D '$data' -U postgres --auth=trust" >/dev/null
  su postgres -s /bin/sh -c "'$bindir/pg_ctl' -s -D '$data' -l '$data/log' -o \"-h 127.0.0.1 -p $port -k /tmp -c fsync=off -c max_connections=300\" -w start" >&2
fi
echo "postgres://postgres@127.0.0.1:$port/postgres"
