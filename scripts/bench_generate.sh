#!/usr/bin/env bash
# The generate_city benchmark of docs/BENCHMARKS.md, in a throwaway database.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=socialmatch_bench
export PGPASSWORD=postgres
export DATABASE_URL=postgis://postgres:postgres@127.0.0.1:5432/$DB
mkdir -p var
dropdb -h 127.0.0.1 -U postgres --if-exists "$DB"
createdb -h 127.0.0.1 -U postgres "$DB"
trap 'dropdb -h 127.0.0.1 -U postgres --if-exists "$DB"' EXIT
.venv/bin/python manage.py migrate --noinput -v 0
.venv/bin/python manage.py bench_generate_city --users 10000 100000 1000000 --repeat 3 \
    --json var/bench_generate_city.json
