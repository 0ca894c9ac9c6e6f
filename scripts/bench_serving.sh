#!/usr/bin/env bash
# The serving benchmark of docs/BENCHMARKS.md: one throwaway database per size, kept between runs
# (filling the 1,000,000-person one takes about 3 minutes). BENCH_SIZES overrides the sizes.
# The model is trained on the smallest city and imported into the larger ones (see
# bench_serving's docstring): training the ranking head on a million people takes hours here.
set -euo pipefail
cd "$(dirname "$0")/.."
export PGPASSWORD=postgres DEBUG=false
export REDIS_URL=redis://127.0.0.1:6379/7 CELERY_BROKER_URL=redis://127.0.0.1:6379/8
SIZES=${BENCH_SIZES:-10000 100000 1000000}
SMALLEST=$(echo $SIZES | tr ' ' '\n' | sort -n | head -1)
mkdir -p var/bench
for N in $SIZES; do
    DB=socialmatch_serving_$N
    export DATABASE_URL=postgis://postgres:postgres@127.0.0.1:5432/$DB
    export MEDIA_ROOT=$PWD/var/bench/$N/media CACHE_KEY_PREFIX=bench-$N
    psql -h 127.0.0.1 -U postgres -lqt | cut -d'|' -f1 | grep -qw "$DB" || createdb -h 127.0.0.1 -U postgres "$DB"
    .venv/bin/python manage.py migrate --noinput -v 0
    MODEL=()
    if [ "$N" != "$SMALLEST" ]; then MODEL=(--model-from "var/bench/model-$SMALLEST.json"); fi
    echo "== $N users: load $(cut -d' ' -f1-3 /proc/loadavg)"
    .venv/bin/python manage.py bench_serving --users "$N" "${MODEL[@]}" --json "var/bench_serving-$N.json"
done
