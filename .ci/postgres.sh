#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1:${PGPORT:-55432} (trust
# auth, data under /tmp) and prints the admin URL the PostgreSQL e2e test takes.
# The server also speaks TLS, with a certificate for the name `localhost`
# signed by a throwaway CA whose certificate is
# /tmp/themodel-pg-$PGPORT-tls/ca.crt (the TLS test checks verify-full against it).
# Installs Debian's server package (and openssl) first if this machine has none.
#
# `bash .ci/postgres.sh ca` prints the path of that CA certificate instead.
set -euo pipefail
port="${PGPORT:-55432}"
tls=/tmp/themodel-pg-$port-tls
if [ "${1:-}" = ca ]; then
  echo "$tls/ca.crt"
  exit 0
fi
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
if ! command -v openssl >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq openssl >&2
fi
id postgres >/dev/null 2>&1 || useradd --system --create-home postgres
data=/tmp/themodel-pg-$port
if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
  rm -rf "$data" "$tls" && mkdir -p "$data" "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=themodel test PostgreSQL CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 7 \
    -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
  chown -R postgres "$data" "$tls" && chmod 600 "$tls/server.key" && chmod 644 "$tls/ca.crt"
  su postgres -s /bin/sh -c "'$bindir/initdb' -D '$data' -U postgres --auth=trust" >/dev/null
  su postgres -s /bin/sh -c "'$bindir/pg_ctl' -s -D '$data' -l '$data/log' -o \"-h 127.0.0.1 -p $port -k /tmp -c fsync=off -c max_connections=300 -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key\" -w start" >&2
fi
echo "postgres://postgres@127.0.0.1:$port/postgres"
