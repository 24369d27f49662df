#!/usr/bin/env bash
# Install the system programs the tests and benchmarks talk to, when missing.
# Debian package names; a no-op when everything is already there.
set -euo pipefail
need=()
check() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
check strace strace
check perf linux-perf
check fio fio
check redis-server redis-server
check wrk wrk
check openssl openssl
# PostgreSQL's server for the asyncpg tests: Debian keeps initdb/pg_ctl in
# /usr/lib/postgresql/<version>/bin, off PATH.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || check initdb postgresql
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${need[*]} (run as root, or install them)" >&2
  exit 0
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${need[@]}" >/dev/null
