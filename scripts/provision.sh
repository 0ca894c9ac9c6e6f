#!/usr/bin/env bash
# Make this machine able to run socialmatch: PostgreSQL + PostGIS, Redis, GDAL, a virtualenv.
# Installs only what is missing and starts only what is stopped, so it is safe to re-run.
# Needs root (or sudo) only when something must be installed or started.
set -euo pipefail

cd "$(dirname "$0")/.."
DB_NAME=${DB_NAME:-socialmatch}
PG_HOST=127.0.0.1
PG_PORT=5432
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { as_root su postgres -s /bin/sh -c "$*"; }

APT_UPDATED=
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. System packages: PostgreSQL server, Redis, GDAL/GEOS for GeoDjango, Python venv support, C++.
missing=()
command -v pg_ctlcluster >/dev/null || missing+=(postgresql postgresql-contrib)
command -v redis-server >/dev/null || missing+=(redis-server)
ldconfig -p | grep -q 'libgdal\.so' || missing+=(gdal-bin)
ldconfig -p | grep -q 'libgeos_c\.so' || missing+=(libgeos-c1v5)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# A C++ compiler for the towers' attention kernel (matching/ml/kernels.cpp, built on first use;
# without one the towers run on PyTorch's operators, correct but slower).
command -v c++ >/dev/null || command -v g++ >/dev/null || missing+=(g++)
# Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; its own download fails).
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

# 2. PostgreSQL: the cluster on port 5432 running, PostGIS for its major version installed.
PG_VERSION=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p {print $1; exit}')
if [ -z "$PG_VERSION" ]; then
  PG_VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  log "creating PostgreSQL $PG_VERSION cluster on port $PG_PORT"
  as_root pg_createcluster "$PG_VERSION" main --port "$PG_PORT"
fi
if [ ! -f "/usr/share/postgresql/$PG_VERSION/extension/postgis.control" ]; then
  apt_install "postgresql-$PG_VERSION-postgis-3"
fi
if ! pg_lsclusters -h | awk -v p="$PG_PORT" '$3 == p && $4 == "online" {found=1} END {exit !found}'; then
  log "starting PostgreSQL $PG_VERSION"
  as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
fi
for _ in $(seq 1 30); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 1; done

# The app connects over TCP as postgres/postgres (development credentials). A fresh Debian
# cluster asks TCP clients for a password, so give the role that password when it is needed.
if ! PGPASSWORD=postgres psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
  log "setting the development password of the postgres role"
  as_postgres "psql -p $PG_PORT -qc \"ALTER ROLE postgres PASSWORD 'postgres'\""
fi
export PGPASSWORD=postgres
psql_admin() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
if [ "$(psql_admin -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
  log "creating database $DB_NAME"
  psql_admin -d postgres -c "CREATE DATABASE \"$DB_NAME\""
fi
psql_admin -d "$DB_NAME" -c 'CREATE EXTENSION IF NOT EXISTS postgis'
# The test database is created by the test runner from template1: PostGIS there saves it a step.
psql_admin -d template1 -c 'CREATE EXTENSION IF NOT EXISTS postgis'

# 3. Redis on 6379.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/socialmatch.log
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# 4. The virtualenv, reinstalled only when requirements.txt changes.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing Python requirements"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
log "provisioned: PostgreSQL $PG_VERSION + PostGIS, Redis, $VENV"
