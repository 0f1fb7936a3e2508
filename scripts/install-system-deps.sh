#!/usr/bin/env bash
# Install what restorekit's tests and demo need from Debian when it is missing:
# PostgreSQL 15 server binaries (pgbench included), pgBackRest, and a system Python 3.11 with venv.
set -euo pipefail

need=()
pg_bin=""
for candidate in "${RESTOREKIT_PG_BIN:-}" /usr/lib/postgresql/15/bin; do
  if [ -n "$candidate" ] && [ -x "$candidate/initdb" ]; then pg_bin="$candidate"; break; fi
done
[ -n "$pg_bin" ] || need+=(postgresql-15)
# pgbench (the load tests): Debian ships it in postgresql-15, /usr/bin/pgbench is
# postgresql-client-common's wrapper around it.
if [ -n "$pg_bin" ] && [ ! -x "$pg_bin/pgbench" ] && ! command -v pgbench >/dev/null 2>&1; then
  need+=(postgresql-15)
fi
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
[ -x /usr/bin/python3.11 ] || need+=(python3.11)
/usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3.11-venv)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing from Debian: ${need[*]}"
# Do not let the postgresql package create and start a default cluster: restorekit starts its own.
mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
