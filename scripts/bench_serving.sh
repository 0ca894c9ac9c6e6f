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
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# PostgreSQL as a production server is configured: BENCH_SHARED_BUFFERS (default 4GB, a quarter
# of this machine's memory) of shared buffers instead of the packaged 128MB, which holds a
# 10,000-person city but not a 1,000,000-person one (3.4 GB), whose every request then reads
# about a thousand pages through the kernel. Changing it restarts the local cluster once (and
# drops its other connections); it stays set (ALTER SYSTEM RESET shared_buffers undoes it).
WANT=${BENCH_SHARED_BUFFERS:-4GB}
HAVE=$(psql -h 127.0.0.1 -U postgres -Atc "SHOW shared_buffers")
if [ "$HAVE" != "$WANT" ]; then
    echo "== PostgreSQL shared_buffers $HAVE -> $WANT (restarts the local cluster)"
    psql -h 127.0.0.1 -U postgres -qc "ALTER SYSTEM SET shared_buffers = '$WANT'"
    PG_VERSION=$(pg_lsclusters -h | awk '$3 == 5432 {print $1; exit}')
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main restart
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not come back after the restart" >&2; exit 1; }
    HAVE=$(psql -h 127.0.0.1 -U postgres -Atc "SHOW shared_buffers")
    [ "$HAVE" = "$WANT" ] || { echo "shared_buffers is $HAVE after the restart, not $WANT" >&2; exit 1; }
fi
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
